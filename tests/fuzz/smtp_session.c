/* smtp_session — the ESMTP state machine, bytes in, replies out.
 *
 * Input: a switches byte, a chunking seed byte, then what a client sends
 * (after STARTTLS: the plaintext the TLS layer would hand on).  The bytes
 * reach smtp_session_input() in chunks whose sizes come from the seed, so
 * one dialogue is tried at many splits (a line, a CRLF, a "." cut in two).
 *
 * Switches (first byte):
 *   0x01 bare_lf = reject        0x02 plaintext AUTH allowed
 *   0x04 STARTTLS offered        0x08 implicit TLS (the session starts in TLS)
 *   0x10 AUTH and submit answered later, at the next chunk (as the server's
 *        thread pool does), not from inside the call
 *   0x20 small limits (size, line, header, recipients, buffered bytes)
 *   0x40 storage low             0x80 submit answered 451, not 250
 *
 * Checked: every write is whole reply lines "NNN[ -]text\r\n" of at most
 * 1024 bytes and nothing is written after the close; a submitted message
 * starts with our Received: header, has CRLF line ends only, keeps the size
 * and line limits and has 1..max_rcpt recipients; the bytes counted in
 * conf->buffered come back to 0 once the session is freed. */
#include "fuzz.h"

#include <stdatomic.h>

#include "ingest/rules.h"
#include "ingest/smtp_session.h"
#include "strbuf.h"

struct fuzz_conn {
    struct smtp_session *s;
    const struct smtp_session_conf *conf;
    int deferred;                    /* 0x10 */
    int fail_submit;                 /* 0x80 */
    int closed;
    struct smtp_message *pending_msg;
    int pending_auth;
    char auth_user[256];
    int auth_ok;
};

static struct rules *fuzz_rules;

static void check_reply_lines(const char *buf, size_t len)
{
    FUZZ_CHECK(len >= 6 && buf[len - 2] == '\r' && buf[len - 1] == '\n');
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(buf + i, '\n', len - i);
        FUZZ_CHECK(nl != NULL);
        size_t n = (size_t)(nl - (buf + i)) + 1;   /* with CRLF */
        const char *l = buf + i;
        FUZZ_CHECK(n >= 6 && n <= 1024 && l[n - 2] == '\r');
        FUZZ_CHECK(l[0] >= '2' && l[0] <= '5' && l[1] >= '0' && l[1] <= '9' && l[2] >= '0' && l[2] <= '9');
        FUZZ_CHECK(l[3] == ' ' || l[3] == '-');
        FUZZ_CHECK(memchr(l, '\r', n - 2) == NULL);
        i += n;
    }
}

static void io_write(void *o, const char *buf, size_t len)
{
    struct fuzz_conn *c = o;
    FUZZ_CHECK(!c->closed);
    check_reply_lines(buf, len);
}

static void io_starttls(void *o)
{
}

static void io_close(void *o)
{
    struct fuzz_conn *c = o;
    FUZZ_CHECK(!c->closed);
    c->closed = 1;
}

static void answer_auth(struct fuzz_conn *c)
{
    c->pending_auth = 0;
    smtp_session_auth_done(c->s, c->auth_user, c->auth_ok);
}

static void io_auth(void *o, const char *user, const char *pass)
{
    struct fuzz_conn *c = o;
    FUZZ_CHECK(!c->pending_auth && !c->pending_msg);
    snprintf(c->auth_user, sizeof(c->auth_user), "%s", user);
    /* "device"/"secret" is good, "busy" is refused for now (454). */
    c->auth_ok = strcmp(user, "busy") == 0 ? -1 : strcmp(user, "device") == 0 && strcmp(pass, "secret") == 0;
    c->pending_auth = 1;
    if (!c->deferred)
        answer_auth(c);
}

/* A message as the session must hand it over (smtp_session.h). */
static void check_message(const struct fuzz_conn *c, const struct smtp_message *m)
{
    FUZZ_CHECK(m->n_rcpts >= 1 && m->n_rcpts <= c->conf->max_rcpt);
    FUZZ_CHECK(m->received_len > 15 && m->data.len >= m->received_len);
    FUZZ_CHECK(memcmp(m->data.data, "Received: from ", 15) == 0);
    FUZZ_CHECK(m->data.len - m->received_len <= c->conf->max_size);
    const char *p = m->data.data;
    size_t line = 0;
    for (size_t i = 0; i < m->data.len; i++) {
        if (p[i] == '\r')
            FUZZ_CHECK(i + 1 < m->data.len && p[i + 1] == '\n');
        if (p[i] == '\n') {
            FUZZ_CHECK(i > 0 && p[i - 1] == '\r');
            /* a stored line is at most max_line with its CRLF */
            FUZZ_CHECK(i < m->received_len || line + 1 <= c->conf->max_line);
            line = 0;
        } else {
            line++;
        }
    }
    FUZZ_CHECK(m->data.len == m->received_len || p[m->data.len - 1] == '\n');
}

static void answer_submit(struct fuzz_conn *c)
{
    char text[128];
    struct smtp_message *m = c->pending_msg;
    c->pending_msg = NULL;
    if (c->fail_submit) {
        smtp_session_submit_done(c->s, 451, "4.3.0 Error: queue file write error");
    } else {
        snprintf(text, sizeof(text), "2.0.0 Ok: queued as %s", m->id);
        smtp_session_submit_done(c->s, 250, text);
    }
}

static void io_submit(void *o, struct smtp_message *m)
{
    struct fuzz_conn *c = o;
    FUZZ_CHECK(!c->pending_auth && !c->pending_msg);
    check_message(c, m);
    c->pending_msg = m;
    if (!c->deferred)
        answer_submit(c);
}

static void io_flow(void *o, int reading)
{
}

/* What the transport does when its pool answers: at most one is pending. */
static void answer_pending(struct fuzz_conn *c)
{
    if (c->pending_auth)
        answer_auth(c);
    else if (c->pending_msg)
        answer_submit(c);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    fuzz_init();
    fuzz_rules = rules_new();
    const struct rule_spec specs[] = {
        { .name = "blocked", .recipients = "blocked@iot.localhost", .action = "reject" },
        { .name = "capture", .recipients = "alerts@iot.localhost, *@dev.iot.localhost", .action = "capture",
          .allowed_senders = "device:*@example.com" },
        { .name = "bounces", .recipients = "bounce+*@iot.localhost", .action = "feedback" },
        { .name = "unsub", .recipients = "unsubscribe+*@iot.localhost", .action = "unsubscribe" },
        { .name = "secure", .recipients = "secure@iot.localhost", .action = "capture", .require_tls = 1,
          .require_auth = 1 },
        { .name = "small", .recipients = "small@iot.localhost", .action = "capture", .max_size = 100,
          .max_recipients = 1 },
    };
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++)
        if (rules_add(fuzz_rules, &specs[i], err, sizeof(err)) != 0)
            panic("rules_add: %s", err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned sw = fuzz_take_byte(&data, &size);
    uint32_t rnd = fuzz_take_byte(&data, &size) * 2654435761u + 1;
    int small = (sw & 0x20) != 0;
    long buffered = 0;
    atomic_int storage_low = (sw & 0x40) != 0;
    struct smtp_session_conf conf = {
        .hostname = "mx.fuzz.test",
        .max_size = small ? 512 : 64 * 1024,
        .max_line = small ? 80 : 1000,
        .max_header = small ? 128 : 16 * 1024,
        .max_rcpt = small ? 2 : 50,
        .bare_lf_reject = (sw & 0x01) != 0,
        .allow_plaintext_auth = (sw & 0x02) != 0,
        .tls_available = (sw & 0x04) != 0,
        .max_errors = small ? 3 : 10,
        .max_junk = small ? 2 : 0,
        .rules = fuzz_rules,
        .buffered = &buffered,
        .max_buffered = small ? 300 : 0,
        .storage_low = &storage_low,
    };
    struct fuzz_conn c = { .conf = &conf, .deferred = (sw & 0x10) != 0, .fail_submit = (sw & 0x80) != 0 };
    struct smtp_session_io io = { &c, io_write, io_starttls, io_close, io_auth, io_submit, io_flow };
    c.s = smtp_session_new(&conf, &io, "192.0.2.1", (sw & 0x08) != 0);
    smtp_session_start(c.s);
    size_t off = 0;
    while (off < size && !c.closed) {
        answer_pending(&c);
        rnd = rnd * 1103515245u + 12345u;
        /* mostly short chunks, some single bytes, now and then the rest */
        size_t n = (rnd >> 16) % 8 == 0 ? 1 : (rnd >> 16) % 8 == 1 ? size - off : 1 + (rnd >> 19) % 64;
        if (n > size - off)
            n = size - off;
        smtp_session_input(c.s, (const char *)data + off, n);
        off += n;
    }
    /* Each answer lets the session read on, which may start the next one. */
    while (c.pending_auth || c.pending_msg)
        answer_pending(&c);
    smtp_session_shutdown(c.s);
    smtp_session_free(c.s);
    FUZZ_CHECK(buffered == 0);
    return 0;
}
