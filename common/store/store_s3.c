/* store_s3 — the s3:// backend: libcurl + common/sigv4.
 *
 *   s3://<bucket>[/<prefix>][?endpoint=http://127.0.0.1:4568&region=us-east-1&path_style=1]
 *
 * endpoint defaults to https://s3.<region>.amazonaws.com, region to
 * AWS_REGION / AWS_DEFAULT_REGION / us-east-1, path_style to 0 (virtual-host:
 * https://<bucket>.<endpoint host>/<key>).  max_keys (1..1000) sets the
 * ListObjectsV2 page size, which tests force small to exercise paging.
 *
 * Every request is signed with a payload hash we computed ourselves
 * (x-amz-content-sha256), so S3 rejects a body that changed on the way: a
 * seekable fd is hashed in one pass and rewound, anything else is spooled to
 * an unlinked temp file while hashing.  Memory stays bounded either way.
 *
 * We set the Host header ourselves so the host we sign is byte for byte the
 * host curl sends.  Easy handles come from a small pool (mutex) so calls from
 * several threads reuse connections; the handles never cross threads at once.
 * Errors: 404 is -ENOENT, 416 -EINVAL, other HTTP statuses -EIO with the
 * status and S3's <Code> in err; transport failures -ECONNREFUSED,
 * -ETIMEDOUT or -EIO with curl's reason. */
#include "store_backend.h"
#include "digest.h"
#include "fsutil.h"
#include "ids.h"
#include "log.h"
#include "sigv4.h"
#include "strbuf.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define POOL_MAX      4
#define IO_CHUNK      (64 * 1024)
#define ERR_BODY_MAX  (64 * 1024)          /* an S3 error document is tiny */
#define LIST_BODY_MAX (16 * 1024 * 1024)   /* 1000 keys of 1 KB plus markup */
/* store_get_version reads a piece while its caller (a links download) holds
 * a thread that serves other clients too: each MiB asked for must arrive
 * within this, about 70 KiB/s, or the read fails -ETIMEDOUT, so a stalled
 * store cuts that download instead of freezing the thread for the 60 s the
 * low-speed check allows. */
#define PIECE_MS_PER_MIB 15000

struct s3_store {
    struct store base;
    char *bucket;
    char *prefix;         /* "" or "a/b/" (with the trailing '/') */
    char *scheme;         /* "http" / "https" */
    char *host;           /* endpoint host[:port], default port dropped */
    char *region;
    char *access_key, *secret_key, *session_token;
    int path_style;
    int max_keys;         /* 0: server default */
    pthread_mutex_t mu;
    CURL *idle[POOL_MAX];
    int n_idle;
};

static const struct store_ops s3_ops;

static struct s3_store *s3_of(struct store *s)
{
    if (s->ops != &s3_ops)
        panic("%s: not an s3 store", __func__);
    return (struct s3_store *)s;
}

static CURL *handle_get(struct s3_store *s)
{
    CURL *h = NULL;

    pthread_mutex_lock(&s->mu);
    if (s->n_idle > 0)
        h = s->idle[--s->n_idle];
    pthread_mutex_unlock(&s->mu);
    if (!h && !(h = curl_easy_init()))
        panic("%s: curl_easy_init failed", __func__);
    return h;
}

static void handle_put(struct s3_store *s, CURL *h)
{
    /* reset drops options but keeps the connection cache: the point of the pool */
    curl_easy_reset(h);
    pthread_mutex_lock(&s->mu);
    if (s->n_idle < POOL_MAX) {
        s->idle[s->n_idle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (h)
        curl_easy_cleanup(h);
}

/* ---- one request ---- */

struct s3_req {
    const char *method;         /* GET PUT HEAD DELETE */
    const char *op;             /* for error messages: "PUT key" */
    const char *key;            /* object key in the bucket (prefix applied), NULL for the bucket */
    const char *query;          /* raw "k=v&k2=v2" (values unencoded) or NULL */
    const char *payload_hash;   /* hex */
    const char *content_type;   /* PUT */
    const char *range;          /* "bytes=a-b" or NULL */
    /* upload: exactly upload_len bytes from upload_fd, or from upload_buf */
    int upload;
    int upload_fd;
    off_t upload_fd_start;      /* where the body starts in upload_fd */
    const char *upload_buf;
    uint64_t upload_len;
    uint64_t upload_done;
    /* download: 2xx bodies go to cb (or into body when cb is NULL) */
    store_write_cb cb;
    void *opaque;
    int cb_stopped;
    /* ranged GET: we check the server's Content-Range and never pass on more
     * than asked for (s3rver answers bytes=0-0 with the whole object) */
    int ranged;
    uint64_t range_off, range_len;    /* range_len 0: to the end */
    uint64_t delivered;
    int range_bad;
    /* store_get_version: nothing is passed on unless the ETag is this one */
    const char *version;
    int stale;
    long timeout_ms;            /* the whole request; 0: none (only the low-speed check) */
    int have_content_range;
    uint64_t content_range_start;
    struct strbuf body;
    size_t body_max;
    int body_overflow;
    /* from the response headers */
    long status;
    uint64_t content_length;
    int have_length;
    char content_type_out[128];
    char etag_out[128];
    int64_t last_modified_ms;
};

static size_t on_read(char *buf, size_t size, size_t nmemb, void *ud)
{
    struct s3_req *r = ud;
    size_t want = size * nmemb;
    uint64_t left = r->upload_len - r->upload_done;

    if (want > left)
        want = (size_t)left;
    if (want == 0)
        return 0;
    if (r->upload_buf) {
        memcpy(buf, r->upload_buf + r->upload_done, want);
        r->upload_done += want;
        return want;
    }
    for (;;) {
        ssize_t n = read(r->upload_fd, buf, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return CURL_READFUNC_ABORT;   /* input shrank or failed: never send a short body */
        r->upload_done += (uint64_t)n;
        return (size_t)n;
    }
}

/* curl rewinds the body when it resends a request, e.g. after a reused
 * keep-alive connection turned out to be closed by the server. */
static int on_seek(void *ud, curl_off_t offset, int origin)
{
    struct s3_req *r = ud;

    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > r->upload_len)
        return CURL_SEEKFUNC_CANTSEEK;
    if (!r->upload_buf && lseek(r->upload_fd, r->upload_fd_start + (off_t)offset, SEEK_SET) < 0)
        return CURL_SEEKFUNC_FAIL;
    r->upload_done = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static size_t on_write(char *buf, size_t size, size_t nmemb, void *ud)
{
    struct s3_req *r = ud;
    size_t n = size * nmemb;

    if (r->status >= 200 && r->status < 300 && r->cb) {
        if (r->version && strcmp(r->etag_out, r->version) != 0) {
            r->stale = 1;   /* the key holds another object now: pass on none of it */
            return 0;
        }
        if (r->ranged) {
            if (r->status != 206 || !r->have_content_range || r->content_range_start != r->range_off) {
                r->range_bad = 1;
                return 0;
            }
            if (r->range_len) {
                uint64_t left = r->range_len - r->delivered;
                if (left == 0)
                    return n;   /* swallow what the server sent beyond the range */
                if (n > left) {
                    r->delivered += left;
                    if (r->cb(r->opaque, buf, (size_t)left) != 0) {
                        r->cb_stopped = 1;
                        return 0;
                    }
                    return n;
                }
            }
            r->delivered += n;
        }
        if (r->cb(r->opaque, buf, n) != 0) {
            r->cb_stopped = 1;
            return 0;   /* makes curl stop with CURLE_WRITE_ERROR */
        }
        return n;
    }
    if (r->body.len + n > r->body_max) {
        r->body_overflow = 1;
        return 0;
    }
    strbuf_append_n(&r->body, buf, n);
    return n;
}

static int64_t parse_http_date(const char *v)
{
    struct tm tm;

    memset(&tm, 0, sizeof(tm));
    if (!strptime(v, "%a, %d %b %Y %H:%M:%S", &tm))
        return 0;
    return (int64_t)timegm(&tm) * 1000;
}

static size_t on_header(char *buf, size_t size, size_t nmemb, void *ud)
{
    struct s3_req *r = ud;
    size_t n = size * nmemb;
    char line[512];
    size_t len = n < sizeof(line) - 1 ? n : sizeof(line) - 1;

    memcpy(line, buf, len);
    line[len] = '\0';
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        line[--len] = '\0';
    if (strncmp(line, "HTTP/", 5) == 0) {
        /* a new response (after a 100 Continue): forget the previous one */
        const char *sp = strchr(line, ' ');
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        r->have_length = 0;
        r->content_type_out[0] = '\0';
        r->etag_out[0] = '\0';
        r->last_modified_ms = 0;
        r->have_content_range = 0;
        return n;
    }
    char *colon = strchr(line, ':');
    if (!colon)
        return n;
    *colon = '\0';
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (strcasecmp(line, "Content-Length") == 0) {
        r->content_length = strtoull(v, NULL, 10);
        r->have_length = 1;
    } else if (strcasecmp(line, "Content-Type") == 0) {
        snprintf(r->content_type_out, sizeof(r->content_type_out), "%s", v);
    } else if (strcasecmp(line, "Content-Range") == 0) {
        unsigned long long a;
        if (sscanf(v, "bytes %llu-", &a) == 1) {
            r->content_range_start = a;
            r->have_content_range = 1;
        }
    } else if (strcasecmp(line, "ETag") == 0) {
        snprintf(r->etag_out, sizeof(r->etag_out), "%s", v);
    } else if (strcasecmp(line, "Last-Modified") == 0) {
        r->last_modified_ms = parse_http_date(v);
    }
    return n;
}

/* ---- minimal XML: S3's replies are flat and machine-written ---- */

/* Decodes the five predefined entities and numeric references (ASCII range
 * emitted as is, others as UTF-8). */
static char *xml_unescape(const char *s, size_t n)
{
    struct strbuf b;

    strbuf_init(&b);
    strbuf_append(&b, "");
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '&') {
            strbuf_append_n(&b, &s[i], 1);
            continue;
        }
        const char *semi = memchr(s + i, ';', n - i);
        size_t elen = semi ? (size_t)(semi - (s + i)) + 1 : 0;
        static const struct { const char *ent; char c; } ents[] = {
            { "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&quot;", '"' }, { "&apos;", '\'' },
        };
        int done = 0;
        for (size_t k = 0; k < 5 && !done; k++)
            if (elen == strlen(ents[k].ent) && memcmp(s + i, ents[k].ent, elen) == 0) {
                strbuf_append_n(&b, &ents[k].c, 1);
                done = 1;
            }
        if (!done && elen > 3 && s[i + 1] == '#') {
            char *end;
            unsigned long cp = s[i + 2] == 'x' ? strtoul(s + i + 3, &end, 16) : strtoul(s + i + 2, &end, 10);
            if (end == semi && cp > 0 && cp <= 0x10FFFF) {
                char u[4];
                size_t ul;
                if (cp < 0x80) {
                    u[0] = (char)cp; ul = 1;
                } else if (cp < 0x800) {
                    u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); ul = 2;
                } else if (cp < 0x10000) {
                    u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    u[2] = (char)(0x80 | (cp & 0x3F)); ul = 3;
                } else {
                    u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); ul = 4;
                }
                strbuf_append_n(&b, u, ul);
                done = 1;
            }
        }
        if (done)
            i += elen - 1;
        else
            strbuf_append_n(&b, &s[i], 1);   /* not an entity we know: keep the bytes */
    }
    return strbuf_detach(&b, NULL);
}

/* Finds <tag>text</tag> inside [from, to); returns the decoded text (malloc'd)
 * or NULL, and sets *after to just past the closing tag. */
static char *xml_find(const char *from, const char *to, const char *tag, const char **after)
{
    char open[64], close[64];
    int ol = snprintf(open, sizeof(open), "<%s>", tag);
    int cl = snprintf(close, sizeof(close), "</%s>", tag);

    const char *o = memmem(from, (size_t)(to - from), open, (size_t)ol);
    if (!o)
        return NULL;
    const char *text = o + ol;
    const char *c = memmem(text, (size_t)(to - text), close, (size_t)cl);
    if (!c)
        return NULL;
    if (after)
        *after = c + cl;
    return xml_unescape(text, (size_t)(c - text));
}

/* "2009-10-12T17:50:30.000Z" -> ms since the epoch, 0 when unparsable. */
static int64_t parse_iso8601_ms(const char *v)
{
    struct tm tm;
    int ms = 0;

    memset(&tm, 0, sizeof(tm));
    const char *rest = strptime(v, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        return 0;
    if (*rest == '.')
        ms = atoi(rest + 1) % 1000;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

/* ---- request plumbing ---- */

static void object_path(struct s3_store *s, const char *key, struct strbuf *path)
{
    if (s->path_style)
        strbuf_appendf(path, "/%s", s->bucket);
    if (key) {
        char *enc = sigv4_uri_encode(key, 1);
        strbuf_appendf(path, "/%s", enc);
        free(enc);
    } else if (!s->path_style) {
        strbuf_append(path, "/");
    }
}

static void request_host(struct s3_store *s, struct strbuf *host)
{
    if (s->path_style)
        strbuf_append(host, s->host);
    else
        strbuf_appendf(host, "%s.%s", s->bucket, s->host);
}

/* The URL's query with the same encoding the signature used. */
static void url_query(const char *raw, struct strbuf *out)
{
    for (const char *p = raw; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', seg);
        size_t nl = eq ? (size_t)(eq - p) : seg;
        char *n = xstrndup(p, nl), *v = eq ? xstrndup(eq + 1, seg - nl - 1) : xstrdup("");
        char *ne = sigv4_uri_encode(n, 0), *ve = sigv4_uri_encode(v, 0);
        strbuf_appendf(out, "%s%s=%s", out->len ? "&" : "", ne, ve);
        free(n); free(v); free(ne); free(ve);
        p += seg;
        if (*p == '&')
            p++;
    }
}

static void request_error(struct s3_req *r, char *err, size_t errlen)
{
    char *code = NULL, *msg = NULL;

    if (r->body.len) {
        const char *b = r->body.data, *e = b + r->body.len;
        code = xml_find(b, e, "Code", NULL);
        msg = xml_find(b, e, "Message", NULL);
    }
    store_err(err, errlen, 0, "store: s3 %s: HTTP %ld%s%s%s%.200s", r->op, r->status, code ? " " : "",
              code ? code : "", msg ? ": " : "", msg ? msg : "");
    free(code);
    free(msg);
}

/* The signed request headers for r (a new list for the caller to free). */
static struct curl_slist *request_headers(struct s3_store *s, const struct s3_req *r, const char *host,
                                          const char *path)
{
    struct sigv4_creds cr = { s->access_key, s->secret_key, s->session_token, s->region, "s3" };
    struct sigv4_header sh[4];
    struct curl_slist *hdrs = NULL;
    struct strbuf hv;
    char amz_date[17];
    size_t nsh = 0;

    sigv4_amz_date((int64_t)time(NULL), amz_date, sizeof(amz_date));
    sh[nsh++] = (struct sigv4_header){ "host", host };
    sh[nsh++] = (struct sigv4_header){ "x-amz-content-sha256", r->payload_hash };
    sh[nsh++] = (struct sigv4_header){ "x-amz-date", amz_date };
    if (s->session_token)
        sh[nsh++] = (struct sigv4_header){ "x-amz-security-token", s->session_token };
    char *auth = sigv4_sign(&cr, r->method, path, r->query, sh, nsh, r->payload_hash, amz_date, NULL, NULL);
    if (!auth)
        panic("%s: sigv4_sign refused a request we built", __func__);

    strbuf_init(&hv);
#define ADD_HDR(...)                                   \
    do {                                               \
        strbuf_reset(&hv);                             \
        strbuf_appendf(&hv, __VA_ARGS__);              \
        hdrs = curl_slist_append(hdrs, hv.data);       \
        if (!hdrs)                                     \
            panic("%s: out of memory", __func__);      \
    } while (0)
    ADD_HDR("Host: %s", host);
    ADD_HDR("x-amz-content-sha256: %s", r->payload_hash);
    ADD_HDR("x-amz-date: %s", amz_date);
    if (s->session_token)
        ADD_HDR("x-amz-security-token: %s", s->session_token);
    ADD_HDR("Authorization: %s", auth);
    if (r->content_type)
        ADD_HDR("Content-Type: %s", r->content_type);
    if (r->range)
        ADD_HDR("Range: %s", r->range);
    ADD_HDR("Expect:");   /* no 100-continue round trip */
#undef ADD_HDR
    strbuf_free(&hv);
    free(auth);
    return hdrs;
}

static void handle_setup(CURL *h, struct s3_req *r, const char *url, struct curl_slist *hdrs,
                         char curl_err[CURL_ERROR_SIZE])
{
    curl_err[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    /* no overall timeout unless the request sets one (objects can be large);
     * a stalled transfer fails */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
    if (r->timeout_ms > 0)
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, r->timeout_ms);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "PUT") == 0) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, r);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, r);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->upload_len);
    } else if (strcmp(r->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
    }
}

/* What a finished transfer comes to: 0 on 2xx, else a negative errno with
 * err set. */
static int request_result(struct s3_req *r, CURLcode cc, const char *curl_err, char *err, size_t errlen)
{
    if (r->range_bad)
        return store_err(err, errlen, -EIO, "store: s3 %s: HTTP %ld without the Content-Range asked for", r->op,
                         r->status);
    if (r->stale)
        return store_err(err, errlen, -ESTALE, "store: s3 %s: the object was replaced (ETag %s)", r->op,
                         r->etag_out);
    if (r->cb_stopped)
        return store_err(err, errlen, -ECANCELED, "store: s3 %s stopped by the reader", r->op);
    if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && r->body_overflow)) {
        int e = cc == CURLE_COULDNT_CONNECT ? ECONNREFUSED : cc == CURLE_OPERATION_TIMEDOUT ? ETIMEDOUT : EIO;
        return store_err(err, errlen, -e, "store: s3 %s: %s", r->op, curl_err[0] ? curl_err : curl_easy_strerror(cc));
    }
    if (r->body_overflow)
        return store_err(err, errlen, -EIO, "store: s3 %s: HTTP %ld, reply too large", r->op, r->status);
    if (r->status < 200 || r->status > 299) {
        request_error(r, err, errlen);
        return r->status == 404 ? -ENOENT : r->status == 416 ? -EINVAL : -EIO;
    }
    return 0;
}

/* Signs and runs r; returns 0 on 2xx, else a negative errno with err set. */
static int s3_perform(struct s3_store *s, struct s3_req *r, char *err, size_t errlen)
{
    struct strbuf path, host, url, q;
    char curl_err[CURL_ERROR_SIZE];

    strbuf_init(&path);
    strbuf_init(&host);
    strbuf_init(&url);
    strbuf_init(&q);
    object_path(s, r->key, &path);
    request_host(s, &host);
    url_query(r->query, &q);
    strbuf_appendf(&url, "%s://%s%s%s%s", s->scheme, host.data, path.data, q.len ? "?" : "", q.len ? q.data : "");
    struct curl_slist *hdrs = request_headers(s, r, host.data, path.data);

    CURL *h = handle_get(s);
    handle_setup(h, r, url.data, hdrs, curl_err);
    CURLcode cc = curl_easy_perform(h);
    handle_put(s, h);
    curl_slist_free_all(hdrs);
    int rc = request_result(r, cc, curl_err, err, errlen);

    strbuf_free(&path);
    strbuf_free(&host);
    strbuf_free(&url);
    strbuf_free(&q);
    return rc;
}

static void req_init(struct s3_req *r, const char *method, const char *op, const char *key)
{
    memset(r, 0, sizeof(*r));
    r->method = method;
    r->op = op;
    r->key = key;
    r->upload_fd = -1;
    r->payload_hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";   /* empty */
    strbuf_init(&r->body);
    r->body_max = ERR_BODY_MAX;
}

static char *full_key(struct s3_store *s, const char *key)
{
    struct strbuf b;

    strbuf_init(&b);
    strbuf_appendf(&b, "%s%s", s->prefix, key);
    return strbuf_detach(&b, NULL);
}

static char *op_name(const char *verb, const char *key)
{
    struct strbuf b;

    strbuf_init(&b);
    strbuf_appendf(&b, "%s %.200s", verb, key);
    return strbuf_detach(&b, NULL);
}

/* ---- verbs ---- */

/* Hashes fd from its offset to EOF.  Seekable: rewinds and *upload_fd = fd.
 * Otherwise: copies into an unlinked temp file and *upload_fd is that copy
 * (the caller closes it).  Sets *len and hex. */
static int prepare_fd(int fd, int *upload_fd, off_t *upload_start, uint64_t *len, char hex[65], char *err,
                      size_t errlen)
{
    struct stat st;
    off_t start = -1;
    int spool = -1, rc = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();

    if (!c || !EVP_DigestInit_ex(c, EVP_sha256(), NULL))
        panic("%s: EVP init failed", __func__);
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        start = lseek(fd, 0, SEEK_CUR);
    if (start < 0) {
        const char *tmpdir = getenv("TMPDIR");
        spool = open(tmpdir && *tmpdir ? tmpdir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (spool < 0) {
            EVP_MD_CTX_free(c);
            return store_err(err, errlen, -errno, "store: temp file for a streamed put: %s", strerror(errno));
        }
    }
    char *buf = xmalloc(IO_CHUNK);
    *len = 0;
    for (;;) {
        ssize_t n = read(fd, buf, IO_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = store_err(err, errlen, -errno, "store: reading input: %s", strerror(errno));
            break;
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(c, buf, (size_t)n);
        *len += (uint64_t)n;
        if (spool >= 0 && (rc = fs_write_all(spool, buf, (size_t)n)) < 0) {
            rc = store_err(err, errlen, rc, "store: spooling input: %s", strerror(-rc));
            break;
        }
    }
    free(buf);
    sha256_final_hex(c, hex);
    EVP_MD_CTX_free(c);
    if (rc == 0 && lseek(spool >= 0 ? spool : fd, spool >= 0 ? 0 : start, SEEK_SET) < 0)
        rc = store_err(err, errlen, -errno, "store: rewinding input: %s", strerror(errno));
    if (rc < 0) {
        if (spool >= 0)
            close(spool);
        return rc;
    }
    *upload_fd = spool >= 0 ? spool : fd;
    *upload_start = spool >= 0 ? 0 : start;
    return spool >= 0 ? 1 : 0;
}

static int s3_put(struct store *st, const char *key, const struct store_src *src, const char *ct,
                  struct store_object *out, char *err, size_t errlen)
{
    struct s3_store *s = s3_of(st);
    struct s3_req r;
    char hex[65];
    char *fk = full_key(s, key), *op = op_name("PUT", key);
    int spooled = 0, rc = 0;

    req_init(&r, "PUT", op, fk);
    r.upload = 1;
    r.content_type = ct;
    if (src->fd >= 0) {
        spooled = prepare_fd(src->fd, &r.upload_fd, &r.upload_fd_start, &r.upload_len, hex, err, errlen);
        if (spooled < 0)
            rc = spooled;
    } else {
        sha256_hex(src->buf, src->len, hex);
        r.upload_buf = src->buf ? src->buf : "";
        r.upload_len = src->len;
    }
    if (rc == 0) {
        r.payload_hash = hex;
        rc = s3_perform(s, &r, err, errlen);
    }
    if (rc == 0) {
        out->size = r.upload_len;
        memcpy(out->sha256, hex, sizeof(out->sha256));
        snprintf(out->content_type, sizeof(out->content_type), "%s", ct);
        out->mtime_ms = (int64_t)time(NULL) * 1000;
    }
    if (spooled == 1)
        close(r.upload_fd);
    strbuf_free(&r.body);
    free(fk);
    free(op);
    return rc;
}

static int s3_get(struct store *st, const char *key, const char *version, uint64_t off, uint64_t len,
                  store_write_cb cb, void *opaque, char *err, size_t errlen)
{
    struct s3_store *s = s3_of(st);
    struct s3_req r;
    char range[64];
    char *fk = full_key(s, key), *op = op_name("GET", key);

    req_init(&r, "GET", op, fk);
    r.cb = cb;
    r.opaque = opaque;
    r.version = version;
    if (version && len)
        r.timeout_ms = PIECE_MS_PER_MIB * (long)((len + (1 << 20) - 1) >> 20);
    r.ranged = off || len;
    r.range_off = off;
    r.range_len = len;
    if (len) {
        snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)off,
                 (unsigned long long)(off + len - 1));
        r.range = range;
    } else if (off) {
        snprintf(range, sizeof(range), "bytes=%llu-", (unsigned long long)off);
        r.range = range;
    }
    int rc = s3_perform(s, &r, err, errlen);
    strbuf_free(&r.body);
    free(fk);
    free(op);
    return rc;
}

static int s3_head(struct store *st, const char *key, struct store_object *out, char *err, size_t errlen)
{
    struct s3_store *s = s3_of(st);
    struct s3_req r;
    char *fk = full_key(s, key), *op = op_name("HEAD", key);

    req_init(&r, "HEAD", op, fk);
    int rc = s3_perform(s, &r, err, errlen);
    if (rc == 0) {
        out->size = r.have_length ? r.content_length : 0;
        out->mtime_ms = r.last_modified_ms;
        snprintf(out->content_type, sizeof(out->content_type), "%s",
                 r.content_type_out[0] ? r.content_type_out : STORE_DEFAULT_CONTENT_TYPE);
        snprintf(out->version, sizeof(out->version), "%s", r.etag_out);
    } else if (rc == -ENOENT) {
        store_err(err, errlen, -ENOENT, "store: no object '%s'", key);
    }
    strbuf_free(&r.body);
    free(fk);
    free(op);
    return rc;
}

static int s3_del(struct store *st, const char *key, char *err, size_t errlen)
{
    struct s3_store *s = s3_of(st);
    struct s3_req r;
    char *fk = full_key(s, key), *op = op_name("DELETE", key);

    req_init(&r, "DELETE", op, fk);
    int rc = s3_perform(s, &r, err, errlen);
    if (rc == -ENOENT)
        rc = 0;   /* S3 answers 204 for a missing key anyway; some servers say 404 */
    strbuf_free(&r.body);
    free(fk);
    free(op);
    return rc;
}

/* Keys outside our key rule (written by something else into the bucket)
 * are skipped: no other call could address them. */
static int list_page(struct s3_store *s, const char *body, size_t blen, store_list_cb cb, void *opaque,
                     char **next_token, int *truncated, char *err, size_t errlen)
{
    const char *p = body, *end = body + blen;
    size_t plen = strlen(s->prefix);
    int rc = 0;

    for (;;) {
        const char *c_open = memmem(p, (size_t)(end - p), "<Contents>", 10);
        if (!c_open)
            break;
        const char *c_close = memmem(c_open, (size_t)(end - c_open), "</Contents>", 11);
        if (!c_close)
            return store_err(err, errlen, -EIO, "store: s3 list: malformed reply");
        char *key = xml_find(c_open, c_close, "Key", NULL);
        char *size = xml_find(c_open, c_close, "Size", NULL);
        char *lm = xml_find(c_open, c_close, "LastModified", NULL);
        if (key && strncmp(key, s->prefix, plen) == 0 && store_key_valid(key + plen)) {
            struct store_object o;
            memset(&o, 0, sizeof(o));
            o.size = size ? strtoull(size, NULL, 10) : 0;
            o.mtime_ms = lm ? parse_iso8601_ms(lm) : 0;
            if (cb(opaque, key + plen, &o) != 0)
                rc = store_err(err, errlen, -ECANCELED, "store: listing stopped by the reader");
        }
        free(key);
        free(size);
        free(lm);
        if (rc < 0)
            return rc;
        p = c_close + 11;
    }
    char *tr = xml_find(body, end, "IsTruncated", NULL);
    *truncated = tr && strcmp(tr, "true") == 0;
    free(tr);
    *next_token = xml_find(body, end, "NextContinuationToken", NULL);
    return 0;
}

static int s3_list(struct store *st, const char *prefix, store_list_cb cb, void *opaque, char *err,
                   size_t errlen)
{
    struct s3_store *s = s3_of(st);
    char *token = NULL;
    int rc = 0;

    for (;;) {
        struct s3_req r;
        struct strbuf q;
        char *fp = full_key(s, prefix);

        strbuf_init(&q);
        strbuf_appendf(&q, "list-type=2&prefix=%s", fp);
        if (s->max_keys)
            strbuf_appendf(&q, "&max-keys=%d", s->max_keys);
        if (token)
            strbuf_appendf(&q, "&continuation-token=%s", token);
        req_init(&r, "GET", "LIST", NULL);
        r.query = q.data;
        r.body_max = LIST_BODY_MAX;
        rc = s3_perform(s, &r, err, errlen);
        char *next = NULL;
        int truncated = 0;
        if (rc == 0)
            rc = list_page(s, r.body.data ? r.body.data : "", r.body.len, cb, opaque, &next, &truncated, err,
                           errlen);
        strbuf_free(&r.body);
        strbuf_free(&q);
        free(fp);
        if (rc == 0 && truncated && (!next || !*next || (token && strcmp(next, token) == 0)))
            rc = store_err(err, errlen, -EIO, "store: s3 list: truncated reply without a new continuation token");
        free(token);
        token = next;
        if (rc < 0 || !truncated)
            break;
        /* a token with '&' would split our raw query: no S3 emits one, refuse it */
        if (strchr(token, '&')) {
            rc = store_err(err, errlen, -EIO, "store: s3 list: unusable continuation token");
            break;
        }
    }
    free(token);
    return rc;
}

static char *s3_presign_get(struct store *st, const char *key, int expires_s, int64_t now_s, char *err,
                            size_t errlen)
{
    struct s3_store *s = s3_of(st);
    struct sigv4_creds cr = { s->access_key, s->secret_key, s->session_token, s->region, "s3" };
    struct strbuf path, host, url;
    char amz_date[17];
    char *fk = full_key(s, key);

    strbuf_init(&path);
    strbuf_init(&host);
    strbuf_init(&url);
    object_path(s, fk, &path);
    request_host(s, &host);
    free(fk);
    char *q = NULL;
    if (sigv4_amz_date(now_s, amz_date, sizeof(amz_date)))
        q = sigv4_presign_query(&cr, "GET", host.data, path.data, expires_s, amz_date);
    if (q)
        strbuf_appendf(&url, "%s://%s%s?%s", s->scheme, host.data, path.data, q);
    else
        store_err(err, errlen, -EINVAL, "store: cannot pre-sign (bad time or credentials)");
    strbuf_free(&path);
    strbuf_free(&host);
    if (!q) {
        strbuf_free(&url);
        return NULL;
    }
    free(q);
    return strbuf_detach(&url, NULL);
}

static void s3_close(struct store *st)
{
    struct s3_store *s = s3_of(st);

    for (int i = 0; i < s->n_idle; i++)
        curl_easy_cleanup(s->idle[i]);
    pthread_mutex_destroy(&s->mu);
    free(s->bucket);
    free(s->prefix);
    free(s->scheme);
    free(s->host);
    free(s->region);
    free(s->access_key);
    if (s->secret_key) {
        OPENSSL_cleanse(s->secret_key, strlen(s->secret_key));
        free(s->secret_key);
    }
    if (s->session_token) {
        OPENSSL_cleanse(s->session_token, strlen(s->session_token));
        free(s->session_token);
    }
    free(s);
}

static const struct store_ops s3_ops = {
    .put = s3_put,
    .get = s3_get,
    .head = s3_head,
    .del = s3_del,
    .list = s3_list,
    .presign_get = s3_presign_get,
    .local_path = NULL,
    .open_version = NULL,
    .close = s3_close,
};

/* ---- open: parse the URI ---- */

/* URI option values may be percent-encoded (endpoint=http%3A%2F%2F...). */
static char *url_decode(const char *s, size_t n)
{
    struct strbuf b;

    strbuf_init(&b);
    strbuf_append(&b, "");
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
            char c = (char)(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
            strbuf_append_n(&b, &c, 1);
            i += 2;
        } else {
            strbuf_append_n(&b, &s[i], 1);
        }
    }
    return strbuf_detach(&b, NULL);
}

static const char *env_first(const char *a, const char *b)
{
    const char *v = getenv(a);
    if (v && *v)
        return v;
    v = b ? getenv(b) : NULL;
    return v && *v ? v : NULL;
}

/* "http://host:port[/]" -> scheme, host[:port] with the default port dropped. */
static int parse_endpoint(struct s3_store *s, const char *ep, char *err, size_t errlen)
{
    const char *hs;

    if (strncmp(ep, "http://", 7) == 0) {
        s->scheme = xstrdup("http");
        hs = ep + 7;
    } else if (strncmp(ep, "https://", 8) == 0) {
        s->scheme = xstrdup("https");
        hs = ep + 8;
    } else {
        return store_err(err, errlen, -EINVAL, "store: s3 endpoint must start with http:// or https://");
    }
    size_t hl = strcspn(hs, "/?#");
    if (hs[hl] == '/' && hs[hl + 1] != '\0')
        return store_err(err, errlen, -EINVAL, "store: s3 endpoint must not have a path");
    if (hl == 0 || memchr(hs, '@', hl))
        return store_err(err, errlen, -EINVAL, "store: s3 endpoint needs a host (and no user info)");
    char *host = xstrndup(hs, hl);
    for (char *p = host; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    char *colon = strrchr(host, ':');
    if (colon && !strchr(colon, ']')) {
        const char *def = strcmp(s->scheme, "http") == 0 ? "80" : "443";
        if (strcmp(colon + 1, def) == 0)
            *colon = '\0';   /* curl omits a default port, so we must not sign it */
    }
    s->host = host;
    return 0;
}

/* Key id and token travel in headers: no CR/LF or other control bytes. */
static int header_safe(const char *v)
{
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || (unsigned char)*v == 0x7f)
            return 0;
    return 1;
}

static int bucket_valid(const char *b)
{
    size_t n = strlen(b);

    if (n < 3 || n > 63)
        return 0;
    for (; *b; b++)
        if (!((*b >= 'a' && *b <= 'z') || (*b >= '0' && *b <= '9') || *b == '.' || *b == '-' || *b == '_' ||
              (*b >= 'A' && *b <= 'Z')))
            return 0;
    return 1;
}

/* "bucket[/prefix]": the bucket, and the prefix trimmed of '/' at both ends
 * with one '/' appended ("" when none).  0, or -EINVAL with err set. */
static int parse_bucket_prefix(struct s3_store *s, const char *rest, size_t pathlen, char *err, size_t errlen)
{
    const char *slash = memchr(rest, '/', pathlen);
    struct strbuf p;

    s->bucket = xstrndup(rest, slash ? (size_t)(slash - rest) : pathlen);
    strbuf_init(&p);
    strbuf_append(&p, "");
    if (slash) {
        const char *ps = slash, *pe = rest + pathlen;
        while (ps < pe && *ps == '/')
            ps++;
        while (pe > ps && pe[-1] == '/')
            pe--;
        if (pe > ps)
            strbuf_appendf(&p, "%.*s/", (int)(pe - ps), ps);
    }
    s->prefix = strbuf_detach(&p, NULL);
    if (!bucket_valid(s->bucket))
        return store_err(err, errlen, -EINVAL, "store: bad s3 bucket name '%.64s'", s->bucket);
    if (*s->prefix) {
        s->prefix[strlen(s->prefix) - 1] = '\0';
        int ok = store_key_valid(s->prefix);
        s->prefix[strlen(s->prefix)] = '/';
        if (!ok)
            return store_err(err, errlen, -EINVAL, "store: bad s3 key prefix");
    }
    return 0;
}

/* The URI's options "k=v&...": endpoint (into *endpoint, malloc'd), region,
 * path_style, max_keys.  0, or -EINVAL with err set. */
static int parse_options(struct s3_store *s, const char *query, char **endpoint, char *err, size_t errlen)
{
    for (const char *p = query; p && *p;) {
        size_t seg = strcspn(p, "&");
        const char *eq = memchr(p, '=', seg);
        if (!eq)
            return store_err(err, errlen, -EINVAL, "store: s3 URI option without '='");
        size_t nl = (size_t)(eq - p);
        char *v = url_decode(eq + 1, seg - nl - 1);
        if (nl == 8 && strncmp(p, "endpoint", 8) == 0) {
            free(*endpoint);
            *endpoint = v;
        } else if (nl == 6 && strncmp(p, "region", 6) == 0) {
            free(s->region);
            s->region = v;
        } else if (nl == 10 && strncmp(p, "path_style", 10) == 0) {
            if (strcmp(v, "0") && strcmp(v, "1")) {
                free(v);
                return store_err(err, errlen, -EINVAL, "store: path_style must be 0 or 1");
            }
            s->path_style = v[0] == '1';
            free(v);
        } else if (nl == 8 && strncmp(p, "max_keys", 8) == 0) {
            char *end;
            long n = strtol(v, &end, 10);
            int bad = *end || n < 1 || n > 1000;
            free(v);
            if (bad)
                return store_err(err, errlen, -EINVAL, "store: max_keys must be 1..1000");
            s->max_keys = (int)n;
        } else {
            free(v);
            return store_err(err, errlen, -EINVAL, "store: unknown s3 URI option '%.*s'", (int)nl, p);
        }
        p += seg;
        if (*p == '&')
            p++;
    }
    return 0;
}

/* Keys from the options, else from the environment.  0, or -EINVAL. */
static int credentials_set(struct s3_store *s, const struct store_options *opt, char *err, size_t errlen)
{
    const char *ak = opt && opt->access_key ? opt->access_key : env_first("AWS_ACCESS_KEY_ID", NULL);
    const char *sk = opt && opt->secret_key ? opt->secret_key : env_first("AWS_SECRET_ACCESS_KEY", NULL);
    const char *tok = opt && opt->access_key ? opt->session_token : env_first("AWS_SESSION_TOKEN", NULL);

    if (!ak || !*ak || !sk || !*sk)
        return store_err(err, errlen, -EINVAL,
                         "store: s3 needs credentials (options or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)");
    if (!header_safe(ak) || !header_safe(tok ? tok : ""))
        return store_err(err, errlen, -EINVAL, "store: s3 access key or session token has control characters");
    s->access_key = xstrdup(ak);
    s->secret_key = xstrdup(sk);
    s->session_token = tok && *tok ? xstrdup(tok) : NULL;
    return 0;
}

struct store *store_s3_open(const char *rest, const struct store_options *opt, char *err, size_t errlen)
{
    struct s3_store *s = xcalloc(1, sizeof(*s));
    const char *qm = strchr(rest, '?');
    size_t pathlen = qm ? (size_t)(qm - rest) : strlen(rest);
    char *endpoint = NULL;

    s->base.ops = &s3_ops;
    pthread_mutex_init(&s->mu, NULL);
    if (parse_bucket_prefix(s, rest, pathlen, err, errlen) < 0 ||
        parse_options(s, qm ? qm + 1 : NULL, &endpoint, err, errlen) < 0)
        goto fail;
    if (!s->region) {
        const char *r = env_first("AWS_REGION", "AWS_DEFAULT_REGION");
        s->region = xstrdup(r ? r : "us-east-1");
    }
    if (!endpoint) {
        struct strbuf e;
        strbuf_init(&e);
        strbuf_appendf(&e, "https://s3.%s.amazonaws.com", s->region);
        endpoint = strbuf_detach(&e, NULL);
    }
    if (parse_endpoint(s, endpoint, err, errlen) < 0 || credentials_set(s, opt, err, errlen) < 0)
        goto fail;
    free(endpoint);
    return &s->base;

fail:
    free(endpoint);
    s3_close(&s->base);
    return NULL;
}
