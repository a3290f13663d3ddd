/* smtp_session — the ESMTP state machine (RFC 5321, 3207, 4954, 1870, 2920,
 * 6152, 2034).  Verbs dispatch from one table of {verb, check, proceed}; every
 * state change goes through smtp_enter_state().  See smtp_session.h for the
 * DATA rules that keep SMTP smuggling out. */
#include "smtp_session.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include "base64.h"
#include "log.h"
#include "metrics.h"
#include "rules.h"
#include "timeutil.h"

enum smtp_state {
    S_INIT,          /* banner sent, waiting for HELO/EHLO */
    S_HELO,          /* greeted, no transaction */
    S_MAIL,          /* MAIL accepted */
    S_RCPT,          /* at least one RCPT accepted */
    S_DATA,          /* reading the message */
    S_QUEUEING,      /* message handed to io->submit */
    S_AUTH_PLAIN,    /* waiting for the PLAIN response */
    S_AUTH_USER,     /* LOGIN: waiting for the user name */
    S_AUTH_PASS,     /* LOGIN: waiting for the password */
    S_AUTH_CHECK,    /* credentials handed to io->auth */
    S_QUIT,          /* closing */
};

static const char *const state_names[] = {
    "init", "helo", "mail", "rcpt", "data", "queueing", "auth-plain", "auth-user", "auth-pass",
    "auth-check", "quit",
};

/* Message errors found inside DATA, answered once the message ends. */
enum data_error { DE_NONE, DE_SIZE, DE_LINE, DE_HEADER, DE_BARE_CR, DE_BARE_LF, DE_MEMORY };

#define IN_BUFFER_MAX  (64 * 1024)   /* pipelined input kept while busy */

struct smtp_session {
    const struct smtp_session_conf *conf;
    struct smtp_session_io io;
    enum smtp_state state;
    char client_ip[64];
    char helo[256];
    int esmtp, tls, closing;
    char *auth_user;
    int require_auth;          /* MAIL only after AUTH */
    char auth_login_user[256];
    unsigned errors;
    unsigned junk;               /* junk commands since the last message queued */

    struct strbuf in;            /* unprocessed input */
    size_t in_pos;
    int discard_line;            /* inside an over-long command line */
    int reading;                 /* last flow() told the transport */
    int in_input;                /* smtp_session_input() is on the stack */

    /* transaction */
    char mail_from[ADDRESS_BUFSZ];
    uint64_t declared_size;
    struct smtp_rcpt *rcpts;
    size_t n_rcpts, cap_rcpts;
    unsigned *rule_counts;

    /* DATA parser */
    struct smtp_message *msg;
    struct strbuf line;          /* current line, without its terminator */
    size_t line_len;             /* bytes seen in the current line (may exceed kept) */
    int pending_cr;              /* chunk ended right after a CR */
    int prev_crlf;               /* the previous line ended with a real CRLF */
    int in_headers;
    size_t header_bytes;
    uint64_t body_bytes;
    enum data_error derr;
    long accounted;              /* bytes counted in conf->buffered */
};

/* ---- output ---------------------------------------------------------- */

static void reply(struct smtp_session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply(struct smtp_session *s, int code, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    int n = snprintf(buf, sizeof(buf), "%03d ", code);
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 2, fmt, ap);
    va_end(ap);
    if ((size_t)n > sizeof(buf) - 3)
        n = (int)sizeof(buf) - 3;
    buf[n++] = '\r';
    buf[n++] = '\n';
    s->io.write(s->io.opaque, buf, (size_t)n);
}

static void smtp_enter_state(struct smtp_session *s, enum smtp_state st)
{
    if (s->state == st)
        return;
    log_kv(LOG_DEBUG, "smtp state", "client", s->client_ip, "from", state_names[s->state], "to",
           state_names[st], NULL);
    s->state = st;
}

static void count_error(struct smtp_session *s);

static void session_close(struct smtp_session *s)
{
    if (s->closing)
        return;
    s->closing = 1;
    smtp_enter_state(s, S_QUIT);
    s->io.close(s->io.opaque);
}

/* ---- transaction ------------------------------------------------------ */

static void message_free(struct smtp_message *m)
{
    if (!m)
        return;
    strbuf_free(&m->data);
    free(m->rcpts);
    free(m);
}

static void buffered_add(struct smtp_session *s, long delta);

static void transaction_reset(struct smtp_session *s)
{
    buffered_add(s, -s->accounted);
    s->mail_from[0] = 0;
    s->declared_size = 0;
    s->n_rcpts = 0;
    if (s->conf->rules)
        memset(s->rule_counts, 0, rules_count(s->conf->rules) * sizeof(unsigned));
    message_free(s->msg);
    s->msg = NULL;
}

struct smtp_session *smtp_session_new(const struct smtp_session_conf *conf,
                                      const struct smtp_session_io *io, const char *client_ip,
                                      int tls)
{
    struct smtp_session *s = xcalloc(1, sizeof(*s));
    s->conf = conf;
    s->io = *io;
    s->tls = tls;
    s->reading = 1;
    snprintf(s->client_ip, sizeof(s->client_ip), "%s", client_ip);
    strbuf_init(&s->in);
    strbuf_init(&s->line);
    size_t nr = conf->rules ? rules_count(conf->rules) : 0;
    s->rule_counts = xcalloc(nr ? nr : 1, sizeof(unsigned));
    return s;
}

void smtp_session_require_auth(struct smtp_session *s)
{
    s->require_auth = 1;
}

void smtp_session_free(struct smtp_session *s)
{
    if (!s)
        return;
    transaction_reset(s);
    strbuf_free(&s->in);
    strbuf_free(&s->line);
    free(s->rcpts);
    free(s->rule_counts);
    free(s->auth_user);
    free(s);
}

void smtp_session_start(struct smtp_session *s)
{
    reply(s, 220, "%s ESMTP mailfleet", s->conf->hostname);
}

int smtp_session_in_data(const struct smtp_session *s)
{
    return s->state == S_DATA;
}

int smtp_session_busy(const struct smtp_session *s)
{
    return s->state == S_QUEUEING || s->state == S_AUTH_CHECK;
}

int smtp_session_closing(const struct smtp_session *s)
{
    return s->closing;
}

void smtp_session_timeout(struct smtp_session *s)
{
    if (s->closing)
        return;
    reply(s, 421, "4.4.2 %s Error: timeout exceeded", s->conf->hostname);
    session_close(s);
}

void smtp_session_too_slow(struct smtp_session *s)
{
    if (s->closing)
        return;
    reply(s, 421, "4.4.2 %s Error: data rate too low", s->conf->hostname);
    session_close(s);
}

void smtp_session_shutdown(struct smtp_session *s)
{
    if (s->closing)
        return;
    reply(s, 421, "4.3.2 %s Service shutting down, try again later", s->conf->hostname);
    session_close(s);
}

/* ---- argument parsing --------------------------------------------------- */

/* Parses "<addr>" (after FROM:/TO:, blanks allowed before '<') into out and
 * returns a pointer to the parameters after it, or NULL on bad syntax.
 * *rc is 0, or -EINVAL when the address itself is not acceptable. */
static const char *parse_path(const char *p, char *out, size_t outlen, int allow_null, int *rc)
{
    *rc = 0;
    while (*p == ' ')
        p++;
    if (*p != '<')
        return NULL;
    const char *end = strchr(p, '>');
    if (!end)
        return NULL;
    size_t len = (size_t)(end - p - 1);
    if (len == 0) {
        if (!allow_null)
            *rc = -EINVAL;
        out[0] = 0;
    } else {
        char tmp[ADDRESS_BUFSZ];
        const char *a = p + 1;
        /* A source route (@a,@b:user@d) is obsolete; RFC 5321 says accept and ignore it. */
        if (*a == '@') {
            const char *colon = memchr(a, ':', len);
            if (!colon) {
                *rc = -EINVAL;
                return end + 1;
            }
            len -= (size_t)(colon + 1 - a);
            a = colon + 1;
        }
        if (len >= sizeof(tmp)) {
            *rc = -EINVAL;
            return end + 1;
        }
        memcpy(tmp, a, len);
        tmp[len] = 0;
        if (address_normalize(tmp, out, outlen) != 0)
            *rc = -EINVAL;
    }
    return end + 1;
}

static int starts_with_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* ---- verbs ---------------------------------------------------------------- */

struct smtp_verb {
    const char *verb;
    int (*check)(struct smtp_session *s, const char *args);    /* 0 = go on; else replied */
    void (*proceed)(struct smtp_session *s, const char *args);
    int junk;   /* moves no transaction forward: counted against max_junk */
};

static int check_any(struct smtp_session *s, const char *args)
{
    return 0;
}

static int check_no_args(struct smtp_session *s, const char *args)
{
    if (*args) {
        reply(s, 501, "5.5.4 Syntax: no parameters allowed");
        return -1;
    }
    return 0;
}

static int check_greeted(struct smtp_session *s, const char *args)
{
    if (s->state == S_INIT) {
        reply(s, 503, "5.5.1 Error: send HELO/EHLO first");
        return -1;
    }
    return 0;
}

static int check_idle(struct smtp_session *s, const char *args)
{
    if (check_greeted(s, args))
        return -1;
    if (s->state != S_HELO) {
        reply(s, 503, "5.5.1 Error: transaction in progress");
        return -1;
    }
    return 0;
}

static int check_helo(struct smtp_session *s, const char *args)
{
    if (!*args) {
        reply(s, 501, "5.5.4 Syntax: EHLO hostname");
        return -1;
    }
    return 0;
}

static void set_helo(struct smtp_session *s, const char *args, int esmtp)
{
    /* Kept for the Received: header: printable, no blanks, bounded. */
    size_t n = 0;
    for (const char *p = args; *p && *p != ' ' && n < sizeof(s->helo) - 1; p++)
        s->helo[n++] = (*p > ' ' && *p < 127 && *p != '(' && *p != ')') ? *p : '_';
    s->helo[n] = 0;
    s->esmtp = esmtp;
    transaction_reset(s);
    smtp_enter_state(s, S_HELO);
}

static int auth_offered(const struct smtp_session *s)
{
    return s->tls || s->conf->allow_plaintext_auth;
}

static void proceed_ehlo(struct smtp_session *s, const char *args)
{
    char buf[1024];
    int n;
    set_helo(s, args, 1);
    n = snprintf(buf, sizeof(buf), "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n",
                 s->conf->hostname, (unsigned long long)s->conf->max_size);
    if (s->conf->tls_available && !s->tls)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "250-STARTTLS\r\n");
    if (auth_offered(s) && !s->auth_user)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "250-AUTH PLAIN LOGIN\r\n");
    n += snprintf(buf + n, sizeof(buf) - (size_t)n, "250 ENHANCEDSTATUSCODES\r\n");
    s->io.write(s->io.opaque, buf, (size_t)n);
}

static void proceed_helo(struct smtp_session *s, const char *args)
{
    set_helo(s, args, 0);
    reply(s, 250, "%s", s->conf->hostname);
}

static int check_starttls(struct smtp_session *s, const char *args)
{
    if (check_idle(s, args) || check_no_args(s, args))
        return -1;
    if (s->tls) {
        reply(s, 503, "5.5.1 Error: TLS already active");
        return -1;
    }
    if (!s->conf->tls_available) {
        reply(s, 454, "4.7.0 TLS not available");
        return -1;
    }
    return 0;
}

static void proceed_starttls(struct smtp_session *s, const char *args)
{
    reply(s, 220, "2.0.0 Ready to start TLS");
    /* RFC 3207 §4.2: forget everything learnt in plaintext, and (the
     * CVE-2011-0411 class) drop any command pipelined behind STARTTLS. */
    strbuf_reset(&s->in);
    s->in_pos = 0;
    s->tls = 1;
    s->helo[0] = 0;
    transaction_reset(s);
    smtp_enter_state(s, S_INIT);
    s->io.starttls(s->io.opaque);
}

static int check_auth(struct smtp_session *s, const char *args)
{
    if (check_idle(s, args))
        return -1;
    if (!s->esmtp) {
        reply(s, 503, "5.5.1 Error: send EHLO first");
        return -1;
    }
    if (s->auth_user) {
        reply(s, 503, "5.5.1 Error: already authenticated");
        return -1;
    }
    if (!auth_offered(s)) {
        reply(s, 530, "5.7.0 Must issue a STARTTLS command first");
        return -1;
    }
    return 0;
}

/* An AUTH line's base64 into a NUL-terminated buffer; -1 on bad or empty
 * input, or input longer than the buffer allows. */
static int auth_decode(const char *in, char *out, size_t outlen)
{
    size_t n = strlen(in);
    return n == 0 ? -1 : (int)base64_decode(in, n, (unsigned char *)out, outlen);
}

static void auth_start_check(struct smtp_session *s, const char *user, const char *pass)
{
    smtp_enter_state(s, S_AUTH_CHECK);
    s->io.auth(s->io.opaque, user, pass);
}

/* PLAIN response: [authzid] NUL authcid NUL passwd (RFC 4616). */
static void auth_plain_response(struct smtp_session *s, const char *resp)
{
    char buf[1024];
    int len = auth_decode(resp, buf, sizeof(buf));
    const char *authz, *user, *pass;
    if (len < 0) {
        smtp_enter_state(s, S_HELO);
        reply(s, 501, "5.5.2 Error: invalid base64 data");
        return;
    }
    authz = buf;
    user = memchr(buf, 0, (size_t)len);
    pass = user ? memchr(user + 1, 0, (size_t)(buf + len - user - 1)) : NULL;
    if (!user || !pass) {
        OPENSSL_cleanse(buf, sizeof(buf));
        smtp_enter_state(s, S_HELO);
        reply(s, 501, "5.5.2 Error: malformed PLAIN response");
        return;
    }
    user++;
    pass++;
    if (*authz && strcmp(authz, user) != 0) {
        OPENSSL_cleanse(buf, sizeof(buf));
        smtp_enter_state(s, S_HELO);
        reply(s, 535, "5.7.8 Error: authorization identity not allowed");
        return;
    }
    auth_start_check(s, user, pass);
    OPENSSL_cleanse(buf, sizeof(buf));
}

static void proceed_auth(struct smtp_session *s, const char *args)
{
    char mech[32];
    size_t n = strcspn(args, " ");
    const char *initial = args[n] == ' ' ? args + n + 1 : NULL;
    snprintf(mech, sizeof(mech), "%.*s", (int)(n < 31 ? n : 31), args);
    if (strcasecmp(mech, "PLAIN") == 0) {
        if (initial && strcmp(initial, "=") != 0) {
            auth_plain_response(s, initial);
        } else {
            smtp_enter_state(s, S_AUTH_PLAIN);
            reply(s, 334, " ");
        }
    } else if (strcasecmp(mech, "LOGIN") == 0) {
        if (initial) {
            char user[256];
            if (auth_decode(initial, user, sizeof(user)) < 0) {
                reply(s, 501, "5.5.2 Error: invalid base64 data");
                return;
            }
            snprintf(s->auth_login_user, sizeof(s->auth_login_user), "%s", user);
            smtp_enter_state(s, S_AUTH_PASS);
            reply(s, 334, "UGFzc3dvcmQ6");
        } else {
            smtp_enter_state(s, S_AUTH_USER);
            reply(s, 334, "VXNlcm5hbWU6");
        }
    } else {
        reply(s, 504, "5.5.4 Unrecognized authentication type");
    }
}

/* A line while an AUTH exchange waits for the client. */
static void auth_continue(struct smtp_session *s, const char *line)
{
    if (strcmp(line, "*") == 0) {
        smtp_enter_state(s, S_HELO);
        reply(s, 501, "5.7.0 Authentication cancelled");
        return;
    }
    if (s->state == S_AUTH_PLAIN) {
        auth_plain_response(s, line);
    } else if (s->state == S_AUTH_USER) {
        char user[256];
        if (auth_decode(line, user, sizeof(user)) < 0) {
            smtp_enter_state(s, S_HELO);
            reply(s, 501, "5.5.2 Error: invalid base64 data");
            return;
        }
        snprintf(s->auth_login_user, sizeof(s->auth_login_user), "%s", user);
        smtp_enter_state(s, S_AUTH_PASS);
        reply(s, 334, "UGFzc3dvcmQ6");
    } else {
        char pass[512];
        if (auth_decode(line, pass, sizeof(pass)) < 0) {
            smtp_enter_state(s, S_HELO);
            reply(s, 501, "5.5.2 Error: invalid base64 data");
            return;
        }
        auth_start_check(s, s->auth_login_user, pass);
        OPENSSL_cleanse(pass, sizeof(pass));
    }
}

void smtp_session_auth_done(struct smtp_session *s, const char *user, int ok)
{
    if (s->state != S_AUTH_CHECK)
        panic("%s: not waiting for AUTH (state %s)", __func__, state_names[s->state]);
    smtp_enter_state(s, S_HELO);
    if (ok > 0) {
        s->auth_user = xstrdup(user);
        reply(s, 235, "2.7.0 Authentication successful");
    } else if (ok == 0) {
        reply(s, 535, "5.7.8 Error: authentication failed");
    } else {
        reply(s, 454, "4.7.0 Too many authentication failures, try again later");
    }
    smtp_session_input(s, NULL, 0);
}

static int check_mail(struct smtp_session *s, const char *args)
{
    if (check_idle(s, args))
        return -1;
    if (!starts_with_ci(args, "FROM:")) {
        reply(s, 501, "5.5.4 Syntax: MAIL FROM:<address>");
        return -1;
    }
    if (s->require_auth && !s->auth_user) {
        reply(s, 530, "5.7.0 Authentication required");
        return -1;
    }
    return 0;
}

static void proceed_mail(struct smtp_session *s, const char *args)
{
    int rc;
    const char *p = parse_path(args + 5, s->mail_from, sizeof(s->mail_from), 1, &rc);
    if (!p) {
        reply(s, 501, "5.5.4 Syntax: MAIL FROM:<address>");
        return;
    }
    if (rc) {
        s->mail_from[0] = 0;
        reply(s, 553, "5.1.7 Bad sender address syntax");
        return;
    }
    /* Refused before the client sends a byte of the message, not after
     * (Postfix's queue_minfree answers the same). */
    if (s->conf->storage_low && atomic_load(s->conf->storage_low)) {
        s->mail_from[0] = 0;
        reply(s, 452, "4.3.1 Insufficient system storage");
        return;
    }
    s->declared_size = 0;
    /* ESMTP parameters: SIZE, BODY, AUTH (RFC 1870, 6152, 4954). */
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        size_t n = strcspn(p, " ");
        char param[128];
        snprintf(param, sizeof(param), "%.*s", (int)(n < 127 ? n : 127), p);
        p += n;
        if (!s->esmtp) {
            reply(s, 555, "5.5.4 Parameters need EHLO");
            return;
        }
        if (starts_with_ci(param, "SIZE=")) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(param + 5, &end, 10);
            if (*end || errno || !isdigit((unsigned char)param[5])) {
                reply(s, 501, "5.5.4 Bad SIZE parameter");
                return;
            }
            if (v > s->conf->max_size) {
                reply(s, 552, "5.3.4 Message size exceeds fixed limit");
                return;
            }
            s->declared_size = v;
        } else if (starts_with_ci(param, "BODY=")) {
            if (strcasecmp(param + 5, "7BIT") != 0 && strcasecmp(param + 5, "8BITMIME") != 0) {
                reply(s, 501, "5.5.4 Bad BODY parameter");
                return;
            }
        } else if (starts_with_ci(param, "AUTH=")) {
            /* Accepted and ignored: we do not relay on behalf of others. */
        } else {
            reply(s, 555, "5.5.4 Unsupported parameter");
            return;
        }
    }
    smtp_enter_state(s, S_MAIL);
    reply(s, 250, "2.1.0 Ok");
}

static int check_rcpt(struct smtp_session *s, const char *args)
{
    if (s->state != S_MAIL && s->state != S_RCPT) {
        if (check_greeted(s, args) == 0)
            reply(s, 503, "5.5.1 Error: need MAIL command");
        return -1;
    }
    if (!starts_with_ci(args, "TO:")) {
        reply(s, 501, "5.5.4 Syntax: RCPT TO:<address>");
        return -1;
    }
    return 0;
}

static void proceed_rcpt(struct smtp_session *s, const char *args)
{
    char addr[ADDRESS_BUFSZ];
    int rc;
    const char *p = parse_path(args + 3, addr, sizeof(addr), 0, &rc);
    if (!p) {
        reply(s, 501, "5.5.4 Syntax: RCPT TO:<address>");
        return;
    }
    if (rc) {
        reply(s, 501, "5.1.3 Bad recipient address syntax");
        return;
    }
    while (*p == ' ')
        p++;
    if (*p) {
        reply(s, 555, "5.5.4 Unsupported parameter");
        return;
    }
    if (s->n_rcpts >= s->conf->max_rcpt) {
        reply(s, 452, "4.5.3 Too many recipients");
        return;
    }
    for (size_t i = 0; i < s->n_rcpts; i++)
        if (strcasecmp(s->rcpts[i].addr, addr) == 0) {
            reply(s, 250, "2.1.5 Ok");   /* duplicate: one copy is enough */
            return;
        }
    struct rules_verdict v = { -1, 550, "5.7.1 Relay access denied: recipient not accepted here" };
    if (s->conf->rules) {
        struct rules_ctx ctx = { s->tls, s->auth_user, s->mail_from, s->declared_size, s->rule_counts };
        rules_check(s->conf->rules, addr, &ctx, &v);
    }
    if (v.code != 250) {
        reply(s, v.code, "%s", v.text);
        if (v.code >= 500)
            count_error(s);
        return;
    }
    char token[ADDRESS_BUFSZ];
    if (rules_action(s->conf->rules, v.rule) == RULE_UNSUBSCRIBE &&
        rules_unsubscribe_token(addr, token, sizeof(token)) != 0) {
        reply(s, 550, "5.1.1 Unknown unsubscribe address");
        return;
    }
    if (s->n_rcpts == s->cap_rcpts) {
        s->cap_rcpts = s->cap_rcpts ? s->cap_rcpts * 2 : 8;
        s->rcpts = xrealloc(s->rcpts, s->cap_rcpts * sizeof(*s->rcpts));
    }
    memcpy(s->rcpts[s->n_rcpts].addr, addr, sizeof(addr));
    s->rcpts[s->n_rcpts].rule = v.rule;
    s->n_rcpts++;
    s->rule_counts[v.rule]++;
    smtp_enter_state(s, S_RCPT);
    reply(s, 250, "%s", v.text);
}

static int check_data(struct smtp_session *s, const char *args)
{
    if (check_no_args(s, args))
        return -1;
    if (s->state == S_MAIL) {
        reply(s, 554, "5.5.1 Error: no valid recipients");
        return -1;
    }
    if (s->state != S_RCPT) {
        if (check_greeted(s, args) == 0)
            reply(s, 503, "5.5.1 Error: need RCPT command");
        return -1;
    }
    return 0;
}

static void received_header(struct smtp_session *s, struct smtp_message *m)
{
    char date[64];
    time_t t = (time_t)(m->received_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    const char *with = s->esmtp ? (s->tls ? (s->auth_user ? "ESMTPSA" : "ESMTPS")
                                          : (s->auth_user ? "ESMTPA" : "ESMTP"))
                                : "SMTP";
    strbuf_appendf(&m->data, "Received: from %s ([%s])\r\n\tby %s (mailfleet) with %s id %s",
                   s->helo[0] ? s->helo : "unknown", s->client_ip, s->conf->hostname, with, m->id);
    if (m->n_rcpts == 1)
        strbuf_appendf(&m->data, "\r\n\tfor <%s>", m->rcpts[0].addr);
    strbuf_appendf(&m->data, "; %s\r\n", date);
    m->received_len = m->data.len;
}

static void proceed_data(struct smtp_session *s, const char *args)
{
    struct smtp_message *m = xcalloc(1, sizeof(*m));
    id_new(m->id);
    memcpy(m->mail_from, s->mail_from, sizeof(m->mail_from));
    m->rcpts = xmalloc(s->n_rcpts * sizeof(*m->rcpts));
    memcpy(m->rcpts, s->rcpts, s->n_rcpts * sizeof(*m->rcpts));
    m->n_rcpts = s->n_rcpts;
    m->helo = s->helo;
    m->client_ip = s->client_ip;
    m->auth_user = s->auth_user;
    m->tls = s->tls;
    m->received_ms = now_ms();
    strbuf_init(&m->data);
    received_header(s, m);
    s->msg = m;
    strbuf_reset(&s->line);
    s->line_len = 0;
    s->pending_cr = 0;
    /* prev_crlf was set from how the DATA line itself ended. */
    s->in_headers = 1;
    s->header_bytes = 0;
    s->body_bytes = 0;
    s->derr = DE_NONE;
    smtp_enter_state(s, S_DATA);
    reply(s, 354, "End data with <CR><LF>.<CR><LF>");
}

static void proceed_rset(struct smtp_session *s, const char *args)
{
    transaction_reset(s);
    if (s->state != S_INIT)
        smtp_enter_state(s, S_HELO);
    reply(s, 250, "2.0.0 Ok");
}

static void proceed_noop(struct smtp_session *s, const char *args)
{
    reply(s, 250, "2.0.0 Ok");
}

static void proceed_quit(struct smtp_session *s, const char *args)
{
    reply(s, 221, "2.0.0 Bye");
    session_close(s);
}

static void proceed_vrfy(struct smtp_session *s, const char *args)
{
    /* RFC 5321 §3.5.3: 252 says nothing about whether the mailbox exists. */
    reply(s, 252, "2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
}

static void proceed_expn(struct smtp_session *s, const char *args)
{
    reply(s, 502, "5.5.1 EXPN not available");
}

static void proceed_help(struct smtp_session *s, const char *args)
{
    reply(s, 214, "2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP VRFY HELP QUIT");
}

/* A PROXY protocol line reaching the session: this listener takes none
 * (the server consumes the header where one is expected), so it is a
 * client claiming another address, or a balancer sent to the wrong port. */
static void proceed_proxy(struct smtp_session *s, const char *args)
{
    log_kv(LOG_WARN, "PROXY header refused: not enabled on this listener", "client", s->client_ip, NULL);
    reply(s, 421, "4.7.0 %s Error: PROXY protocol is not enabled on this listener", s->conf->hostname);
    session_close(s);
}

static const struct smtp_verb smtp_verbs[] = {
    { "EHLO", check_helo, proceed_ehlo },
    { "HELO", check_helo, proceed_helo },
    { "STARTTLS", check_starttls, proceed_starttls },
    { "AUTH", check_auth, proceed_auth },
    { "MAIL", check_mail, proceed_mail },
    { "RCPT", check_rcpt, proceed_rcpt },
    { "DATA", check_data, proceed_data },
    { "RSET", check_no_args, proceed_rset, 1 },
    { "NOOP", check_any, proceed_noop, 1 },
    { "QUIT", check_no_args, proceed_quit },
    { "VRFY", check_any, proceed_vrfy, 1 },
    { "EXPN", check_any, proceed_expn, 1 },
    { "HELP", check_any, proceed_help, 1 },
    { "PROXY", check_any, proceed_proxy },
    { NULL, NULL, NULL },
};

/* Every refused command counts, whatever refused it: out-of-sequence
 * commands and refused recipients (relay probing) end the session too. */
static void count_error(struct smtp_session *s)
{
    if (++s->errors >= s->conf->max_errors) {
        reply(s, 421, "4.7.0 %s Error: too many errors", s->conf->hostname);
        session_close(s);
    }
}

static void bad_command(struct smtp_session *s, int code, const char *text)
{
    reply(s, code, "%s", text);
    count_error(s);
}

static void command(struct smtp_session *s, char *line)
{
    if (s->state >= S_AUTH_PLAIN && s->state <= S_AUTH_PASS) {
        auth_continue(s, line);
        return;
    }
    size_t n = strcspn(line, " ");
    const char *args = line + n;
    while (*args == ' ')
        args++;
    for (const struct smtp_verb *v = smtp_verbs; v->verb; v++) {
        if (strlen(v->verb) != n || strncasecmp(line, v->verb, n) != 0)
            continue;
        if (v->check(s, args) != 0) {
            count_error(s);
            return;
        }
        v->proceed(s, args);
        /* As Postfix's smtpd_junk_command_limit: past the limit each junk
         * command is an error too, so a client cannot hold a session open
         * with NOOPs (or probe with VRFY) until the timeouts end it. */
        if (v->junk && s->conf->max_junk && ++s->junk > s->conf->max_junk)
            count_error(s);
        return;
    }
    bad_command(s, 500, "5.5.2 Error: command not recognized");
}

/* ---- DATA ------------------------------------------------------------------ */

static void buffered_add(struct smtp_session *s, long delta)
{
    if (s->conf->buffered)
        __atomic_add_fetch(s->conf->buffered, delta, __ATOMIC_RELAXED);
    s->accounted += delta;
}

static void data_fail(struct smtp_session *s, enum data_error e)
{
    if (s->derr == DE_NONE)
        s->derr = e;
    /* Nothing more will be stored: give the memory back now. */
    strbuf_free(&s->msg->data);
    buffered_add(s, -s->accounted);
}

static void data_end(struct smtp_session *s)
{
    struct smtp_message *m = s->msg;
    uint64_t rule_max = 0;
    for (size_t i = 0; i < m->n_rcpts && s->conf->rules; i++) {
        uint64_t mx = rules_max_size(s->conf->rules, m->rcpts[i].rule);
        if (mx && (!rule_max || mx < rule_max))
            rule_max = mx;
    }
    if (s->derr == DE_NONE && rule_max && s->body_bytes > rule_max)
        s->derr = DE_SIZE;
    if (s->derr != DE_NONE) {
        static const struct { int code; const char *text, *reason; } answers[] = {
            [DE_SIZE] = { 552, "5.3.4 Message size exceeds fixed limit", "size" },
            [DE_LINE] = { 550, "5.6.0 Message line too long", "line_length" },
            [DE_HEADER] = { 550, "5.6.0 Message header block too large", "header_size" },
            [DE_BARE_CR] = { 550, "5.5.2 Error: bare <CR> received", "bare_cr" },
            [DE_BARE_LF] = { 550, "5.5.2 Error: bare <LF> received", "bare_lf" },
            [DE_MEMORY] = { 452, "4.3.1 Insufficient system storage, try again later", "memory" },
        };
        char labels[96];
        snprintf(labels, sizeof(labels), "result=\"refused\",reason=\"%s\"", answers[s->derr].reason);
        metric_inc(metric_counter("mailfleet_ingest_messages_total", "messages by result", labels));
        log_kv(LOG_INFO, "message refused", "client", s->client_ip, "id", m->id, "reason",
               answers[s->derr].reason, NULL);
        reply(s, answers[s->derr].code, "%s", answers[s->derr].text);
        transaction_reset(s);
        smtp_enter_state(s, S_HELO);
        return;
    }
    smtp_enter_state(s, S_QUEUEING);
    s->io.submit(s->io.opaque, m);
}

void smtp_session_submit_done(struct smtp_session *s, int code, const char *text)
{
    if (s->state != S_QUEUEING)
        panic("%s: no message queued (state %s)", __func__, state_names[s->state]);
    reply(s, code, "%s", text);
    if (code / 100 == 2)
        s->junk = 0;   /* a client that delivers mail is not idling */
    transaction_reset(s);
    smtp_enter_state(s, S_HELO);
    smtp_session_input(s, NULL, 0);
}

/* One complete DATA line (without terminator); crlf = ended by a real CRLF. */
static void data_line(struct smtp_session *s, int crlf)
{
    const char *l = s->line.len ? s->line.data : "";
    size_t len = s->line.len;
    if (len == 1 && l[0] == '.' && s->line_len == 1 && crlf && s->prev_crlf) {
        data_end(s);
        return;
    }
    if (!crlf && s->conf->bare_lf_reject)
        data_fail(s, DE_BARE_LF);
    if (s->line_len + 2 > s->conf->max_line)
        data_fail(s, DE_LINE);
    s->prev_crlf = crlf;
    if (len > 1 && l[0] == '.') {   /* dot-unstuffing (RFC 5321 §4.5.2) */
        l++;
        len--;
    }
    if (s->in_headers) {
        if (len == 0)
            s->in_headers = 0;
        else if ((s->header_bytes += len + 2) > s->conf->max_header)
            data_fail(s, DE_HEADER);
    }
    s->body_bytes += len + 2;
    if (s->body_bytes > s->conf->max_size)
        data_fail(s, DE_SIZE);
    /* All sessions together keep at most max_buffered bytes of mail in
     * memory; past that a message is refused with a 4xx (retry later). */
    if (s->derr == DE_NONE && s->conf->buffered && s->conf->max_buffered &&
        __atomic_load_n(s->conf->buffered, __ATOMIC_RELAXED) + (long)len + 2 > s->conf->max_buffered)
        data_fail(s, DE_MEMORY);
    if (s->derr == DE_NONE) {
        strbuf_append_n(&s->msg->data, l, len);
        strbuf_append_n(&s->msg->data, "\r\n", 2);
        buffered_add(s, (long)len + 2);
    }
    strbuf_reset(&s->line);
    s->line_len = 0;
}

static void line_add(struct smtp_session *s, const char *p, size_t n)
{
    /* Keep at most max_line bytes of a line: enough to judge it. */
    size_t room = s->conf->max_line > s->line.len ? s->conf->max_line - s->line.len : 0;
    strbuf_append_n(&s->line, p, n < room ? n : room);
    s->line_len += n;
}

/* Consumes DATA bytes; returns how many were used (less than n only when the
 * message ended). */
static size_t data_feed(struct smtp_session *s, const char *buf, size_t n)
{
    size_t i = 0;
    while (i < n && s->state == S_DATA) {
        if (s->pending_cr) {
            s->pending_cr = 0;
            if (buf[i] == '\n') {
                i++;
                data_line(s, 1);
                continue;
            }
            /* A CR not followed by LF: the message is refused. */
            data_fail(s, DE_BARE_CR);
            line_add(s, "\r", 1);
            continue;
        }
        const char *p = buf + i;
        size_t k = 0;
        while (k < n - i && p[k] != '\r' && p[k] != '\n')
            k++;
        line_add(s, p, k);
        i += k;
        if (i == n)
            break;
        if (buf[i] == '\r') {
            s->pending_cr = 1;
            i++;
        } else {
            i++;
            data_line(s, 0);
        }
    }
    return i;
}

/* ---- input ------------------------------------------------------------------ */

static void flow(struct smtp_session *s, int reading)
{
    if (s->reading != reading && s->io.flow) {
        s->reading = reading;
        s->io.flow(s->io.opaque, reading);
    }
}

void smtp_session_input(struct smtp_session *s, const char *buf, size_t len)
{
    if (s->closing)
        return;
    if (len)
        strbuf_append_n(&s->in, buf, len);
    /* An answer given from inside the loop (a synchronous auth/submit) only
     * unblocks it: the outer call goes on reading. */
    if (s->in_input)
        return;
    s->in_input = 1;
    while (!s->closing && !smtp_session_busy(s) && s->in_pos < s->in.len) {
        char *p = s->in.data + s->in_pos;
        size_t avail = s->in.len - s->in_pos;
        if (s->state == S_DATA) {
            s->in_pos += data_feed(s, p, avail);
            continue;
        }
        char *nl = memchr(p, '\n', avail);
        if (!nl) {
            if (avail > s->conf->max_line) {   /* keep memory bounded */
                s->discard_line = 1;
                s->in_pos = s->in.len;
            }
            break;
        }
        size_t linelen = (size_t)(nl - p);
        int crlf = linelen > 0 && p[linelen - 1] == '\r';
        s->in_pos += linelen + 1;
        if (crlf)
            linelen--;
        if (s->discard_line || linelen + 2 > s->conf->max_line) {
            s->discard_line = 0;
            bad_command(s, 500, "5.5.2 Error: line too long");
            continue;
        }
        if (!crlf && s->conf->bare_lf_reject) {
            bad_command(s, 500, "5.5.2 Error: bare <LF> received");
            continue;
        }
        p[linelen] = 0;
        if (memchr(p, '\r', linelen) || strlen(p) != linelen) {
            bad_command(s, 500, "5.5.2 Error: bare <CR> or NUL in command");
            continue;
        }
        s->prev_crlf = crlf;   /* for DATA: how the line before the message ended */
        command(s, p);
    }
    /* Compact, then tell the transport whether to keep reading. */
    if (s->in_pos > 0) {
        if (s->in_pos >= s->in.len) {
            strbuf_reset(&s->in);
        } else {
            memmove(s->in.data, s->in.data + s->in_pos, s->in.len - s->in_pos);
            s->in.len -= s->in_pos;
            s->in.data[s->in.len] = 0;
        }
        s->in_pos = 0;
    }
    s->in_input = 0;
    if (!s->closing)
        flow(s, !(smtp_session_busy(s) && s->in.len > IN_BUFFER_MAX));
}
