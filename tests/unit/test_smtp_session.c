/* smtp_session driven by a test transport: scripts of input chunks and the
 * reply codes expected, messages handed to submit, smuggling endings fed
 * whole and byte by byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ingest/rules.h"
#include "ingest/smtp_session.h"
#include "log.h"
#include "strbuf.h"

struct tt {
    struct strbuf out;
    int closed, starttls, auths;
    int n_msgs;
    char from[8][ADDRESS_BUFSZ];
    struct strbuf body[8];       /* message data without Received: */
    size_t n_rcpts[8];
    struct smtp_session *s;
};

static void tt_write(void *o, const char *buf, size_t len)
{
    struct tt *t = o;
    strbuf_append_n(&t->out, buf, len);
}
static void tt_starttls(void *o) { ((struct tt *)o)->starttls++; }
static void tt_close(void *o) { ((struct tt *)o)->closed = 1; }
static void tt_auth(void *o, const char *user, const char *pass)
{
    struct tt *t = o;
    t->auths++;
    smtp_session_auth_done(t->s, user, strcmp(user, "device") == 0 && strcmp(pass, "secret") == 0);
}
static char last_received[1024];

static void tt_submit(void *o, struct smtp_message *m)
{
    snprintf(last_received, sizeof(last_received), "%.*s", (int)m->received_len, m->data.data);
    struct tt *t = o;
    int i = t->n_msgs++;
    assert_true(i < 8);
    snprintf(t->from[i], sizeof(t->from[i]), "%s", m->mail_from);
    strbuf_init(&t->body[i]);
    strbuf_append_n(&t->body[i], m->data.data + m->received_len, m->data.len - m->received_len);
    t->n_rcpts[i] = m->n_rcpts;
    assert_memory_equal(m->data.data, "Received: from ", 15);
    char text[128];
    snprintf(text, sizeof(text), "2.0.0 Ok: queued as %s", m->id);
    smtp_session_submit_done(t->s, 250, text);
}

static struct rules *test_rules(void)
{
    char err[256];
    struct rules *r = rules_new();
    const struct rule_spec specs[] = {
        { .name = "blocked", .recipients = "blocked@iot.localhost", .action = "reject" },
        { .name = "capture", .recipients = "alerts@iot.localhost, other@iot.localhost", .action = "capture" },
        { .name = "bounces", .recipients = "bounce+*@iot.localhost", .action = "feedback" },
        { .name = "secure", .recipients = "secure@iot.localhost", .action = "capture", .require_tls = 1 },
        { .name = "small", .recipients = "small@iot.localhost", .action = "capture", .max_size = 100 },
    };
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++)
        assert_int_equal(rules_add(r, &specs[i], err, sizeof(err)), 0);
    return r;
}

static struct smtp_session_conf base_conf(const struct rules *r)
{
    struct smtp_session_conf c = {
        .hostname = "mx.test", .max_size = 4096, .max_line = 1000, .max_header = 512,
        .max_rcpt = 3, .bare_lf_reject = 0, .allow_plaintext_auth = 0, .tls_available = 1,
        .max_errors = 5, .rules = r,
    };
    return c;
}

static void tt_free(struct tt *t)
{
    smtp_session_free(t->s);
    strbuf_free(&t->out);
    for (int i = 0; i < t->n_msgs; i++)
        strbuf_free(&t->body[i]);
}

/* Runs chunks through a fresh session; byte_by_byte feeds one byte a call. */
static void run(struct tt *t, const struct smtp_session_conf *c, int tls, const char *const *chunks,
                int byte_by_byte)
{
    memset(t, 0, sizeof(*t));
    strbuf_init(&t->out);
    struct smtp_session_io io = { t, tt_write, tt_starttls, tt_close, tt_auth, tt_submit, NULL };
    t->s = smtp_session_new(c, &io, "192.0.2.1", tls);
    smtp_session_start(t->s);
    for (size_t i = 0; chunks[i]; i++) {
        size_t n = strlen(chunks[i]);
        /* After STARTTLS the bytes would go to the TLS layer, not here. */
        if (byte_by_byte)
            for (size_t k = 0; k < n && !t->starttls; k++)
                smtp_session_input(t->s, chunks[i] + k, 1);
        else
            smtp_session_input(t->s, chunks[i], n);
    }
}

/* Final reply codes in order, e.g. "220 250 250 250 354 250 221". Also checks
 * that every reply except the greeting, EHLO, 354 and 334 carries an
 * enhanced status code. */
static void codes(const struct tt *t, char *out, size_t outlen)
{
    size_t n = 0;
    out[0] = 0;
    const char *p = t->out.len ? t->out.data : "";
    int first = 1, in_ehlo = 0;
    while (*p) {
        const char *e = strstr(p, "\r\n");
        assert_non_null(e);
        assert_true(e - p >= 4);
        if (p[3] == '-') {
            in_ehlo = 1;
        } else {
            int code = atoi(p);
            if (!first && !in_ehlo && code != 354 && code != 334) {
                int a, b, c2;
                char sep;
                if (sscanf(p + 4, "%1d.%d.%d%c", &a, &b, &c2, &sep) != 4 || sep != ' ' || a != code / 100)
                    fail_msg("reply without enhanced status code: %.*s", (int)(e - p), p);
            }
            n += (size_t)snprintf(out + n, outlen - n, "%s%.3s", n ? " " : "", p);
            first = 0;
            in_ehlo = 0;
        }
        p = e + 2;
    }
}

#define EHLO "EHLO client.test\r\n"
#define ENV "MAIL FROM:<dev@example.com>\r\nRCPT TO:<alerts@iot.localhost>\r\nDATA\r\n"

struct script_case {
    const char *name;
    const char *chunks[8];
    const char *codes;         /* expected final reply codes */
    int msgs;                  /* messages submitted */
    const char *body;          /* first message's data (NULL = don't check) */
    int bare_lf_reject;
    int tls;
    int starttls;              /* io->starttls calls */
    unsigned max_junk;         /* 0 = no limit */
};

static const struct script_case cases[] = {
    { "basic", { EHLO, "MAIL FROM:<dev@example.com>\r\n", "RCPT TO:<alerts@iot.localhost>\r\n", "DATA\r\n",
                 "Subject: x\r\n\r\nhello\r\n.\r\n", "QUIT\r\n" },
      "220 250 250 250 354 250 221", 1, "Subject: x\r\n\r\nhello\r\n" },
    { "pipelined", { EHLO ENV "Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n" },
      "220 250 250 250 354 250 221", 1, "Subject: x\r\n\r\nhello\r\n" },
    { "two messages", { EHLO ENV "a\r\n.\r\n" ENV "b\r\n.\r\n" },
      "220 250 250 250 354 250 250 250 354 250", 2, "a\r\n" },
    { "dot unstuffing", { EHLO ENV "..x\r\n...\r\n.\r\n" }, "220 250 250 250 354 250", 1, ".x\r\n..\r\n" },
    { "empty message", { EHLO ENV ".\r\n" }, "220 250 250 250 354 250", 1, "" },
    { "bare LF normalized", { EHLO ENV "a\nb\r\n.\r\n" }, "220 250 250 250 354 250", 1, "a\r\nb\r\n" },
    { "bare LF rejected", { EHLO ENV "a\nb\r\n.\r\n" }, "220 250 250 250 354 550", 0, NULL, 1 },
    { "bare CR rejected", { EHLO ENV "a\rb\r\n.\r\n" }, "220 250 250 250 354 550", 0 },
    { "SIZE too big at MAIL", { EHLO "MAIL FROM:<a@example.com> SIZE=5000\r\n" }, "220 250 552", 0 },
    { "SIZE ok", { EHLO "MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME\r\n" }, "220 250 250", 0 },
    { "unknown parameter", { EHLO "MAIL FROM:<a@example.com> RET=FULL\r\n" }, "220 250 555", 0 },
    { "no relay", { EHLO "MAIL FROM:<a@example.com>\r\nRCPT TO:<x@elsewhere.org>\r\n" }, "220 250 250 550", 0 },
    { "reject rule", { EHLO "MAIL FROM:<a@example.com>\r\nRCPT TO:<blocked@iot.localhost>\r\n" },
      "220 250 250 550", 0 },
    { "require_tls", { EHLO "MAIL FROM:<a@example.com>\r\nRCPT TO:<secure@iot.localhost>\r\n" },
      "220 250 250 530", 0 },
    { "require_tls under tls", { EHLO "MAIL FROM:<a@example.com>\r\nRCPT TO:<secure@iot.localhost>\r\n" },
      "220 250 250 250", 0, NULL, 0, 1 },
    { "bad rcpt syntax", { EHLO "MAIL FROM:<a@example.com>\r\nRCPT TO:<not an address>\r\n" },
      "220 250 250 501", 0 },
    { "null sender", { EHLO "MAIL FROM:<>\r\nRCPT TO:<bounce+x@iot.localhost>\r\nDATA\r\nz\r\n.\r\n" },
      "220 250 250 250 354 250", 1, "z\r\n" },
    { "too many recipients", { EHLO "MAIL FROM:<a@example.com>\r\nRCPT TO:<alerts@iot.localhost>\r\n"
                               "RCPT TO:<other@iot.localhost>\r\nRCPT TO:<bounce+1@iot.localhost>\r\n"
                               "RCPT TO:<bounce+2@iot.localhost>\r\n" },
      "220 250 250 250 250 250 452", 0 },
    { "rule max_size", { EHLO "MAIL FROM:<a@example.com>\r\nRCPT TO:<small@iot.localhost>\r\nDATA\r\n",
                         "0123456789012345678901234567890123456789012345678901234567890123456789"
                         "0123456789012345678901234567890123456789\r\n.\r\n" },
      "220 250 250 250 354 552", 0 },
    { "order: MAIL first", { EHLO "RCPT TO:<alerts@iot.localhost>\r\nDATA\r\n" }, "220 250 503 503", 0 },
    { "HELO first", { "MAIL FROM:<a@example.com>\r\n" }, "220 503", 0 },
    { "DATA without rcpt", { EHLO "MAIL FROM:<a@example.com>\r\nDATA\r\n" }, "220 250 250 554", 0 },
    { "RSET NOOP VRFY HELP", { EHLO "MAIL FROM:<a@example.com>\r\nRSET\r\nNOOP\r\nVRFY root\r\nHELP\r\n"
                               "RCPT TO:<alerts@iot.localhost>\r\n" },
      "220 250 250 250 250 252 214 503", 0 },
    { "unknown command", { "FOO\r\n" }, "220 500", 0 },
    { "too many errors", { "A\r\nB\r\nC\r\nD\r\nE\r\nNOOP\r\n" }, "220 500 500 500 500 500 421", 0 },
    { "STARTTLS drops pipelined plaintext", { EHLO "STARTTLS\r\nRSET\r\n" }, "220 250 220", 0, NULL, 0, 0, 1 },
    { "STARTTLS twice", { EHLO "STARTTLS\r\n" }, "220 250 503", 0, NULL, 0, 1, 0 },
    { "AUTH before TLS", { EHLO "AUTH PLAIN AGRldmljZQBzZWNyZXQ=\r\n" }, "220 250 530", 0 },
    { "AUTH PLAIN", { EHLO "AUTH PLAIN AGRldmljZQBzZWNyZXQ=\r\n" }, "220 250 235", 0, NULL, 0, 1 },
    { "AUTH PLAIN wrong", { EHLO "AUTH PLAIN AGRldmljZQB3cm9uZw==\r\n" }, "220 250 535", 0, NULL, 0, 1 },
    { "AUTH PLAIN two steps", { EHLO "AUTH PLAIN\r\n", "AGRldmljZQBzZWNyZXQ=\r\n" }, "220 250 334 235", 0,
      NULL, 0, 1 },
    { "AUTH LOGIN", { EHLO "AUTH LOGIN\r\n", "ZGV2aWNl\r\n", "c2VjcmV0\r\n" }, "220 250 334 334 235", 0,
      NULL, 0, 1 },
    { "AUTH cancelled", { EHLO "AUTH LOGIN\r\n", "*\r\n" }, "220 250 334 501", 0, NULL, 0, 1 },
    { "AUTH bad base64", { EHLO "AUTH PLAIN !!!!\r\n" }, "220 250 501", 0, NULL, 0, 1 },
    { "AUTH twice", { EHLO "AUTH PLAIN AGRldmljZQBzZWNyZXQ=\r\nAUTH PLAIN AGRldmljZQBzZWNyZXQ=\r\n" },
      "220 250 235 503", 0, NULL, 0, 1 },
    { "AUTH unknown mech", { EHLO "AUTH CRAM-MD5\r\n" }, "220 250 504", 0, NULL, 0, 1 },
    /* max_errors is 5: past max_junk each junk command counts as one error */
    { "junk commands over the limit", { EHLO "NOOP\r\nNOOP\r\nNOOP\r\nRSET\r\nVRFY root\r\nHELP\r\n"
                                        "EXPN list\r\nNOOP\r\nNOOP\r\n" },
      "220 250 250 250 250 250 252 214 502 250 421", 0, NULL, 0, 0, 0, 3 },
    { "junk count reset by a queued message", { EHLO "NOOP\r\nNOOP\r\nNOOP\r\n" ENV "a\r\n.\r\n"
                                                "NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n" },
      "220 250 250 250 250 250 250 354 250 250 250 250 250 250", 1, "a\r\n", 0, 0, 0, 2 },
    { "junk count not reset by a refused MAIL", { EHLO "NOOP\r\nNOOP\r\nNOOP\r\n"
                                                     "MAIL FROM:<a@example.com> SIZE=5000\r\n"
                                                     "NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n" },
      "220 250 250 250 250 552 250 250 250 250 421", 0, NULL, 0, 0, 0, 2 },
};

static void check_case(const struct script_case *c, int byte_by_byte)
{
    struct rules *r = test_rules();
    struct smtp_session_conf conf = base_conf(r);
    conf.bare_lf_reject = c->bare_lf_reject;
    conf.max_junk = c->max_junk;
    struct tt t;
    char got[256];
    run(&t, &conf, c->tls, c->chunks, byte_by_byte);
    codes(&t, got, sizeof(got));
    if (strcmp(got, c->codes) != 0)
        fail_msg("%s (%s): codes '%s', expected '%s'", c->name, byte_by_byte ? "bytes" : "chunks", got,
                 c->codes);
    assert_int_equal(t.n_msgs, c->msgs);
    assert_int_equal(t.starttls, c->starttls);
    if (c->body && c->msgs) {
        assert_int_equal(t.body[0].len, strlen(c->body));
        assert_memory_equal(t.body[0].len ? t.body[0].data : "", c->body, strlen(c->body));
    }
    tt_free(&t);
    rules_free(r);
}

static void test_scripts(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (!cases[i].codes)
            continue;
        check_case(&cases[i], 0);
        check_case(&cases[i], 1);
    }
}

static void test_size_limit_in_data(void **state)
{
    struct rules *r = test_rules();
    struct smtp_session_conf conf = base_conf(r);
    conf.max_header = 100000;
    struct strbuf big;
    strbuf_init(&big);
    for (int i = 0; i < 100; i++)
        strbuf_append(&big, "0123456789012345678901234567890123456789012345678\r\n");
    strbuf_append(&big, ".\r\nNOOP\r\n");
    const char *chunks[] = { EHLO ENV, big.data, NULL };
    struct tt t;
    char got[256];
    run(&t, &conf, 0, chunks, 0);
    codes(&t, got, sizeof(got));
    assert_string_equal(got, "220 250 250 250 354 552 250");
    assert_int_equal(t.n_msgs, 0);
    tt_free(&t);
    strbuf_free(&big);
    rules_free(r);
}

static void test_long_lines(void **state)
{
    struct rules *r = test_rules();
    struct smtp_session_conf conf = base_conf(r);
    conf.max_header = 100000;
    conf.max_size = 100000;
    struct strbuf cmd, data, hdr;
    strbuf_init(&cmd);
    strbuf_init(&data);
    strbuf_init(&hdr);
    strbuf_append(&cmd, "NOOP ");
    for (int i = 0; i < 3000; i++)
        strbuf_append(&cmd, "x");
    strbuf_append(&cmd, "\r\nNOOP\r\n");
    /* 998 bytes of content is the most a line may carry. */
    strbuf_append(&data, EHLO ENV);
    for (int i = 0; i < 998; i++)
        strbuf_append(&data, "y");
    strbuf_append(&data, "\r\n.\r\n" ENV);
    for (int i = 0; i < 999; i++)
        strbuf_append(&data, "y");
    strbuf_append(&data, "\r\n.\r\n");
    struct tt t;
    char got[256];
    const char *c1[] = { cmd.data, NULL };
    run(&t, &conf, 0, c1, 0);
    codes(&t, got, sizeof(got));
    assert_string_equal(got, "220 500 250");
    tt_free(&t);
    const char *c2[] = { data.data, NULL };
    run(&t, &conf, 0, c2, 0);
    codes(&t, got, sizeof(got));
    assert_string_equal(got, "220 250 250 250 354 250 250 250 354 550");
    assert_int_equal(t.n_msgs, 1);
    tt_free(&t);
    /* header block over max_header (512 in base_conf) */
    conf = base_conf(r);
    strbuf_append(&hdr, EHLO ENV);
    for (int i = 0; i < 20; i++)
        strbuf_append(&hdr, "X-Header: 0123456789012345678901234567890123456789\r\n");
    strbuf_append(&hdr, "\r\nbody\r\n.\r\n");
    const char *c3[] = { hdr.data, NULL };
    run(&t, &conf, 0, c3, 0);
    codes(&t, got, sizeof(got));
    assert_string_equal(got, "220 250 250 250 354 550");
    tt_free(&t);
    strbuf_free(&cmd);
    strbuf_free(&data);
    strbuf_free(&hdr);
    rules_free(r);
}

/* DESIGN.md §9: none of these ends DATA; the smuggled envelope after them is
 * message content, so at most one message is submitted and never one from
 * the smuggled sender. */
static void test_smuggling(void **state)
{
    static const char *const endings[] = {
        "\n.\n", "\r.\r", "\r.\n", "\n.\r\n", "\r\n.\n", "\r\n.\r", "\n.\r", "\r\n.\r\r\n",
        "\r\n\x00.\r\n", ".\n", "\r\n .\r\n", "\r\n.\n\r\n",
    };
    for (int mode = 0; mode < 2; mode++)
        for (size_t i = 0; i < sizeof(endings) / sizeof(endings[0]); i++)
            for (int bytes = 0; bytes < 2; bytes++) {
                struct rules *r = test_rules();
                struct smtp_session_conf conf = base_conf(r);
                conf.bare_lf_reject = mode;
                struct strbuf in;
                strbuf_init(&in);
                strbuf_append(&in, EHLO ENV "Subject: first\r\n\r\nbody");
                const char *e = endings[i];
                size_t elen = i == 8 ? 6 : strlen(e);
                strbuf_append_n(&in, e, elen);
                strbuf_append(&in, "MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<alerts@iot.localhost>\r\n"
                                   "DATA\r\nsmuggled\r\n.\r\n");
                struct tt t;
                memset(&t, 0, sizeof(t));
                strbuf_init(&t.out);
                struct smtp_session_io io = { &t, tt_write, tt_starttls, tt_close, tt_auth, tt_submit, NULL };
                t.s = smtp_session_new(&conf, &io, "192.0.2.1", 0);
                smtp_session_start(t.s);
                if (bytes)
                    for (size_t k = 0; k < in.len; k++)
                        smtp_session_input(t.s, in.data + k, 1);
                else
                    smtp_session_input(t.s, in.data, in.len);
                smtp_session_input(t.s, "QUIT\r\n", 6);
                char got[256];
                codes(&t, got, sizeof(got));
                if (t.n_msgs > 1)
                    fail_msg("ending %zu mode %d: %d messages", i, mode, t.n_msgs);
                for (int m = 0; m < t.n_msgs; m++)
                    assert_string_equal(t.from[m], "dev@example.com");
                /* One DATA answer, then 221: the smuggled commands never ran. */
                if (strcmp(got, "220 250 250 250 354 250 221") != 0 &&
                    strcmp(got, "220 250 250 250 354 550 221") != 0)
                    fail_msg("ending %zu mode %d bytes %d: codes %s", i, mode, bytes, got);
                tt_free(&t);
                strbuf_free(&in);
                rules_free(r);
            }
}

static void test_received_header(void **state)
{
    struct rules *r = test_rules();
    struct smtp_session_conf conf = base_conf(r);
    struct tt t;
    memset(&t, 0, sizeof(t));
    strbuf_init(&t.out);
    struct smtp_session_io io = { &t, tt_write, tt_starttls, tt_close, tt_auth, tt_submit, NULL };
    t.s = smtp_session_new(&conf, &io, "192.0.2.1", 1);
    smtp_session_start(t.s);
    const char *in = "EHLO dev(ice)\r\nAUTH PLAIN AGRldmljZQBzZWNyZXQ=\r\n" ENV "x\r\n.\r\n";
    smtp_session_input(t.s, in, strlen(in));
    assert_int_equal(t.n_msgs, 1);
    const char *q = strstr(t.out.data, "queued as ");
    assert_non_null(q);
    char id[ID_LEN + 1];
    snprintf(id, sizeof(id), "%s", q + 10);
    assert_true(id_valid(id));
    assert_non_null(strstr(last_received, "Received: from dev_ice_ ([192.0.2.1])\r\n\tby mx.test"));
    assert_non_null(strstr(last_received, "with ESMTPSA id "));
    assert_non_null(strstr(last_received, id));
    assert_non_null(strstr(last_received, "\r\n\tfor <alerts@iot.localhost>; "));
    assert_memory_equal(last_received + strlen(last_received) - 7, "+0000\r\n", 7);
    tt_free(&t);
    rules_free(r);
}

/* All sessions together hold at most max_buffered bytes; the count returns
 * to zero whatever happens to a message. */
static void test_memory_cap(void **state)
{
    struct rules *r = test_rules();
    struct smtp_session_conf conf = base_conf(r);
    long buffered = 0;
    conf.buffered = &buffered;
    conf.max_buffered = 300;
    struct strbuf big;
    strbuf_init(&big);
    strbuf_append(&big, EHLO ENV);
    for (int i = 0; i < 10; i++)
        strbuf_append(&big, "0123456789012345678901234567890123456789\r\n");
    strbuf_append(&big, ".\r\n" ENV "small\r\n.\r\n");
    const char *chunks[] = { big.data, NULL };
    struct tt t;
    char got[256];
    run(&t, &conf, 0, chunks, 0);
    codes(&t, got, sizeof(got));
    assert_string_equal(got, "220 250 250 250 354 452 250 250 354 250");
    assert_int_equal(t.n_msgs, 1);
    assert_int_equal(buffered, 0);
    /* a message held while queueing counts until it is answered */
    tt_free(&t);
    strbuf_free(&big);
    rules_free(r);
}

int main(void)
{
    log_init("test", LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scripts),
        cmocka_unit_test(test_size_limit_in_data),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_smuggling),
        cmocka_unit_test(test_received_header),
        cmocka_unit_test(test_memory_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
