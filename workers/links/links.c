/* links — the attachment link gateway: GET|HEAD /a/<token> on the public
 * HTTP server.
 *
 * A token is an HMAC-signed "key|inbound id|sha256|name" with an expiry
 * (common/tokens).  A request is answered 403 when the token is bad,
 * tampered, signed by an unknown key, expired (403 rather than 410, so a
 * probe learns nothing about which), or revoked; 404 when the object is
 * gone; otherwise the object is streamed from store:attachments with
 * Content-Length, an ETag of its SHA-256, a safe Content-Disposition
 * (always attachment: nothing a device sent is rendered in our origin) and
 * single byte-range support (206 / 416).  With an S3 store and
 * redirect = true it answers 302 to a 60-second pre-signed URL instead.
 *
 * Revocations: a background thread reads the compacted
 * mailfleet.revocations from the start (group-less, so every links process
 * sees every record) into an LMDB copy, keyed by SHA-256 of the target, and
 * keeps following it; /readyz holds until the first full pass, and until
 * then requests get 503 (fail closed).  Each answered request with a valid
 * token becomes a Download event on mailfleet.events.
 *
 * Writes only the LMDB copy and the events topic; reads the store. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "admin.h"
#include "bus.h"
#include "common_config.h"
#include "http.h"
#include "digest.h"
#include "event_record.h"
#include "fsutil.h"
#include "ids.h"
#include "jsonx.h"
#include "kv.h"
#include "links.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "strbuf.h"
#include "timeutil.h"
#include "tokens.h"
#include "topics.h"
#include "worker.h"

const struct config_key links_config_keys[] = {
    { "links", "metrics_listen", CONFIG_STR, "127.0.0.1:9106", "metrics/health when run alone" },
    { "links", "public_listen", CONFIG_STR, "127.0.0.1:8025", "GET|HEAD /a/<token> when run alone" },
    { "links", "redirect", CONFIG_BOOL, "false",
      "S3 store: answer 302 to a 60 s pre-signed URL instead of streaming" },
    { "links", "revocation_poll", CONFIG_DURATION, "250ms", "how often mailfleet.revocations is read" },
    CONFIG_KEYS_END
};

struct links {
    struct tokens *tok;
    struct store *st;
    struct kv *kv;
    struct bus *bus;
    int redirect;
    int64_t poll_ms;
    atomic_int loaded;
    atomic_int inflight;      /* handlers running; shutdown waits for 0 */
    stop_flag_t *stop;
    pthread_t reader;
    struct metric *m_ok, *m_forbidden, *m_missing, *m_bytes;
};

/* --- revocation copy ------------------------------------------------- */

void links_revocation_key(char kind, const char *target, size_t len, char out[66])
{
    out[0] = kind;
    sha256_hex(target, len, out + 1);
}

static void apply_revocation(struct links *l, const struct bus_record *r)
{
    if (!r->key || r->key_len == 0)
        return;
    char k[66];
    if (!r->value) {   /* tombstone: lifts whichever kind it was */
        links_revocation_key('l', r->key, r->key_len, k);
        kv_del(l->kv, k, 65);
        links_revocation_key('m', r->key, r->key_len, k);
        kv_del(l->kv, k, 65);
        return;
    }
    char err[256] = "kind is neither link nor message";
    const char *kind = NULL, *target = NULL;
    json_t *o = jsonx_record_parse(r->value, r->value_len, SCHEMA_REVOCATION, err, sizeof(err));
    if (o && jsonx_want_str(o, "kind", 1, &kind, err, sizeof(err)) == 0 &&
        jsonx_want_str(o, "target", 1, &target, err, sizeof(err)) == 0 &&
        (strcmp(kind, "link") == 0 || strcmp(kind, "message") == 0)) {
        links_revocation_key(kind[0] == 'l' ? 'l' : 'm', target, strlen(target), k);
        kv_put(l->kv, k, 65, "", 0, 0);
    } else {
        log_kv(LOG_WARN, "ignoring a malformed revocation record", "error", err, NULL);
    }
    json_decref(o);
}

static void *revocation_reader(void *arg)
{
    struct links *l = arg;
    int64_t next[64];
    for (int i = 0; i < 64; i++)
        next[i] = -1;
    while (!*l->stop) {
        struct bus_partition_stats st[64];
        char err[256];
        int np = bus_topic_stats(l->bus, TOPIC_REVOCATIONS, NULL, st, 64, err, sizeof(err));
        /* Fail closed: only a complete, error-free pass makes the gateway
         * ready; a missing topic means nothing was ever revoked. */
        int complete = np >= 0 || np == -ENOENT;
        if (np < 0)
            np = 0;
        for (int i = 0; i < np; i++) {
            int p = st[i].partition;
            if (p < 0 || p >= 64)
                continue;
            if (next[p] < st[i].low)
                next[p] = st[i].low;
            while (next[p] < st[i].high && !*l->stop) {
                struct bus_record *r = NULL;
                int rc = bus_read_at(l->bus, TOPIC_REVOCATIONS, p, next[p], &r, 1000);
                if (rc < 0) {
                    complete = 0;   /* read it again next pass */
                    break;
                }
                if (rc == 1) {
                    apply_revocation(l, r);
                    bus_record_free(r);
                }
                next[p]++;
            }
        }
        if (complete)
            atomic_store(&l->loaded, 1);
        sleep_unless_stopped(l->poll_ms, l->stop);
    }
    return NULL;
}

static int links_ready(void *opaque, char *why, size_t whylen)
{
    struct links *l = opaque;
    if (atomic_load(&l->loaded))
        return 1;
    snprintf(why, whylen, "revocations not loaded yet");
    return 0;
}

static int revoked(struct links *l, const char *token, const char *inbound_id)
{
    char k[66];
    links_revocation_key('l', token, strlen(token), k);
    if (kv_get(l->kv, k, 65, NULL, NULL) == 1)
        return 1;
    links_revocation_key('m', inbound_id, strlen(inbound_id), k);
    return kv_get(l->kv, k, 65, NULL, NULL) == 1;
}

/* --- serving ---------------------------------------------------------- */

int links_parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
    if (!h)
        return 0;
    if (strncmp(h, "bytes=", 6) != 0 || strchr(h, ','))
        return 0;   /* other units, several ranges: serve it all (RFC 9110) */
    const char *p = h + 6;
    char *e;
    if (*p == '-') {
        unsigned long long n = strtoull(p + 1, &e, 10);
        if (e == p + 1 || *e || n == 0)
            return -1;
        if (size == 0)
            return -1;
        if (n > size)
            n = size;
        *off = size - n;
        *len = n;
        return 1;
    }
    if (*p < '0' || *p > '9')
        return -1;
    unsigned long long a = strtoull(p, &e, 10);
    if (*e != '-')
        return -1;
    const char *q = e + 1;
    unsigned long long b = size ? size - 1 : 0;
    if (*q) {
        if (*q < '0' || *q > '9')
            return -1;
        b = strtoull(q, &e, 10);
        if (*e || b < a)
            return -1;
        if (b >= size)
            b = size - 1;
    }
    if (a >= size)
        return -1;
    *off = a;
    *len = b - a + 1;
    return 1;
}

/* RFC 6266 / 8187: an ASCII fallback and the UTF-8 name percent-encoded. */
void links_content_disposition(const char *name, struct strbuf *out)
{
    strbuf_append(out, "attachment; filename=\"");
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        strbuf_append_n(out, (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\') ? (const char *)p : "_", 1);
    strbuf_append(out, "\"; filename*=UTF-8''");
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            strchr("!#$&+-.^_`|~", *p))
            strbuf_append_n(out, (const char *)p, 1);
        else
            strbuf_appendf(out, "%%%02X", *p);
    }
}

struct file_stream {
    int fd;
    uint64_t off;
    char content_type[128];   /* lives as long as the response */
};

static long file_stream_read(void *opaque, uint64_t pos, char *buf, size_t max)
{
    struct file_stream *fs = opaque;
    ssize_t n;
    do
        n = pread(fs->fd, buf, max, (off_t)(fs->off + pos));
    while (n < 0 && errno == EINTR);
    return n < 0 ? -1 : (long)n;
}

static void file_stream_free(void *opaque)
{
    struct file_stream *fs = opaque;
    close(fs->fd);
    free(fs);
}

static int fd_write_cb(void *opaque, const void *buf, size_t len)
{
    return fs_write_all(*(int *)opaque, buf, len) < 0 ? -1 : 0;
}

/* The object (or its range) as a descriptor to pread from: the file
 * store's own file, or for S3 the range fetched into an unlinked temp
 * file.  *base is where the range starts in that descriptor. */
static int open_object(struct links *l, const char *key, uint64_t off, uint64_t len, uint64_t *base)
{
    char *path = store_local_path(l->st, key);
    if (path) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        free(path);
        *base = off;
        return fd;
    }
    char tmpl[] = "/tmp/mf-link-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0)
        return -1;
    unlink(tmpl);
    char err[256];
    if (store_get_cb(l->st, key, off, len, fd_write_cb, &fd, err, sizeof(err)) != 0) {
        close(fd);
        return -1;
    }
    *base = 0;
    return fd;
}

static void download_event(struct links *l, const struct http_request *req, const char *inbound_id,
                           const char *key, const char *name, int status, uint64_t bytes)
{
    struct event_mail m = { .message_id = inbound_id, .inbound_id = id_valid(inbound_id) ? inbound_id : NULL };
    size_t len;
    char *v = event_record_download(&m, req->client_ip ? req->client_ip : "", http_header(req, "User-Agent"),
                                    name, key, status, bytes, now_ms(), &len);
    struct bus_record r = { .topic = TOPIC_EVENTS, .key = inbound_id, .key_len = strlen(inbound_id),
                            .value = v, .value_len = len, .partition = -1 };
    char err[256];
    if (bus_produce(l->bus, &r, 1, 5000, err, sizeof(err)) != 0)
        log_kv(LOG_WARN, "cannot publish the download event", NULL);
    free(v);
}

static void forbidden(struct links *l, struct http_response *resp)
{
    metric_inc(l->m_forbidden);
    http_response_text(resp, 403, NULL, "forbidden\n");
}

/* What a verified token names: key|inbound id|sha256|name (transform_core.c). */
struct link_fields {
    const char *key, *inbound_id, *sha, *name;
};

/* Verifies token and splits its payload into lf, pointing into *payload
 * (the caller frees it, whatever the answer).  0, or -1: answer 403. */
static int link_token_fields(struct links *l, const char *token, char **payload, struct link_fields *lf)
{
    size_t plen = 0;
    int64_t exp = 0;
    if (strlen(token) > 8192 || tokens_verify(l->tok, token, now_ms() / 1000, payload, &plen, &exp) != TOKEN_OK)
        return -1;
    char *f[4] = { *payload, NULL, NULL, NULL };
    for (int i = 1; i < 4; i++) {
        char *bar = f[i - 1] ? strchr(f[i - 1], '|') : NULL;
        if (!bar)
            break;
        *bar = '\0';
        f[i] = bar + 1;
    }
    if (!f[3] || !store_key_valid(f[0]) || strlen(f[2]) != 64 || !*f[3])
        return -1;
    *lf = (struct link_fields){ f[0], f[1], f[2], f[3] };
    return 0;
}

/* The object itself, once the link is good and the object exists: 304 for
 * a matching If-None-Match, 416 or 206 for a Range, else 200, streamed. */
static void serve_link_object(struct links *l, const struct http_request *req, struct http_response *resp,
                              const struct link_fields *lf, const struct store_object *so)
{
    char etag[70];
    snprintf(etag, sizeof(etag), "\"%s\"", lf->sha);
    uint64_t off = 0, len = so->size;
    int status = 200;
    const char *inm = http_header(req, "If-None-Match");
    int pr = links_parse_range(http_header(req, "Range"), so->size, &off, &len);
    char cr[96];
    if (inm && strcmp(inm, etag) == 0) {
        http_response_text(resp, 304, NULL, "");
        http_response_header(resp, "ETag", etag);
        return;
    }
    if (pr < 0) {
        http_response_text(resp, 416, NULL, "range not satisfiable\n");
        snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)so->size);
        http_response_header(resp, "Content-Range", cr);
        download_event(l, req, lf->inbound_id, lf->key, lf->name, 416, 0);
        return;
    }
    if (pr == 1) {
        status = 206;
        snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)off,
                 (unsigned long long)(off + len - 1), (unsigned long long)so->size);
    }
    uint64_t base = 0;
    int fd = open_object(l, lf->key, off, len, &base);
    if (fd < 0) {
        http_response_text(resp, 503, NULL, "store unavailable\n");
        return;
    }
    struct file_stream *fs = xmalloc(sizeof(*fs));
    fs->fd = fd;
    fs->off = base;
    snprintf(fs->content_type, sizeof(fs->content_type), "%s",
             so->content_type[0] ? so->content_type : "application/octet-stream");
    resp->status = status;
    resp->content_type = fs->content_type;
    resp->stream = file_stream_read;
    resp->stream_free = file_stream_free;
    resp->stream_opaque = fs;
    resp->stream_size = len;
    struct strbuf cd;
    strbuf_init(&cd);
    links_content_disposition(lf->name, &cd);
    http_response_header(resp, "Content-Disposition", cd.data);
    strbuf_free(&cd);
    http_response_header(resp, "ETag", etag);
    http_response_header(resp, "Accept-Ranges", "bytes");
    http_response_header(resp, "X-Content-Type-Options", "nosniff");
    http_response_header(resp, "Content-Security-Policy", "sandbox; default-src 'none'");
    http_response_header(resp, "Cache-Control", "private, no-store");
    if (status == 206)
        http_response_header(resp, "Content-Range", cr);
    metric_inc(l->m_ok);
    metric_add(l->m_bytes, (double)len);
    download_event(l, req, lf->inbound_id, lf->key, lf->name, status,
                   strcmp(req->method, "HEAD") == 0 ? 0 : len);
}

/* GET or HEAD /a/<token>: verify the token, refuse a revoked link, find the
 * object, then redirect to the store (when configured) or serve it. */
static void serve_link_token(struct links *l, const struct http_request *req, struct http_response *resp)
{
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        http_response_text(resp, 405, NULL, "method not allowed\n");
        http_response_header(resp, "Allow", "GET, HEAD");
        return;
    }
    const char *token = req->path + 3;   /* after "/a/" */
    char *payload = NULL;
    struct link_fields lf;
    if (link_token_fields(l, token, &payload, &lf) < 0) {
        free(payload);
        forbidden(l, resp);
        return;
    }
    if (revoked(l, token, lf.inbound_id)) {
        download_event(l, req, lf.inbound_id, lf.key, lf.name, 403, 0);
        free(payload);
        forbidden(l, resp);
        return;
    }
    struct store_object so;
    char err[256];
    memset(&so, 0, sizeof(so));
    int rc = store_head(l->st, lf.key, &so, err, sizeof(err));
    char *url = NULL;
    if (rc == -ENOENT) {
        metric_inc(l->m_missing);
        download_event(l, req, lf.inbound_id, lf.key, lf.name, 404, 0);
        http_response_text(resp, 404, NULL, "not found\n");
    } else if (rc != 0) {
        log_kv(LOG_WARN, "store head failed", "error", err, NULL);
        http_response_text(resp, 503, NULL, "store unavailable\n");
    } else if (l->redirect && (url = store_presign_get(l->st, lf.key, 60, now_ms() / 1000, err, sizeof(err)))) {
        http_response_text(resp, 302, NULL, "");
        http_response_header(resp, "Location", url);
        http_response_header(resp, "Cache-Control", "no-store");
        download_event(l, req, lf.inbound_id, lf.key, lf.name, 302, 0);
        free(url);
    } else {
        serve_link_object(l, req, resp, &lf, &so);
    }
    free(payload);
}

/* Counted in inflight before `loaded` is read, so shutdown (loaded = 0,
 * then wait for inflight == 0) never closes what a handler still uses. */
void links_serve(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct links *l = opaque;
    atomic_fetch_add(&l->inflight, 1);
    if (!atomic_load(&l->loaded))
        http_response_text(resp, 503, NULL, "not ready\n");
    else
        serve_link_token(l, req, resp);
    atomic_fetch_sub(&l->inflight, 1);
}

/* One series per status in the process, whichever gateway counts. */
static void links_metrics(struct links *l)
{
    l->m_ok = metric_counter("mailfleet_links_requests_total", "Link requests", "status=\"served\"");
    l->m_forbidden = metric_counter("mailfleet_links_requests_total", "Link requests", "status=\"forbidden\"");
    l->m_missing = metric_counter("mailfleet_links_requests_total", "Link requests", "status=\"missing\"");
    l->m_bytes = metric_counter("mailfleet_links_bytes_total", "Attachment bytes served", NULL);
}

struct links *links_gateway_new(struct tokens *tok, struct store *st, struct kv *kv, struct bus *bus,
                                int redirect)
{
    struct links *l = xcalloc(1, sizeof(*l));
    l->tok = tok;
    l->st = st;
    l->kv = kv;
    l->bus = bus;
    l->redirect = redirect;
    links_metrics(l);
    atomic_store(&l->loaded, 1);   /* no reader: kv holds what is revoked */
    return l;
}

void links_gateway_free(struct links *l)
{
    free(l);
}

static void links_close(struct links *l)
{
    bus_close(l->bus);
    kv_close(l->kv);
    store_close(l->st);
    tokens_free(l->tok);
    l->bus = NULL;
    l->kv = NULL;
    l->st = NULL;
    l->tok = NULL;
}

/* The route stays registered on the shared public server after the worker
 * returns (`mailfleet run` frees the server last), so the state it points
 * to is static: once `loaded` is 0 it only answers 503.  One links worker
 * per process. */
static struct links links_state;

static int links_run(struct worker_env *env)
{
    struct links *lp = &links_state;
    memset(lp, 0, sizeof(*lp));
#define l (*lp)
    char err[512];
    l.stop = env->stop;
    l.redirect = config_bool(env->cfg, "links", "redirect");
    l.poll_ms = config_duration_ms(env->cfg, "links", "revocation_poll");
    if (!env->public_http) {
        log_kv(LOG_ERROR, "links needs the public HTTP server", NULL);
        return 1;
    }
    l.tok = common_tokens(env->cfg, err, sizeof(err));
    if (l.tok)
        l.st = common_store(env->cfg, "store_attachments", err, sizeof(err));
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/links", config_str(env->cfg, "mailfleet", "state_dir"));
    if (l.st)
        l.kv = kv_open_flags(dir, "revocations", 0, KV_VOLATILE, err, sizeof(err));
    struct bus_options bo = { .client_id = "mailfleet-links" };
    if (l.kv)
        l.bus = common_bus(env->cfg, &bo, err, sizeof(err));
    if (!l.bus) {
        log_kv(LOG_ERROR, "links cannot start", "error", err, NULL);
        links_close(lp);
        return 1;
    }
    /* The copy is rebuilt from the topic on every start: a revocation lifted
     * (and compacted away) while we were down must not linger. */
    if (kv_clear(l.kv) != 0) {
        log_kv(LOG_ERROR, "links cannot empty its revocation copy", NULL);
        links_close(lp);
        return 1;
    }
    links_metrics(lp);
    if (pthread_create(&l.reader, NULL, revocation_reader, lp) != 0)
        panic("%s: pthread_create", __func__);
    http_ready_add(env->http, "links-revocations", links_ready, lp);
    http_route(env->public_http, "/a/", links_serve, lp);
    worker_started(env);
    log_kv(LOG_INFO, "links serving /a/", NULL);
    while (!*env->stop)
        usleep(100 * 1000);
    pthread_join(l.reader, NULL);
    atomic_store(&l.loaded, 0);
    while (atomic_load(&l.inflight) > 0)
        usleep(10 * 1000);
    links_close(lp);
    log_kv(LOG_INFO, "links stopped", NULL);
    return 0;
#undef l
}

const struct worker_def links_worker = { "links", links_config_keys, links_run, 1 };
