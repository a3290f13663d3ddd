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
 * Streaming: MHD's few threads serve every connection, and call a body's
 * reader only when the client's socket takes more, so a slow reader costs a
 * buffer, never a thread.  A file-store object is pread from its own
 * descriptor, opened only if it is the version the HEAD saw (else one more
 * HEAD), so its bytes always match the Content-Length and ETag sent.  An S3
 * object is read by ranged GETs of at most 1 MiB straight into the
 * response's one buffer, each when the client has taken the last: no temp
 * file, memory bounded per download, and each GET only passes on the object
 * version (ETag) the HEAD saw, so a replaced object ends the connection
 * short of Content-Length instead of splicing two files.  (A fetch does
 * hold its thread for one GET: a ranged GET per MiB keeps that short, the
 * store gives it 15 s at most, after which the download is cut, and
 * max_downloads bounds how many there are.)
 *
 * Limits: a GET holds one of max_downloads slots per process and one of
 * max_downloads_per_ip per client (links_limits: behind trusted_proxies the
 * client is taken from X-Forwarded-For) from just after the token and
 * revocation checks, before any store request, so a refusal costs the store
 * nothing, until MHD frees the response (sent or abandoned), or at once
 * when the answer has no body.  Over the client's share: 429, it is that
 * client's doing; process full: 503, a retry elsewhere or later will do;
 * both with Retry-After.  HEAD takes none.
 *
 * Revocations: a background thread reads the compacted
 * mailfleet.revocations from the start (group-less, so every links process
 * sees every record) into an LMDB copy, keyed by SHA-256 of the target, and
 * keeps following it; /readyz holds until the first full pass, and until
 * then requests get 503 (fail closed).  Each answered request with a valid
 * token becomes a Download event on mailfleet.events, queued when the
 * answer starts and published in batches by a thread of its own
 * (links_events.h): its bytes are those the response offers (Content-Length),
 * not what the client took; a download cut later counts in
 * mailfleet_links_downloads_cut_total.  mailfleet_links_bytes_total counts
 * the bytes actually read into responses.
 *
 * Writes only the LMDB copy and the events topic; reads the store. */
#include <errno.h>
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
#include "ids.h"
#include "jsonx.h"
#include "kv.h"
#include "links.h"
#include "links_events.h"
#include "links_limits.h"
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
    /* 64 x (1 MiB S3 buffer + MHD and socket state) stays well inside the
     * pod's 256 Mi next to the process itself (~40 Mi) */
    { "links", "max_downloads", CONFIG_INT, "64",
      "attachment downloads at once per process, each holding up to 1 MiB; over it 503 (0: no limit)" },
    /* enough for an office behind one NAT address or a download manager's
     * parallel ranges; one address holds at most an eighth of the process */
    { "links", "max_downloads_per_ip", CONFIG_INT, "8",
      "downloads at once per client address (IPv6: per /64); over it 429 (0: no limit)" },
    { "links", "trusted_proxies", CONFIG_LIST, "",
      "peers (addresses or CIDRs, e.g. the ingress pods) whose X-Forwarded-For names the client" },
    CONFIG_KEYS_END
};

struct links {
    struct tokens *tok;
    struct store *st;
    struct kv *kv;
    struct bus *bus;
    struct links_limits *limits;   /* the worker's is never freed: MHD gives a slot back when
                                      it frees a response, which can be after the worker
                                      returned; a gateway's goes with links_gateway_free */
    int redirect;
    int64_t poll_ms;
    atomic_int loaded;
    atomic_int inflight;      /* handlers and store reads running; shutdown waits for 0 */
    stop_flag_t *stop;
    pthread_t reader;
    struct links_events *events;   /* Download events (links_events.h) */
    struct metric *m_ok, *m_forbidden, *m_missing, *m_bytes;
    struct metric *m_downloads, *m_refused_ip, *m_refused_total, *m_cut;
};

/* A request handler or a body's store read counts itself in inflight
 * before it reads `loaded`, so shutdown (loaded = 0, then wait for
 * inflight == 0) never closes what one still uses.  1: go on. */
static int links_enter(struct links *l)
{
    atomic_fetch_add(&l->inflight, 1);
    return atomic_load(&l->loaded);
}

static void links_leave(struct links *l)
{
    atomic_fetch_sub(&l->inflight, 1);
}

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

#define DOWNLOAD_CHUNK   (1024 * 1024)   /* one ranged GET, and the response's buffer */
#define RETRY_AFTER      "10"
#define REFUSAL_LOG_MS   60000

/* One request's body, from its handler until MHD frees the response (sent,
 * client gone or timed out) or, when the answer has no body, until the
 * handler ends; freeing it gives its slot back. */
struct download {
    struct links *l;
    int fd;                   /* file store: pread from here; -1: ranged store GETs */
    uint64_t off;             /* where the body starts in the object */
    char *key;
    char version[sizeof(((struct store_object *)0)->version)];
    char client[LINKS_CLIENT_LEN];
    int slot;                 /* holds a links_limits slot (a GET, not a HEAD) */
    char content_type[128];   /* lives as long as the response */
};

static long download_read_file(void *opaque, uint64_t pos, char *buf, size_t max)
{
    struct download *d = opaque;
    ssize_t n;
    do
        n = pread(d->fd, buf, max, (off_t)(d->off + pos));
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    metric_add(d->l->m_bytes, (double)n);
    return (long)n;
}

struct chunk_sink {
    char *buf;
    size_t max, n;
};

static int chunk_sink_write(void *opaque, const void *buf, size_t len)
{
    struct chunk_sink *k = opaque;
    if (len > k->max - k->n)
        return 1;   /* more than the range asked for */
    memcpy(k->buf + k->n, buf, len);
    k->n += len;
    return 0;
}

/* MHD calls this once the client has taken everything before pos, with its
 * buffer (DOWNLOAD_CHUNK bytes, or less at the end): one ranged GET fills
 * it.  Anything short of a full chunk of the same version ends the
 * connection, so the client sees a cut download, never a spliced one. */
static long download_read_store(void *opaque, uint64_t pos, char *buf, size_t max)
{
    struct download *d = opaque;
    struct links *l = d->l;
    struct chunk_sink k = { buf, max, 0 };
    char err[256] = "the gateway is stopping";
    int rc = -ESHUTDOWN;
    if (links_enter(l)) {
        rc = d->version[0]
                 ? store_get_version(l->st, d->key, d->version, d->off + pos, max, chunk_sink_write, &k, err,
                                     sizeof(err))
                 : store_get_cb(l->st, d->key, d->off + pos, max, chunk_sink_write, &k, err, sizeof(err));
    }
    links_leave(l);
    if (rc == 0 && k.n == max) {
        metric_add(l->m_bytes, (double)max);
        return (long)max;
    }
    if (rc == 0)
        snprintf(err, sizeof(err), "the object is shorter than its HEAD said");
    metric_inc(l->m_cut);
    log_kv(LOG_WARN, "download cut short", "key", d->key, "error", err, NULL);
    return -1;
}

static void download_slot_give(struct links *l, const char *client)
{
    links_limits_release(l->limits, client);
    metric_add(l->m_downloads, -1);
}

static void download_free(void *opaque)
{
    struct download *d = opaque;
    if (d->fd >= 0)
        close(d->fd);
    if (d->slot)
        download_slot_give(d->l, d->client);
    free(d->key);
    free(d);
}

/* 1 with a slot taken for client; 0 with resp filled: 429 when the client
 * holds its share already, 503 when the process is full (not the client's
 * doing: another replica or a later try will do). */
static int download_slot_take(struct links *l, const char *client, struct http_response *resp)
{
    enum links_slot s = links_limits_take(l->limits, client);
    if (s == LINKS_SLOT_TAKEN) {
        metric_add(l->m_downloads, 1);
        return 1;
    }
    int mine = s == LINKS_SLOT_CLIENT_FULL;
    metric_inc(mine ? l->m_refused_ip : l->m_refused_total);
    if (links_limits_log_refusal(l->limits, client, now_ms(), REFUSAL_LOG_MS))
        log_kv(LOG_WARN, "download refused (logged once a minute per client)", "client", client, "limit",
               mine ? "max_downloads_per_ip" : "max_downloads", NULL);
    http_response_text(resp, mine ? 429 : 503, NULL,
                       mine ? "too many downloads from your address at once\n" : "too many downloads at once\n");
    http_response_header(resp, "Retry-After", RETRY_AFTER);
    return 0;
}

/* A GET or HEAD's body-to-be; a GET takes its slot here, before any store
 * request, so a refused request costs the store nothing.  NULL with resp
 * filled (429 or 503): refused. */
static struct download *download_new(struct links *l, const struct http_request *req, struct http_response *resp)
{
    int head = strcmp(req->method, "HEAD") == 0;
    if (!head && !download_slot_take(l, req->client_ip, resp))
        return NULL;
    struct download *d = xcalloc(1, sizeof(*d));
    d->l = l;
    d->fd = -1;
    d->slot = !head;
    snprintf(d->client, sizeof(d->client), "%s", req->client_ip);
    return d;
}

/* HEADs the object into so and sets where d reads it: the file store's own
 * file, opened now and only if it is the version the HEAD saw (a put renames
 * another file over the key: HEAD again, once), so the bytes served are
 * those so describes; or ranged GETs of that version (S3).  0, or a negative
 * errno with err set. */
static int download_find(struct download *d, const char *key, struct store_object *so, char *err, size_t errlen)
{
    for (int tries = 0;; tries++) {
        memset(so, 0, sizeof(*so));
        int rc = store_head(d->l->st, key, so, err, errlen);
        if (rc != 0)
            return rc;
        rc = store_open_version(d->l->st, key, so->version, err, errlen);
        if (rc >= 0) {
            d->fd = rc;
            return 0;
        }
        if (rc == -ENOTSUP) {
            d->key = xstrdup(key);
            snprintf(d->version, sizeof(d->version), "%s", so->version);
            return 0;
        }
        if (rc != -ESTALE || tries > 0)
            return rc;
    }
}

static void download_event(struct links *l, const struct http_request *req, const char *inbound_id,
                           const char *key, const char *name, int status, uint64_t bytes)
{
    struct event_mail m = { .message_id = inbound_id, .inbound_id = id_valid(inbound_id) ? inbound_id : NULL };
    size_t len;
    char *v = event_record_download(&m, req->client_ip ? req->client_ip : "", http_header(req, "User-Agent"),
                                    name, key, status, bytes, now_ms(), &len);
    links_events_add(l->events, inbound_id, v, len);   /* published off the request path */
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

/* The object itself, once the link is good and d has found the object: 304
 * for a matching If-None-Match, 416 or 206 for a Range, else 200, streamed.
 * 1: the response owns d now; 0: the answer has no body, d is the caller's. */
static int serve_link_object(struct links *l, const struct http_request *req, struct http_response *resp,
                             const struct link_fields *lf, const struct store_object *so, struct download *d)
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
        return 0;
    }
    if (pr < 0) {
        http_response_text(resp, 416, NULL, "range not satisfiable\n");
        snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)so->size);
        http_response_header(resp, "Content-Range", cr);
        download_event(l, req, lf->inbound_id, lf->key, lf->name, 416, 0);
        return 0;
    }
    if (pr == 1) {
        status = 206;
        snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)off,
                 (unsigned long long)(off + len - 1), (unsigned long long)so->size);
    }
    int head = strcmp(req->method, "HEAD") == 0;
    d->off = off;
    snprintf(d->content_type, sizeof(d->content_type), "%s",
             so->content_type[0] ? so->content_type : "application/octet-stream");
    resp->status = status;
    resp->content_type = d->content_type;
    resp->stream = d->fd >= 0 ? download_read_file : download_read_store;
    resp->stream_free = download_free;
    resp->stream_opaque = d;
    resp->stream_size = len;
    if (d->fd < 0 && !head)
        resp->stream_block = len < DOWNLOAD_CHUNK ? (size_t)len : DOWNLOAD_CHUNK;
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
    /* the bytes offered: the event is queued before the client has taken any */
    download_event(l, req, lf->inbound_id, lf->key, lf->name, status, head ? 0 : len);
    return 1;
}

/* GET or HEAD /a/<token>: verify the token, refuse a revoked link, take a
 * download slot, find the object, then redirect to the store (when
 * configured) or serve it. */
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
    struct download *d = download_new(l, req, resp);
    if (!d) {
        free(payload);
        return;
    }
    struct store_object so;
    char err[256];
    int rc = download_find(d, lf.key, &so, err, sizeof(err));
    char *url = NULL;
    int streamed = 0;
    if (rc == -ENOENT) {
        metric_inc(l->m_missing);
        download_event(l, req, lf.inbound_id, lf.key, lf.name, 404, 0);
        http_response_text(resp, 404, NULL, "not found\n");
    } else if (rc != 0) {
        log_kv(LOG_WARN, "cannot find the object in the store", "error", err, NULL);
        http_response_text(resp, 503, NULL, "store unavailable\n");
    } else if (l->redirect && (url = store_presign_get(l->st, lf.key, 60, now_ms() / 1000, err, sizeof(err)))) {
        http_response_text(resp, 302, NULL, "");
        http_response_header(resp, "Location", url);
        http_response_header(resp, "Cache-Control", "no-store");
        download_event(l, req, lf.inbound_id, lf.key, lf.name, 302, 0);
        free(url);
    } else {
        streamed = serve_link_object(l, req, resp, &lf, &so, d);
    }
    if (!streamed)
        download_free(d);
    free(payload);
}

/* The request as the rest of the gateway sees it: client_ip is the client
 * behind a trusted proxy (limits, Download events, logs). */
void links_serve(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct links *l = opaque;
    if (links_enter(l)) {
        char client[LINKS_CLIENT_LEN];
        char *xff = http_header_joined(req, "X-Forwarded-For");
        links_limits_client(l->limits, req->client_ip, xff, client);
        free(xff);
        struct http_request r = *req;
        r.client_ip = client;
        serve_link_token(l, &r, resp);
    } else {
        http_response_text(resp, 503, NULL, "not ready\n");
    }
    links_leave(l);
}

/* One series per status in the process, whichever gateway counts. */
static void links_metrics(struct links *l)
{
    l->m_ok = metric_counter("mailfleet_links_requests_total", "Link requests", "status=\"served\"");
    l->m_forbidden = metric_counter("mailfleet_links_requests_total", "Link requests", "status=\"forbidden\"");
    l->m_missing = metric_counter("mailfleet_links_requests_total", "Link requests", "status=\"missing\"");
    l->m_bytes = metric_counter("mailfleet_links_bytes_total",
                               "Attachment bytes read into responses (a cut download counts what it got)", NULL);
    l->m_downloads = metric_gauge("mailfleet_links_downloads_inflight",
                                 "Attachment downloads holding a slot (max_downloads)", NULL);
    l->m_refused_ip = metric_counter("mailfleet_links_downloads_refused_total",
                                    "Downloads refused by a limit (429 per client, 503 in total)",
                                    "limit=\"per_ip\"");
    l->m_refused_total = metric_counter("mailfleet_links_downloads_refused_total",
                                       "Downloads refused by a limit (429 per client, 503 in total)",
                                       "limit=\"total\"");
    l->m_cut = metric_counter("mailfleet_links_downloads_cut_total",
                             "Downloads ended early by the store (error, or the object replaced)", NULL);
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
    l->events = links_events_start(bus, 0);   /* no thread: each event is produced at once */
    char err[256];
    l->limits = links_limits_new(NULL, 0, 64, 8, err, sizeof(err));
    if (!l->limits)
        panic("%s: %s", __func__, err);
    links_metrics(l);
    atomic_store(&l->loaded, 1);   /* no reader: kv holds what is revoked */
    return l;
}

void links_gateway_free(struct links *l)
{
    if (l) {
        links_events_stop(l->events);
        links_limits_free(l->limits);
    }
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
    char **proxies = NULL;
    size_t n_proxies = config_list(env->cfg, "links", "trusted_proxies", &proxies);
    l.limits = links_limits_new(proxies, n_proxies, config_int(env->cfg, "links", "max_downloads"),
                                config_int(env->cfg, "links", "max_downloads_per_ip"), err, sizeof(err));
    config_list_free(proxies, n_proxies);
    if (!l.limits) {
        log_kv(LOG_ERROR, "links cannot start", "error", err, NULL);
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
    l.events = links_events_start(l.bus, 1);
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
    links_events_stop(l.events);   /* what the last requests queued goes out first */
    l.events = NULL;
    links_close(lp);
    log_kv(LOG_INFO, "links stopped", NULL);
    return 0;
#undef l
}

const struct worker_def links_worker = { "links", links_config_keys, links_run, 1 };
