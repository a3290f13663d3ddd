/* http — libmicrohttpd with an internal thread pool.
 *
 * Request bodies are collected up to max_body (413 beyond), then the route's
 * handler runs once with the whole body.  Responses are a buffer or a stream
 * callback (downloads).  /metrics, /healthz and /readyz are built in on
 * internal servers only (see the header). */
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "strbuf.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct route {
    char *prefix;
    http_handler h;
    void *opaque;
    int inflight;     /* handlers running now */
    int removed;      /* http_route_remove: no new requests */
};

struct ready {
    char *name;
    http_ready_check chk;
    void *opaque;
    int live;   /* a liveness check (/healthz), else readiness (/readyz) */
};

struct http_server {
    struct sockaddr_in addr;
    size_t max_body;
    struct MHD_Daemon *d;
    pthread_mutex_t lock;   /* routes may be added while running (mailfleet run) */
    pthread_cond_t idle;    /* a route's last in-flight handler returned */
    struct route routes[32];
    size_t n_routes;
    struct ready readies[64];
    size_t n_ready;
    struct metric *ready_gauge;   /* mailfleet_ready: /readyz as a metric, for alert rules */
};

struct conn_state {
    struct strbuf body;
    int too_big;
};

/* name, value, ... NULL: the value of the first entry named name. */
static const char *pairs_lookup(const char *const *pairs, const char *name, int case_insensitive)
{
    for (size_t i = 0; pairs && pairs[i] && pairs[i + 1]; i += 2)
        if (case_insensitive ? strcasecmp(pairs[i], name) == 0 : strcmp(pairs[i], name) == 0)
            return pairs[i + 1];
    return NULL;
}

const char *http_query(const struct http_request *r, const char *name)
{
    if (!r->conn)
        return pairs_lookup(r->query, name, 0);
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_header(const struct http_request *r, const char *name)
{
    if (!r->conn)
        return pairs_lookup(r->headers, name, 1);
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

struct header_join {
    const char *name;
    struct strbuf out;
    int found;
};

static enum MHD_Result header_join_one(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct header_join *j = cls;
    if (key && value && strcasecmp(key, j->name) == 0) {
        if (j->found)
            strbuf_append(&j->out, ", ");
        strbuf_append(&j->out, value);
        j->found = 1;
    }
    return MHD_YES;
}

char *http_header_joined(const struct http_request *r, const char *name)
{
    struct header_join j = { name, { 0 }, 0 };
    strbuf_init(&j.out);
    if (r->conn)
        MHD_get_connection_values(r->conn, MHD_HEADER_KIND, header_join_one, &j);
    else   /* a request built without a server (tests, fuzzing) */
        for (size_t i = 0; r->headers && r->headers[i] && r->headers[i + 1]; i += 2)
            header_join_one(&j, MHD_HEADER_KIND, r->headers[i], r->headers[i + 1]);
    if (!j.found) {
        strbuf_free(&j.out);
        return NULL;
    }
    return strbuf_detach(&j.out, NULL);
}

void http_response_header(struct http_response *resp, const char *name, const char *value)
{
    if (resp->n_headers + 2 > sizeof(resp->headers) / sizeof(resp->headers[0]))
        panic("%s: too many response headers", __func__);
    resp->headers[resp->n_headers++] = xstrdup(name);
    resp->headers[resp->n_headers++] = xstrdup(value);
}

void http_response_text(struct http_response *resp, int status, const char *ctype, const char *body)
{
    resp->status = status;
    resp->content_type = ctype;
    free(resp->body);
    resp->body = xstrdup(body);
    resp->body_len = strlen(body);
}

/* Runs every readiness check; returns 1 when all pass.  report may be NULL. */
/* The readiness (live 0) or liveness (live 1) checks, with a line each in
 * report when given. */
static int ready_eval(struct http_server *s, struct strbuf *report, int live)
{
    int ok = 1;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n_ready; i++) {
        if (s->readies[i].live != live)
            continue;
        char why[256] = "";
        int r = s->readies[i].chk(s->readies[i].opaque, why, sizeof(why));
        if (report)
            strbuf_appendf(report, "%s: %s%s%s\n", s->readies[i].name,
                           r ? (live ? "alive" : "ready") : (live ? "stuck" : "not ready"),
                           why[0] ? ": " : "", why);
        ok &= r ? 1 : 0;
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static void serve_metrics(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct http_server *s = opaque;
    struct strbuf b;
    metric_set(s->ready_gauge, ready_eval(s, NULL, 0));
    strbuf_init(&b);
    metrics_render(&b);
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
    resp->body = strbuf_detach(&b, &resp->body_len);
}

/* Alive unless a liveness check says a loop is stuck (not when a peer is
 * unreachable: that is readiness). */
static void serve_healthz(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct http_server *s = opaque;
    struct strbuf b;

    strbuf_init(&b);
    int ok = ready_eval(s, &b, 1);
    if (ok) {
        strbuf_free(&b);
        http_response_text(resp, 200, NULL, "ok\n");
        return;
    }
    resp->status = 503;
    resp->body = strbuf_detach(&b, &resp->body_len);
}

static void serve_readyz(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct http_server *s = opaque;
    struct strbuf b;

    strbuf_init(&b);
    int ok = ready_eval(s, &b, 0);
    if (b.len == 0)
        strbuf_append(&b, "ready\n");
    resp->status = ok ? 200 : 503;
    resp->body = strbuf_detach(&b, &resp->body_len);
}

struct stream_ctx {
    long (*fn)(void *, uint64_t, char *, size_t);
    void (*free_fn)(void *);
    void *opaque;
};

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream_ctx *sc = cls;
    long n = sc->fn(sc->opaque, pos, buf, max);
    if (n == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return n;
}

static void stream_free(void *cls)
{
    struct stream_ctx *sc = cls;
    if (sc->free_fn)
        sc->free_fn(sc->opaque);
    free(sc);
}

static enum MHD_Result send_response(struct MHD_Connection *conn, struct http_response *resp)
{
    struct MHD_Response *r;

    if (resp->stream) {  /* MHD itself skips the body for HEAD */
        struct stream_ctx *sc = xcalloc(1, sizeof(*sc));
        sc->fn = resp->stream;
        sc->free_fn = resp->stream_free;
        sc->opaque = resp->stream_opaque;
        r = MHD_create_response_from_callback(resp->stream_size == UINT64_MAX ? MHD_SIZE_UNKNOWN
                                                                                : resp->stream_size,
                                              resp->stream_block ? resp->stream_block : 64 * 1024,
                                              stream_reader, sc, stream_free);
        if (!r)
            stream_free(sc);   /* MHD frees it only once it has taken it */
    } else {
        r = MHD_create_response_from_buffer(resp->body_len, resp->body ? resp->body : (char *)"",
                                            resp->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        resp->body = NULL;
    }
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type",
                            resp->content_type ? resp->content_type : "text/plain; charset=utf-8");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    for (size_t i = 0; i + 1 < resp->n_headers; i += 2) {
        MHD_add_response_header(r, resp->headers[i], resp->headers[i + 1]);
        free(resp->headers[i]);
        free(resp->headers[i + 1]);
    }
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)(resp->status ? resp->status : 200), r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct http_server *s = cls;
    struct conn_state *st = *con_cls;

    if (!st) {
        st = xcalloc(1, sizeof(*st));
        strbuf_init(&st->body);
        *con_cls = st;
        return MHD_YES;
    }
    if (*upload_size) {
        if (st->body.len + *upload_size > s->max_body)
            st->too_big = 1;
        else
            strbuf_append_n(&st->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }

    struct http_response resp = { 0 };
    if (st->too_big) {
        http_response_text(&resp, 413, NULL, "request body too large\n");
        return send_response(conn, &resp);
    }

    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char ip[INET6_ADDRSTRLEN] = "";
    if (ci && ci->client_addr) {
        if (ci->client_addr->sa_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)ci->client_addr)->sin_addr, ip, sizeof(ip));
        else if (ci->client_addr->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ci->client_addr)->sin6_addr, ip, sizeof(ip));
    }
    struct http_request req = { method, url, ip, st->body.data ? st->body.data : "", st->body.len, conn };

    struct route *hit = NULL;
    size_t best = 0;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n_routes; i++) {
        size_t pl = strlen(s->routes[i].prefix);
        if (!s->routes[i].removed && strncmp(url, s->routes[i].prefix, pl) == 0 && pl >= best) {
            hit = &s->routes[i];
            best = pl;
        }
    }
    if (hit)
        hit->inflight++;   /* entries never move: the pointer stays valid */
    pthread_mutex_unlock(&s->lock);

    if (!hit) {
        http_response_text(&resp, 404, NULL, "not found\n");
    } else {
        hit->h(hit->opaque, &req, &resp);
        pthread_mutex_lock(&s->lock);
        if (--hit->inflight == 0)
            pthread_cond_broadcast(&s->idle);
        pthread_mutex_unlock(&s->lock);
    }
    return send_response(conn, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct conn_state *st = *con_cls;
    if (st) {
        strbuf_free(&st->body);
        free(st);
        *con_cls = NULL;
    }
}

struct http_server *http_server_new(const char *listen, enum http_exposure exposure, size_t max_body,
                                    char *err, size_t errlen)
{
    char host[64];
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    if (!colon || (size_t)(colon - listen) >= sizeof(host)) {
        snprintf(err, errlen, "listen address must be host:port, got '%s'", listen ? listen : "");
        return NULL;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    struct http_server *s = xcalloc(1, sizeof(*s));
    s->addr.sin_family = AF_INET;
    s->addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &s->addr.sin_addr) != 1) {
        snprintf(err, errlen, "listen address '%s': not an IPv4 address", listen);
        free(s);
        return NULL;
    }
    s->max_body = max_body;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    s->ready_gauge = metric_gauge("mailfleet_ready", "1 when every readiness check passes (/readyz 200)",
                                  NULL);
    if (exposure == HTTP_INTERNAL) {
        http_route(s, "/metrics", serve_metrics, s);
        http_route(s, "/healthz", serve_healthz, s);
        http_route(s, "/readyz", serve_readyz, s);
    }
    return s;
}

void http_route(struct http_server *s, const char *prefix, http_handler h, void *opaque)
{
    pthread_mutex_lock(&s->lock);
    if (s->n_routes == sizeof(s->routes) / sizeof(s->routes[0]))
        panic("%s: too many routes", __func__);
    s->routes[s->n_routes++] = (struct route){ xstrdup(prefix), h, opaque, 0, 0 };
    pthread_mutex_unlock(&s->lock);
}

void http_route_remove(struct http_server *s, const char *prefix, void *opaque)
{
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n_routes; i++) {
        struct route *r = &s->routes[i];
        if (r->removed || r->opaque != opaque || strcmp(r->prefix, prefix) != 0)
            continue;
        r->removed = 1;
        while (r->inflight > 0)
            pthread_cond_wait(&s->idle, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
}

static void check_remove(struct http_server *s, const char *name, void *opaque, int live)
{
    pthread_mutex_lock(&s->lock);   /* checks run under this lock: none is running */
    for (size_t i = 0; i < s->n_ready; i++)
        if (s->readies[i].opaque == opaque && s->readies[i].live == live && strcmp(s->readies[i].name, name) == 0) {
            free(s->readies[i].name);
            memmove(&s->readies[i], &s->readies[i + 1], (s->n_ready - i - 1) * sizeof(s->readies[0]));
            s->n_ready--;
            break;
        }
    pthread_mutex_unlock(&s->lock);
}

static void check_add(struct http_server *s, const char *name, http_ready_check chk, void *opaque, int live)
{
    pthread_mutex_lock(&s->lock);
    if (s->n_ready == sizeof(s->readies) / sizeof(s->readies[0]))
        panic("%s: too many readiness and liveness checks", __func__);
    s->readies[s->n_ready++] = (struct ready){ xstrdup(name), chk, opaque, live };
    pthread_mutex_unlock(&s->lock);
}

void http_ready_remove(struct http_server *s, const char *name, void *opaque)
{
    check_remove(s, name, opaque, 0);
}

void http_ready_add(struct http_server *s, const char *name, http_ready_check chk, void *opaque)
{
    check_add(s, name, chk, opaque, 0);
}

void http_live_remove(struct http_server *s, const char *name, void *opaque)
{
    check_remove(s, name, opaque, 1);
}

void http_live_add(struct http_server *s, const char *name, http_ready_check chk, void *opaque)
{
    check_add(s, name, chk, opaque, 1);
}

int http_server_start(struct http_server *s, char *err, size_t errlen)
{
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0,
                            NULL, NULL, on_request, s,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&s->addr,
                            MHD_OPTION_THREAD_POOL_SIZE, 4u,
                            MHD_OPTION_CONNECTION_TIMEOUT, 60u,
                            MHD_OPTION_CONNECTION_LIMIT, 1000u,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_END);
    if (!s->d) {
        char a[32];
        inet_ntop(AF_INET, &s->addr.sin_addr, a, sizeof(a));
        snprintf(err, errlen, "cannot listen on %s:%u (in use?)", a, ntohs(s->addr.sin_port));
        return -1;
    }
    return 0;
}

void http_server_free(struct http_server *s)
{
    if (!s)
        return;
    if (s->d)
        MHD_stop_daemon(s->d);
    for (size_t i = 0; i < s->n_routes; i++)
        free(s->routes[i].prefix);
    for (size_t i = 0; i < s->n_ready; i++)
        free(s->readies[i].name);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    free(s);
}
