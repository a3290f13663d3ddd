/* smtp_server — libuv listeners and connections around smtp_session.
 *
 * Up to three listeners, each plain (STARTTLS offered when a TLS context is
 * set) or implicit TLS; a listener may require AUTH before MAIL (530 5.7.0:
 * the submission port) and may expect a PROXY protocol header (v1 or v2,
 * from a load balancer) before anything else: its client address is then
 * the header's, for every limit, the logs and Received:, and per-IP limits
 * are checked once it has come.  A connection to such a listener from a
 * peer outside proxy_from (when set), or one whose header is missing, bad
 * or later than 10 s, is closed; on a listener without it, a PROXY line is
 * refused (421 4.7.0) like any forged header.  Accepting is done on our own listening sockets watched
 * with uv_poll, so accepting can pause (descriptor limit) and resume without
 * spinning or dropping the backlog.  Limits: connections total and per client
 * IP (421 4.7.0), command and data idle timeouts, a whole-session deadline
 * and a minimum DATA rate (421 4.4.2), AUTH failure
 * back-off per client IP and per user name (a delay growing with each
 * failure; 454 4.7.0 once max_failures is reached, until block_ms passes;
 * a check in flight counts until it ends, so parallel attempts get no more
 * than max_failures checks).  AUTH checks run in the libuv thread pool
 * through hooks->auth_verify. */
#ifndef MF_INGEST_SMTP_SERVER_H
#define MF_INGEST_SMTP_SERVER_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "smtp_session.h"

struct smtp_server;
struct smtp_conn;
struct tls_ctx;

struct cidr;

#define SMTP_MAX_LISTENERS 3

struct smtp_listener_conf {
    const char *name;              /* "smtp", "smtps", "submission": logs */
    const char *addr;              /* "127.0.0.1:2525" */
    int implicit_tls, require_auth, proxy;
};

struct smtp_server_conf {
    struct smtp_listener_conf listeners[SMTP_MAX_LISTENERS];
    size_t n_listeners;
    const struct cidr *proxy_from; /* peers that may send PROXY headers (none: any) */
    size_t n_proxy_from;
    unsigned max_connections, max_per_ip;
    int64_t command_timeout_ms, data_timeout_ms;   /* idle time; every read restarts it */
    int64_t session_timeout_ms;    /* whole session, whatever the client sends (0 = none) */
    uint64_t min_data_rate;        /* DATA bytes/s over each window (0 = none) */
    int64_t data_rate_window_ms;   /* that window; the first one is the grace */
    int64_t auth_delay_ms, auth_delay_max_ms, auth_block_ms;
    unsigned auth_max_failures;
    struct smtp_session_conf session;   /* tls_available is set by the server */
};

struct smtp_server_hooks {
    void *opaque;
    /* Loop thread: make m durable, then call smtp_server_submit_done(conn, ...). */
    void (*submit)(void *opaque, struct smtp_conn *conn, struct smtp_message *m);
    /* Thread pool: 1 if the credentials are right. */
    int (*auth_verify)(void *opaque, const char *user, const char *pass);
};

struct smtp_server *smtp_server_new(uv_loop_t *loop, const struct smtp_server_conf *conf,
                                    const struct smtp_server_hooks *hooks, char *err, size_t errlen);
/* Takes ownership of ctx (NULL = no TLS); replaces the previous one (SIGHUP
 * reload: open connections keep theirs). */
void smtp_server_set_tls(struct smtp_server *s, struct tls_ctx *ctx);
void smtp_server_stop_accepting(struct smtp_server *s);
/* Draining: the listeners stay open and every new connection is answered
 * "421 4.3.2 ... shutting down" and closed (a client or load balancer learns
 * at once to go elsewhere, instead of a refused or hanging connect), while
 * open sessions finish; smtp_server_close ends it. */
void smtp_server_drain(struct smtp_server *s);
/* 421 to every session (those waiting for the queue get their answer first). */
void smtp_server_shutdown_sessions(struct smtp_server *s);
size_t smtp_server_sessions(const struct smtp_server *s);
/* Closes every handle; run the loop afterwards until it ends, then free. */
void smtp_server_close(struct smtp_server *s);
void smtp_server_free(struct smtp_server *s);

/* Answer for a message handed to hooks->submit; conn may have gone away. */
void smtp_server_submit_done(struct smtp_conn *c, int code, const char *text);

#endif
