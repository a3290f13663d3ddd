/* smtp_server — sockets, TLS and limits around smtp_session (see the header).
 *
 * Ownership: a connection is freed in the close callback of its last libuv
 * handle, and only when no thread-pool request (AUTH check) and no submitted
 * message still refer to it (refs).  Replies are collected in c->out and
 * written once per event, so pipelined replies leave in one segment. */
#include "smtp_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "proxy_header.h"
#include "strbuf.h"
#include "timeutil.h"
#include "tls.h"

#define ACCEPT_PAUSE_MS 250
#define PROXY_TIMEOUT_MS 10000   /* a balancer sends its header at once */

/* AUTH throttling keeps one entry per client IP and one per user name tried.
 * A password check in flight counts against both as if it were going to
 * fail (pending): parallel attempts cannot all start under the old count,
 * and the number of real checks before the 454 lockout is auth_max_failures
 * however many connections try at once.  Attempts over that budget wait for
 * a running check to end instead of being refused, so devices behind one
 * address that log in together are slowed, not locked out.  A success never
 * clears the IP's count (it would let a device's own password reopen
 * guessing against other accounts); it clears only its own user's count. */
struct limit_entry {
    struct limit_entry *next;
    char key[257];              /* a client IP, or a user name in s->auth_users */
    unsigned conns;             /* connections (IP) or attempts (user) using it */
    unsigned auth_failures;
    unsigned auth_pending;      /* password checks running */
    int64_t last_failure_ms;
};

struct listener {
    struct smtp_server *srv;
    uv_poll_t poll;
    int fd;
    struct smtp_listener_conf conf;
    int active;
};

struct smtp_conn {
    struct smtp_conn *prev, *next;
    struct smtp_server *srv;
    uv_tcp_t tcp;
    uv_timer_t timer;
    const struct listener *lst;
    struct smtp_session *sess;  /* NULL while the PROXY header is awaited */
    struct strbuf pre;          /* the PROXY header's bytes so far */
    struct tls_conn *tls;
    struct limit_entry *ipe;    /* the client's address (the peer's until a PROXY header) */
    struct strbuf out;          /* plaintext replies not yet written */
    struct strbuf net;          /* scratch: ciphertext */
    struct strbuf plain;        /* scratch: decrypted input */
    int refs;                   /* pending auth / submit */
    int handles;                /* open libuv handles */
    int closing, shutting, reading;
    int throttled;              /* reading stopped: the client does not read replies */
    const char *outcome;
    /* timers: c->timer fires at the earliest of these */
    int64_t started_ms;         /* + session_timeout: the session deadline */
    int64_t idle_at_ms;         /* no input since the last event */
    int rate_on;                /* in DATA: bytes are counted per window */
    int64_t window_end_ms;
    uint64_t window_bytes;
    /* auth in flight */
    char auth_user[257], auth_pass[513];
    struct limit_entry *auth_ue;   /* the user name's entry while checking */
    int auth_waiting;           /* over the check budget: waits for a check to end */
    int auth_result;
    uv_work_t auth_work;
    uv_timer_t *auth_timer;
};

struct smtp_server {
    uv_loop_t *loop;
    struct smtp_server_conf conf;
    struct smtp_server_hooks hooks;
    struct tls_ctx *tls;
    struct listener lst[SMTP_MAX_LISTENERS];
    size_t n_lst;
    uv_timer_t resume_timer;
    int paused, accepting;
    int draining;                  /* smtp_server_drain: new connections get 421 */
    struct smtp_conn *conns;
    size_t n_conns;
    struct limit_entry *ips;
    struct limit_entry *auth_users;
    struct metric *m_connections, *m_refused, *m_auth_fail;
};

static char read_buffer[65536];   /* one loop thread: input is consumed in read_cb */

static struct metric *session_metric(const char *outcome)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "outcome=\"%s\"", outcome);
    return metric_counter("mailfleet_ingest_sessions_total", "SMTP sessions by how they ended", labels);
}

/* ---- per-IP and per-user tables ------------------------------------------------ */

static struct limit_entry *entry_get(struct limit_entry **list, const char *key)
{
    for (struct limit_entry *e = *list; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    struct limit_entry *e = xcalloc(1, sizeof(*e));
    snprintf(e->key, sizeof(e->key), "%s", key);
    e->next = *list;
    *list = e;
    return e;
}

static struct limit_entry *ip_get(struct smtp_server *s, const char *ip)
{
    return entry_get(&s->ips, ip);
}

/* Failures older than the block time are forgotten. */
static void entry_expire(const struct smtp_server *s, struct limit_entry *e, int64_t now)
{
    if (e->auth_failures && now - e->last_failure_ms > s->conf.auth_block_ms)
        e->auth_failures = 0;
}

static void entries_sweep(const struct smtp_server *s, struct limit_entry **pp, int64_t now)
{
    while (*pp) {
        struct limit_entry *e = *pp;
        entry_expire(s, e, now);
        if (e->conns == 0 && e->auth_pending == 0 && e->auth_failures == 0) {
            *pp = e->next;
            free(e);
        } else {
            pp = &e->next;
        }
    }
}

/* Forgets IPs and user names with no connection and no recent AUTH failure. */
static void ip_sweep(struct smtp_server *s)
{
    int64_t now = mono_ms();
    entries_sweep(s, &s->ips, now);
    entries_sweep(s, &s->auth_users, now);
}

/* ---- output ------------------------------------------------------------------ */

struct write_req {
    uv_write_t req;
    char *buf;
    struct smtp_conn *c;
};

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* Replies a client does not read pile up in the write queue: above this,
 * stop reading its commands until the queue drains (pipelined NOOPs can't
 * grow memory without bound). */
#define WRITE_QUEUE_MAX (256 * 1024)

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct smtp_conn *c = w->c;
    free(w->buf);
    free(w);
    if (c->throttled && !c->closing && !c->shutting &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < WRITE_QUEUE_MAX / 2) {
        c->throttled = 0;
        if (c->reading)
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
}

static void raw_write(struct smtp_conn *c, struct strbuf *b)
{
    if (!b->len || c->closing)
        return;
    struct write_req *w = xmalloc(sizeof(*w));
    size_t len;
    w->c = c;
    w->buf = strbuf_detach(b, &len);
    uv_buf_t ub = uv_buf_init(w->buf, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_write) != 0) {
        free(w->buf);
        free(w);
        return;
    }
    if (!c->throttled && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > WRITE_QUEUE_MAX) {
        c->throttled = 1;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

static void conn_close(struct smtp_conn *c);

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct smtp_conn *c = req->data;
    free(req);
    conn_close(c);
}

static void conn_restart_timer(struct smtp_conn *c);
static void on_timeout(uv_timer_t *t);

/* Ends the connection once what was written has left (TLS close_notify
 * first); a peer that never reads is closed hard by the timer. */
static void conn_shutdown(struct smtp_conn *c)
{
    c->shutting = 1;
    if (c->tls) {
        tls_conn_close_notify(c->tls, &c->net);
        raw_write(c, &c->net);
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_shutdown_t *req = xmalloc(sizeof(*req));
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        conn_close(c);
        return;
    }
    conn_restart_timer(c);
}

/* Writes what the session said; finishes a close the session asked for. */
static void conn_flush(struct smtp_conn *c)
{
    if (c->closing)
        return;
    if (c->out.len) {
        if (!c->tls) {
            raw_write(c, &c->out);
        } else if (tls_conn_ready(c->tls)) {
            if (tls_conn_write(c->tls, c->out.data, c->out.len, &c->net) != 0)
                c->shutting = 1;
            strbuf_reset(&c->out);
            raw_write(c, &c->net);
        }
    }
    if (c->sess && smtp_session_closing(c->sess) && !c->shutting) {
        if (strcmp(c->outcome, "reset") == 0)
            c->outcome = "quit";   /* QUIT, or the session gave up (too many errors) */
        conn_shutdown(c);
        return;
    }
    conn_restart_timer(c);
}

/* ---- session callbacks ------------------------------------------------------- */

static void io_write(void *o, const char *buf, size_t len)
{
    struct smtp_conn *c = o;
    strbuf_append_n(&c->out, buf, len);
}

static void io_starttls(void *o)
{
    struct smtp_conn *c = o;
    /* The 220 must leave in plaintext, before the handshake begins. */
    raw_write(c, &c->out);
    strbuf_reset(&c->out);
    if (!c->srv->tls)
        panic("%s: STARTTLS without a TLS context", __func__);
    c->tls = tls_conn_new(c->srv->tls);
}

static void io_close(void *o)
{
    /* conn_flush() sees smtp_session_closing() and shuts the stream down. */
}

static void conn_release(struct smtp_conn *c);
static void conn_maybe_free(struct smtp_conn *c);

static void on_auth_timer_close(uv_handle_t *h)
{
    struct smtp_conn *c = h->data;
    free(h);
    c->handles--;
    conn_maybe_free(c);
}

static void auth_answer(struct smtp_conn *c)
{
    if (!c->closing) {
        smtp_session_auth_done(c->sess, c->auth_user, c->auth_result);
        conn_flush(c);
    }
    OPENSSL_cleanse(c->auth_user, sizeof(c->auth_user));
    conn_release(c);
}

static void on_auth_delay(uv_timer_t *t)
{
    struct smtp_conn *c = t->data;
    uv_close((uv_handle_t *)t, on_auth_timer_close);
    c->auth_timer = NULL;
    auth_answer(c);
}

static void auth_work(uv_work_t *req)
{
    struct smtp_conn *c = req->data;
    struct smtp_server *s = c->srv;
    c->auth_result = s->hooks.auth_verify(s->hooks.opaque, c->auth_user, c->auth_pass) ? 1 : 0;
    OPENSSL_cleanse(c->auth_pass, sizeof(c->auth_pass));
}

static void auth_after(uv_work_t *req, int status);

static int auth_blocked(const struct smtp_server *s, const struct limit_entry *e)
{
    return e->auth_failures >= s->conf.auth_max_failures;
}

static int auth_budget_full(const struct smtp_server *s, const struct limit_entry *e)
{
    return e->auth_failures + e->auth_pending >= s->conf.auth_max_failures;
}

static void auth_drop_user(struct smtp_conn *c)
{
    c->auth_ue->conns--;
    c->auth_ue = NULL;
}

/* Starts the password check, waits for a running one to end, or refuses
 * (454) while the IP or the user name is blocked. */
static void auth_try(struct smtp_conn *c)
{
    struct smtp_server *s = c->srv;
    struct limit_entry *ip = c->ipe, *user = c->auth_ue;
    int64_t now = mono_ms();
    entry_expire(s, ip, now);
    entry_expire(s, user, now);
    c->auth_waiting = 0;
    if (auth_blocked(s, ip) || auth_blocked(s, user)) {
        log_kv(LOG_WARN, "AUTH refused: too many failures", "client", ip->key, NULL);
        OPENSSL_cleanse(c->auth_pass, sizeof(c->auth_pass));
        auth_drop_user(c);
        c->auth_result = -1;   /* blocked: no hash is even computed */
        auth_answer(c);
        return;
    }
    if (auth_budget_full(s, ip) || auth_budget_full(s, user)) {
        c->auth_waiting = 1;
        return;
    }
    ip->auth_pending++;
    user->auth_pending++;
    c->auth_work.data = c;
    if (uv_queue_work(s->loop, &c->auth_work, auth_work, auth_after) != 0) {
        OPENSSL_cleanse(c->auth_pass, sizeof(c->auth_pass));
        auth_after(&c->auth_work, -1);
    }
}

/* A check ended: attempts waiting for the budget may go on (or get 454). */
static void auth_wake(struct smtp_server *s)
{
    for (struct smtp_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->auth_waiting && !c->closing)
            auth_try(c);
    }
}

static void auth_after(uv_work_t *req, int status)
{
    struct smtp_conn *c = req->data;
    struct smtp_server *s = c->srv;
    struct limit_entry *ip = c->ipe, *user = c->auth_ue;
    if (status != 0)
        c->auth_result = -1;
    ip->auth_pending--;
    user->auth_pending--;
    if (c->auth_result > 0) {
        user->auth_failures = 0;   /* this user's only: see the top of the file */
    } else if (c->auth_result == 0) {
        /* Counted now, before the back-off: attempts that start meanwhile see it. */
        int64_t now = mono_ms();
        ip->auth_failures++;
        ip->last_failure_ms = now;
        user->auth_failures++;
        user->last_failure_ms = now;
        metric_inc(s->m_auth_fail);
        log_kv(LOG_WARN, "AUTH failed", "client", ip->key, NULL);
    }
    unsigned failures = ip->auth_failures > user->auth_failures ? ip->auth_failures : user->auth_failures;
    auth_drop_user(c);
    auth_wake(s);
    if (c->auth_result == 0 && !c->closing) {
        /* Back-off: each failure from this IP or for this user waits longer before the 535. */
        int64_t delay = s->conf.auth_delay_ms * (int64_t)failures;
        if (delay > s->conf.auth_delay_max_ms)
            delay = s->conf.auth_delay_max_ms;
        if (delay > 0) {
            c->auth_timer = xmalloc(sizeof(uv_timer_t));
            uv_timer_init(s->loop, c->auth_timer);
            c->auth_timer->data = c;
            c->handles++;
            uv_timer_start(c->auth_timer, on_auth_delay, (uint64_t)delay, 0);
            return;
        }
    }
    auth_answer(c);
}

static void io_auth(void *o, const char *user, const char *pass)
{
    struct smtp_conn *c = o;
    snprintf(c->auth_user, sizeof(c->auth_user), "%s", user);
    snprintf(c->auth_pass, sizeof(c->auth_pass), "%s", pass);
    c->auth_ue = entry_get(&c->srv->auth_users, c->auth_user);
    c->auth_ue->conns++;
    c->refs++;
    auth_try(c);
}

static void io_submit(void *o, struct smtp_message *m)
{
    struct smtp_conn *c = o;
    if (c->tls) {
        m->tls_version = tls_conn_version(c->tls);
        m->tls_cipher = tls_conn_cipher(c->tls);
    }
    c->refs++;
    c->srv->hooks.submit(c->srv->hooks.opaque, c, m);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    buf->base = read_buffer;
    buf->len = sizeof(read_buffer);
}

static void io_flow(void *o, int reading)
{
    struct smtp_conn *c = o;
    if (c->closing || c->shutting)
        return;
    c->reading = reading;
    if (reading && !c->throttled)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    else if (!reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
}

void smtp_server_submit_done(struct smtp_conn *c, int code, const char *text)
{
    if (!c->closing) {
        smtp_session_submit_done(c->sess, code, text);
        conn_flush(c);
    }
    conn_release(c);
}

/* ---- connection lifetime ------------------------------------------------------- */

static void conn_free(struct smtp_conn *c)
{
    struct smtp_server *s = c->srv;
    c->ipe->conns--;   /* here, not at close: an AUTH answer may still use ipe */
    smtp_session_free(c->sess);
    strbuf_free(&c->pre);
    tls_conn_free(c->tls);
    strbuf_free(&c->out);
    strbuf_free(&c->net);
    strbuf_free(&c->plain);
    free(c);
    ip_sweep(s);
}

static void conn_maybe_free(struct smtp_conn *c)
{
    if (c->closing && c->handles == 0 && c->refs == 0)
        conn_free(c);
}

static void conn_release(struct smtp_conn *c)
{
    c->refs--;
    conn_maybe_free(c);
}

static void resume_accepting(struct smtp_server *s);

static void on_conn_handle_close(uv_handle_t *h)
{
    struct smtp_conn *c = h->data;
    c->handles--;
    conn_maybe_free(c);
}

static void conn_close(struct smtp_conn *c)
{
    if (c->closing)
        return;
    struct smtp_server *s = c->srv;
    c->closing = 1;
    metric_inc(session_metric(c->outcome));
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_conns--;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_close);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_close);
    if (c->auth_waiting) {
        /* never started: nothing will answer it */
        c->auth_waiting = 0;
        OPENSSL_cleanse(c->auth_pass, sizeof(c->auth_pass));
        auth_drop_user(c);
        c->refs--;
    }
    if (c->auth_timer) {
        uv_timer_stop(c->auth_timer);
        /* The delayed answer will never be given: drop its reference now. */
        uv_close((uv_handle_t *)c->auth_timer, on_auth_timer_close);
        c->auth_timer = NULL;
        c->refs--;
    }
    /* A descriptor came free: accepting may go on. */
    if (s->paused)
        resume_accepting(s);
}

/* Why three limits: the idle timeouts restart on every read, so a client
 * sending a byte now and then would hold its connection (and a share of
 * max_connections) forever.  The session deadline bounds a session whatever
 * it sends; the DATA rate ends a message trickled in far more slowly than
 * any device sends, long before that deadline; the junk command limit in
 * smtp_session ends NOOP loops.  A message that keeps up the DATA rate is
 * not cut by the deadline (a large attachment over a slow uplink): the
 * deadline applies again once its DATA ends. */
static int deadline_applies(const struct smtp_conn *c)
{
    return c->srv->conf.session_timeout_ms > 0 && !c->shutting && !c->rate_on;
}

static void conn_arm_timer(struct smtp_conn *c, int64_t now)
{
    struct smtp_server *s = c->srv;
    int64_t at = c->idle_at_ms;
    if (deadline_applies(c) && c->started_ms + s->conf.session_timeout_ms < at)
        at = c->started_ms + s->conf.session_timeout_ms;
    if (c->rate_on && c->window_end_ms < at)
        at = c->window_end_ms;
    uv_timer_start(&c->timer, on_timeout, (uint64_t)(at > now ? at - now : 1), 0);
}

static void conn_restart_timer(struct smtp_conn *c)
{
    struct smtp_server *s = c->srv;
    int64_t now = mono_ms();
    if (!c->sess) {   /* the PROXY header, or the 421 after it, has this long */
        c->idle_at_ms = c->started_ms + PROXY_TIMEOUT_MS;
        conn_arm_timer(c, now);
        return;
    }
    int in_data = smtp_session_in_data(c->sess);
    int64_t ms = in_data ? s->conf.data_timeout_ms : s->conf.command_timeout_ms;
    c->idle_at_ms = now + (ms > 0 ? ms : 1);
    if (!in_data || !s->conf.min_data_rate || s->conf.data_rate_window_ms <= 0) {
        c->rate_on = 0;
    } else if (!c->rate_on) {
        c->rate_on = 1;
        c->window_end_ms = now + s->conf.data_rate_window_ms;
        c->window_bytes = 0;
    }
    conn_arm_timer(c, now);
}

static void conn_timed_out(struct smtp_conn *c, const char *why, const char *outcome)
{
    log_kv(LOG_INFO, "session timed out", "client", c->ipe->key, "reason", why, NULL);
    c->outcome = outcome;
    if (strcmp(outcome, "too_slow") == 0)
        smtp_session_too_slow(c->sess);
    else
        smtp_session_timeout(c->sess);
    conn_flush(c);
}

static void on_timeout(uv_timer_t *t)
{
    struct smtp_conn *c = t->data;
    struct smtp_server *s = c->srv;
    if (c->shutting) {
        /* the goodbye was never read (the write queue does not drain): the
         * shutdown would wait forever, so close hard */
        conn_close(c);
        return;
    }
    if (!c->sess) {
        log_kv(LOG_INFO, "connection closed: no PROXY header in time", "peer", c->ipe->key, NULL);
        c->outcome = "proxy_error";
        conn_close(c);
        return;
    }
    if (smtp_session_busy(c->sess)) {
        conn_restart_timer(c);   /* the client waits for us, not the other way */
        return;
    }
    int64_t now = mono_ms();
    if (deadline_applies(c) && now >= c->started_ms + s->conf.session_timeout_ms) {
        conn_timed_out(c, "session time limit", "timeout");
        return;
    }
    if (c->rate_on && now >= c->window_end_ms) {
        /* Reading stopped on our side (replies not read): not the sender's fault. */
        if (c->reading && !c->throttled &&
            c->window_bytes * 1000 < s->conf.min_data_rate * (uint64_t)s->conf.data_rate_window_ms) {
            conn_timed_out(c, "data rate too low", "too_slow");
            return;
        }
        c->window_end_ms = now + s->conf.data_rate_window_ms;
        c->window_bytes = 0;
    }
    if (now >= c->idle_at_ms) {
        conn_timed_out(c, "idle", "timeout");
        return;
    }
    conn_arm_timer(c, now);
}

/* Received bytes, plaintext or TLS, into the session. */
static void conn_input(struct smtp_conn *c, const char *buf, size_t n)
{
    if (!c->tls) {
        smtp_session_input(c->sess, buf, n);
        conn_flush(c);
        return;
    }
    int was_ready = tls_conn_ready(c->tls);
    strbuf_reset(&c->plain);
    int rc = tls_conn_feed(c->tls, buf, n, &c->plain, &c->net);
    raw_write(c, &c->net);
    if (rc == -EPROTO) {
        log_kv(LOG_INFO, "TLS failed", "client", c->ipe->key, NULL);
        c->outcome = "tls_error";
        conn_close(c);
        return;
    }
    if (c->plain.len)
        smtp_session_input(c->sess, c->plain.data, c->plain.len);
    if (rc == -ECONNRESET) {
        conn_close(c);
        return;
    }
    if (!was_ready && tls_conn_ready(c->tls))
        log_kv(LOG_DEBUG, "TLS established", "client", c->ipe->key, "version", tls_conn_version(c->tls),
               NULL);
    conn_flush(c);
}

/* The session begins: banner now (or after the TLS handshake). */
static void conn_start(struct smtp_conn *c)
{
    struct smtp_server *s = c->srv;
    struct smtp_session_io io = { c, io_write, io_starttls, io_close, io_auth, io_submit, io_flow };
    s->conf.session.tls_available = s->tls != NULL;
    if (c->lst->conf.implicit_tls)
        c->tls = tls_conn_new(s->tls);
    c->sess = smtp_session_new(&s->conf.session, &io, c->ipe->key, c->lst->conf.implicit_tls);
    if (c->lst->conf.require_auth)
        smtp_session_require_auth(c->sess);
    c->started_ms = mono_ms();
    smtp_session_start(c->sess);
    conn_flush(c);
}

/* Refuses a connection whose session has not begun: 421 and close. */
static void conn_refuse(struct smtp_conn *c, const char *status, const char *why)
{
    struct smtp_server *s = c->srv;
    strbuf_appendf(&c->out, "421 %s %s Error: %s\r\n", status, s->conf.session.hostname, why);
    raw_write(c, &c->out);
    metric_inc(s->m_refused);
    c->outcome = "refused";
    log_kv(LOG_INFO, "connection refused", "client", c->ipe->key, "reason", why, NULL);
    conn_shutdown(c);
}

/* Bytes before the session on a PROXY listener: the header, perhaps with
 * the start of the dialogue (a TLS ClientHello) behind it. */
static void conn_proxy_input(struct smtp_conn *c, const char *buf, size_t n)
{
    struct smtp_server *s = c->srv;
    size_t room = PROXY_HEADER_MAX - c->pre.len;
    size_t take = n < room ? n : room;
    strbuf_append_n(&c->pre, buf, take);
    struct proxy_source src;
    const char *why;
    int used = proxy_header_parse((const unsigned char *)c->pre.data, c->pre.len, &src, &why);
    if (used == 0 && c->pre.len == PROXY_HEADER_MAX)
        used = -1, why = "PROXY header too long";
    if (used == 0)
        return;
    if (used < 0) {
        log_kv(LOG_WARN, "PROXY header refused", "peer", c->ipe->key, "reason", why, NULL);
        c->outcome = "proxy_error";
        conn_close(c);
        return;
    }
    if (!src.local) {
        struct limit_entry *e = ip_get(s, src.addr);
        c->ipe->conns--;
        c->ipe = e;
        int full = e->conns >= s->conf.max_per_ip;
        e->conns++;
        ip_sweep(s);
        if (full) {
            conn_refuse(c, "4.7.0", "too many connections from your address");
            return;
        }
    }
    /* What followed the header: in pre (from earlier reads) and in buf. */
    size_t in_pre = c->pre.len - (size_t)used;
    char *rest = xmalloc(in_pre + (n - take) + 1);
    memcpy(rest, c->pre.data + used, in_pre);
    memcpy(rest + in_pre, buf + take, n - take);
    size_t rest_len = in_pre + (n - take);
    strbuf_free(&c->pre);
    conn_start(c);
    if (rest_len && !c->closing && !c->shutting)
        conn_input(c, rest, rest_len);
    free(rest);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct smtp_conn *c = st->data;
    if (n == 0)
        return;
    if (n < 0) {
        conn_close(c);
        return;
    }
    c->window_bytes += (uint64_t)n;
    if (!c->sess)
        conn_proxy_input(c, buf->base, (size_t)n);
    else
        conn_input(c, buf->base, (size_t)n);
}

static void conn_new(struct smtp_server *s, int fd, const char *ip, const struct listener *l)
{
    struct smtp_conn *c = xcalloc(1, sizeof(*c));
    c->srv = s;
    c->lst = l;
    c->outcome = "reset";
    c->started_ms = mono_ms();
    strbuf_init(&c->out);
    strbuf_init(&c->net);
    strbuf_init(&c->plain);
    strbuf_init(&c->pre);
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->handles++;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->handles++;
    c->ipe = ip_get(s, ip);
    c->ipe->conns++;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        close(fd);
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    metric_inc(s->m_connections);
    c->reading = 1;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (l->conf.proxy)
        conn_restart_timer(c);   /* the header's deadline */
    else
        conn_start(c);
}

/* ---- accepting --------------------------------------------------------------- */

static void on_resume_timer(uv_timer_t *t)
{
    resume_accepting(t->data);
}

static void pause_accepting(struct smtp_server *s)
{
    if (s->paused)
        return;
    s->paused = 1;
    for (size_t i = 0; i < s->n_lst; i++)
        if (s->lst[i].active)
            uv_poll_stop(&s->lst[i].poll);
    log_kv(LOG_WARN, "descriptor limit reached: accepting paused", NULL);
    uv_timer_start(&s->resume_timer, on_resume_timer, ACCEPT_PAUSE_MS, 0);
}

static void on_listen(uv_poll_t *p, int status, int events);

static void resume_accepting(struct smtp_server *s)
{
    if (!s->paused || !s->accepting)
        return;
    s->paused = 0;
    uv_timer_stop(&s->resume_timer);
    for (size_t i = 0; i < s->n_lst; i++)
        if (s->lst[i].active)
            uv_poll_start(&s->lst[i].poll, UV_READABLE, on_listen);
    log_kv(LOG_INFO, "accepting resumed", NULL);
}

/* 421 with the enhanced status (4.7.0 a limit, 4.3.2 shutting down). */
static void refuse(struct smtp_server *s, int fd, const char *ip, const char *status, const char *why)
{
    char msg[256];
    int n = snprintf(msg, sizeof(msg), "421 %s %s Error: %s\r\n", status, s->conf.session.hostname, why);
    /* Best effort on a fresh socket: the buffer is empty, this does not block. */
    if (write(fd, msg, (size_t)n) < 0)
        (void)0;
    close(fd);
    metric_inc(s->m_refused);
    metric_inc(session_metric("refused"));
    log_kv(LOG_INFO, "connection refused", "client", ip, "reason", why, NULL);
}

static void on_listen(uv_poll_t *p, int status, int events)
{
    struct listener *l = p->data;
    struct smtp_server *s = l->srv;
    for (int i = 0; i < 64 && s->accepting && !s->paused; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(s);
            return;
        }
        char ip[64] = "unknown";
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof(ip));
        if (s->draining) {
            refuse(s, fd, ip, "4.3.2", "shutting down, try again later");
            continue;
        }
        if (l->conf.proxy && s->conf.n_proxy_from) {
            struct netaddr peer;
            if (netaddr_parse(ip, &peer) != 0 || !cidr_any(s->conf.proxy_from, s->conf.n_proxy_from, &peer)) {
                /* A PROXY header is only believed from the balancer. */
                refuse(s, fd, ip, "4.7.0", "not a trusted proxy (proxy_from)");
                continue;
            }
        }
        /* Behind a PROXY header the peer is the balancer: its client's
         * address is known, and counted, once the header has come. */
        struct limit_entry *e = l->conf.proxy ? NULL : ip_get(s, ip);
        if (s->n_conns >= s->conf.max_connections) {
            refuse(s, fd, ip, "4.7.0", "too many connections");
            ip_sweep(s);
        } else if (e && e->conns >= s->conf.max_per_ip) {
            refuse(s, fd, ip, "4.7.0", "too many connections from your address");
        } else if (l->conf.implicit_tls && !s->tls) {
            close(fd);
        } else {
            conn_new(s, fd, ip, l);
        }
    }
}

static int listen_on(struct smtp_server *s, const struct smtp_listener_conf *lc, char *err, size_t errlen)
{
    const char *addr = lc->addr;
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof(host)) {
        snprintf(err, errlen, "listen address '%s' is not host:port", addr);
        return -EINVAL;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    int port = atoi(colon + 1);
    struct sockaddr_in sin = { 0 };
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    if (port <= 0 || port > 65535 || inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
        snprintf(err, errlen, "listen address '%s': need an IPv4 address and a port", addr);
        return -EINVAL;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 511) != 0) {
        int e = errno;
        snprintf(err, errlen, "listen %s: %s", addr, strerror(e));
        if (fd >= 0)
            close(fd);
        return -e;
    }
    struct listener *l = &s->lst[s->n_lst++];
    l->srv = s;
    l->fd = fd;
    l->conf = *lc;
    l->active = 1;
    uv_poll_init(s->loop, &l->poll, fd);
    l->poll.data = l;
    uv_poll_start(&l->poll, UV_READABLE, on_listen);
    return 0;
}

struct smtp_server *smtp_server_new(uv_loop_t *loop, const struct smtp_server_conf *conf,
                                    const struct smtp_server_hooks *hooks, char *err, size_t errlen)
{
    struct smtp_server *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->conf = *conf;
    s->hooks = *hooks;
    s->accepting = 1;
    s->m_connections = metric_counter("mailfleet_ingest_connections_total", "SMTP connections accepted", NULL);
    s->m_refused = metric_counter("mailfleet_ingest_connections_refused_total",
                                  "SMTP connections refused at a connection limit", NULL);
    s->m_auth_fail = metric_counter("mailfleet_ingest_auth_failures_total", "failed SMTP AUTH attempts", NULL);
    uv_timer_init(loop, &s->resume_timer);
    s->resume_timer.data = s;
    for (size_t i = 0; i < conf->n_listeners && i < SMTP_MAX_LISTENERS; i++)
        if (listen_on(s, &conf->listeners[i], err, errlen) != 0)
            goto fail;
    return s;
fail:
    smtp_server_close(s);
    uv_run(loop, UV_RUN_NOWAIT);
    smtp_server_free(s);
    return NULL;
}

void smtp_server_set_tls(struct smtp_server *s, struct tls_ctx *ctx)
{
    tls_ctx_free(s->tls);
    s->tls = ctx;
}

void smtp_server_stop_accepting(struct smtp_server *s)
{
    if (!s->accepting)
        return;
    s->accepting = 0;
    uv_timer_stop(&s->resume_timer);
    for (size_t i = 0; i < s->n_lst; i++)
        if (s->lst[i].active) {
            s->lst[i].active = 0;
            uv_poll_stop(&s->lst[i].poll);
            uv_close((uv_handle_t *)&s->lst[i].poll, NULL);
            close(s->lst[i].fd);
        }
}

void smtp_server_drain(struct smtp_server *s)
{
    s->draining = 1;
    resume_accepting(s);   /* a pause for EMFILE must not hide the 421s */
}

void smtp_server_shutdown_sessions(struct smtp_server *s)
{
    for (struct smtp_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->closing || c->shutting)
            continue;
        if (!c->sess) {   /* no session yet (PROXY header awaited) */
            c->outcome = "shutdown";
            conn_close(c);
            continue;
        }
        if (smtp_session_busy(c->sess))
            continue;
        c->outcome = "shutdown";
        smtp_session_shutdown(c->sess);
        conn_flush(c);
    }
}

size_t smtp_server_sessions(const struct smtp_server *s)
{
    return s->n_conns;
}

void smtp_server_close(struct smtp_server *s)
{
    smtp_server_stop_accepting(s);
    for (struct smtp_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        c->outcome = "shutdown";
        conn_close(c);
    }
    uv_close((uv_handle_t *)&s->resume_timer, NULL);
}

void smtp_server_free(struct smtp_server *s)
{
    if (!s)
        return;
    tls_ctx_free(s->tls);
    struct limit_entry **lists[] = { &s->ips, &s->auth_users };
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        while (*lists[i]) {
            struct limit_entry *e = *lists[i];
            *lists[i] = e->next;
            free(e);
        }
    free(s);
}
