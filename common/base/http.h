/* http — the HTTP side of every worker (libmicrohttpd, internal thread pool).
 *
 * An internal server also serves /metrics, /healthz (alive: no liveness
 * check says a loop is stuck) and
 * /readyz (all readiness checks pass); a public one (unsubscribe, SNS, link
 * redirects: reachable from the internet) does not, since those pages tell
 * anyone queue depths, failure counts and which dependency is down.  Workers
 * add routes by path prefix; a handler gets the parsed request and fills a
 * response.  Bodies are bounded (max_body). */
#ifndef MF_HTTP_H
#define MF_HTTP_H
#include <stddef.h>
#include <stdint.h>

struct http_server;

struct http_request {
    const char *method;          /* "GET", "POST", ... */
    const char *path;            /* URL path, percent-decoded by MHD */
    const char *client_ip;
    const char *body;            /* NUL-terminated; body_len bytes */
    size_t body_len;
    void *conn;                  /* opaque (MHD connection) */
    /* A request made without a server (conn NULL: tests, fuzzing) carries
     * its headers and query arguments here: name, value, ..., NULL. */
    const char *const *headers;
    const char *const *query;
};

struct http_response {
    int status;
    const char *content_type;    /* default text/plain; charset=utf-8 */
    char *body;                  /* malloc'd, taken by the server */
    size_t body_len;
    /* extra headers, name/value pairs, malloc'd strings, taken by the server */
    char *headers[16];
    size_t n_headers;
    /* streaming instead of body: called until it returns 0 (end) or <0 (error),
     * only when the client's socket can take more, with buf one buffer of
     * stream_block bytes (0: 64 KiB) per response; stream_free runs once the
     * response is done with, sent or not (client gone, timed out) */
    long (*stream)(void *opaque, uint64_t pos, char *buf, size_t max);
    void (*stream_free)(void *opaque);
    void *stream_opaque;
    uint64_t stream_size;        /* total length, or UINT64_MAX when unknown */
    size_t stream_block;
};

/* Query argument or request header lookup (valid during the handler);
 * header names are case-insensitive. */
const char *http_query(const struct http_request *r, const char *name);
const char *http_header(const struct http_request *r, const char *name);
/* Every line of a request header joined with ", " (RFC 9110 5.3: the same
 * list), malloc'd, or NULL when absent: for lists a proxy may append a line
 * to (X-Forwarded-For), where http_header would give only the first. */
char *http_header_joined(const struct http_request *r, const char *name);
void http_response_header(struct http_response *resp, const char *name, const char *value);
void http_response_text(struct http_response *resp, int status, const char *ctype, const char *body);

typedef void (*http_handler)(void *opaque, const struct http_request *req, struct http_response *resp);
typedef int (*http_ready_check)(void *opaque, char *why, size_t whylen);  /* 1 = ready */

enum http_exposure { HTTP_INTERNAL, HTTP_PUBLIC };

/* listen "127.0.0.1:9100". */
struct http_server *http_server_new(const char *listen, enum http_exposure exposure, size_t max_body,
                                    char *err, size_t errlen);
void http_route(struct http_server *s, const char *prefix, http_handler h, void *opaque);
void http_ready_add(struct http_server *s, const char *name, http_ready_check chk, void *opaque);
/* Stops routing prefix to (h, opaque) and waits for its running handlers:
 * after it returns, opaque may be freed.  Same for a readiness check. */
void http_route_remove(struct http_server *s, const char *prefix, void *opaque);
void http_ready_remove(struct http_server *s, const char *name, void *opaque);
/* Liveness: /healthz answers 503 (naming the check) while one says 0 — a
 * loop stuck in one batch, never a peer that is down (that is readiness). */
void http_live_add(struct http_server *s, const char *name, http_ready_check chk, void *opaque);
void http_live_remove(struct http_server *s, const char *name, void *opaque);
int  http_server_start(struct http_server *s, char *err, size_t errlen);
void http_server_free(struct http_server *s);   /* stops; accepts NULL */

#endif
