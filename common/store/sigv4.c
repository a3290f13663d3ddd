/* sigv4 — AWS Signature Version 4, header signing and query pre-signing.
 *
 * The algorithm, as AWS documents it:
 *   canonical request = METHOD \n URI \n QUERY \n HEADERS \n SIGNED \n PAYLOAD-HASH
 *   string to sign    = "AWS4-HMAC-SHA256" \n DATE \n SCOPE \n hex(sha256(CR))
 *   signing key       = HMAC chain "AWS4"+secret -> yyyymmdd -> region -> service
 *                       -> "aws4_request"
 * Both entry points share canonical_request() and signature(), so the two
 * ways of signing cannot drift apart.
 *
 * sigv4_sign() signs exactly the headers it is given: a caller using a session
 * token adds x-amz-security-token to its headers itself (and sends it). */
#include "sigv4.h"
#include "digest.h"
#include "ids.h"
#include "strbuf.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SIGV4_ALGO "AWS4-HMAC-SHA256"

static void hmac_sha256(const void *key, size_t keylen, const char *msg, unsigned char out[32])
{
    unsigned int outlen = 0;

    if (!HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, strlen(msg), out, &outlen) ||
        outlen != 32)
        abort();
}

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

static void uri_encode_n(struct strbuf *b, const char *s, size_t n, int keep_slash)
{
    static const char up[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c) || (keep_slash && c == '/')) {
            strbuf_append_n(b, &s[i], 1);
        } else {
            char e[3] = { '%', up[c >> 4], up[c & 15] };
            strbuf_append_n(b, e, 3);
        }
    }
}

char *sigv4_uri_encode(const char *s, int keep_slash)
{
    struct strbuf b;

    strbuf_init(&b);
    strbuf_reserve(&b, strlen(s) + 1);
    strbuf_append(&b, "");
    uri_encode_n(&b, s, strlen(s), keep_slash);
    return strbuf_detach(&b, NULL);
}

char *sigv4_amz_date(int64_t epoch_s, char *buf, size_t len)
{
    time_t t = (time_t)epoch_s;
    struct tm tm;

    if (len < 17 || !gmtime_r(&t, &tm) || strftime(buf, len, "%Y%m%dT%H%M%SZ", &tm) != 16)
        return NULL;
    return buf;
}

/* "20130524T000000Z": 8 digits, 'T', 6 digits, 'Z'. */
static int amz_date_ok(const char *d)
{
    if (!d || strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z')
        return 0;
    for (int i = 0; i < 15; i++)
        if (i != 8 && (d[i] < '0' || d[i] > '9'))
            return 0;
    return 1;
}

/* ---- canonical query ---- */

struct qparam { char *name; char *value; };   /* both already encoded */

static int qparam_cmp(const void *a, const void *b)
{
    const struct qparam *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

/* Splits raw "k=v&k2" into encoded pairs, sorts them by name then value and
 * joins them back; a parameter without '=' gets an empty value, as AWS's
 * get-vanilla-empty-query-key example requires. */
static void canonical_query(struct strbuf *out, const char *query)
{
    struct qparam *p = NULL;
    size_t n = 0, cap = 0;

    if (!query)
        return;
    for (const char *s = query; *s;) {
        const char *amp = strchr(s, '&');
        size_t seg = amp ? (size_t)(amp - s) : strlen(s);
        if (seg > 0) {
            const char *eq = memchr(s, '=', seg);
            size_t nlen = eq ? (size_t)(eq - s) : seg;
            struct strbuf nb, vb;
            strbuf_init(&nb);
            strbuf_init(&vb);
            strbuf_append(&nb, "");
            strbuf_append(&vb, "");
            uri_encode_n(&nb, s, nlen, 0);
            if (eq)
                uri_encode_n(&vb, eq + 1, seg - nlen - 1, 0);
            if (n == cap) {
                cap = cap ? 2 * cap : 8;
                p = xrealloc(p, cap * sizeof(*p));
            }
            p[n].name = strbuf_detach(&nb, NULL);
            p[n].value = strbuf_detach(&vb, NULL);
            n++;
        }
        s += seg;
        if (*s == '&')
            s++;
    }
    if (n > 1)
        qsort(p, n, sizeof(*p), qparam_cmp);
    for (size_t i = 0; i < n; i++) {
        strbuf_appendf(out, "%s%s=%s", i ? "&" : "", p[i].name, p[i].value);
        free(p[i].name);
        free(p[i].value);
    }
    free(p);
}

/* ---- canonical headers ---- */

struct chdr { char *name; char *value; size_t order; };

static int chdr_cmp(const void *a, const void *b)
{
    const struct chdr *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;   /* keeps repeats in order */
}

/* Value trimmed, inner runs of blanks folded to one space (AWS "Trimall"). */
static char *header_value_trim(const char *v)
{
    struct strbuf b;
    int pending_space = 0;

    strbuf_init(&b);
    strbuf_append(&b, "");
    for (; *v; v++) {
        if (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n') {
            pending_space = b.len > 0;
            continue;
        }
        if (pending_space)
            strbuf_append_n(&b, " ", 1);
        pending_space = 0;
        strbuf_append_n(&b, v, 1);
    }
    return strbuf_detach(&b, NULL);
}

/* Appends "name:value\n" lines to ch and "a;b;c" to signed_names.  Repeated
 * names are joined into one line with ',' as AWS specifies. */
static void canonical_headers(const struct sigv4_header *h, size_t n, struct strbuf *ch,
                              struct strbuf *signed_names)
{
    struct chdr *c = xcalloc(n ? n : 1, sizeof(*c));

    for (size_t i = 0; i < n; i++) {
        c[i].name = xstrdup(h[i].name);
        for (char *p = c[i].name; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        c[i].value = header_value_trim(h[i].value ? h[i].value : "");
        c[i].order = i;
    }
    qsort(c, n, sizeof(*c), chdr_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(c[i].name, c[i - 1].name) == 0) {
            /* continue the previous line: drop its '\n', add ",value\n" */
            ch->len--;
            ch->data[ch->len] = '\0';
            strbuf_appendf(ch, ",%s\n", c[i].value);
        } else {
            strbuf_appendf(ch, "%s:%s\n", c[i].name, c[i].value);
            strbuf_appendf(signed_names, "%s%s", signed_names->len ? ";" : "", c[i].name);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(c[i].name);
        free(c[i].value);
    }
    free(c);
}

/* query_canon: an already canonical query string (see canonical_query()). */
static char *canonical_request(const char *method, const char *path, const char *query_canon,
                               const struct sigv4_header *headers, size_t n_headers,
                               const char *payload_hash, char **signed_names_out)
{
    struct strbuf cr, ch, sn;

    strbuf_init(&cr);
    strbuf_init(&ch);
    strbuf_init(&sn);
    strbuf_append(&ch, "");
    strbuf_append(&sn, "");
    canonical_headers(headers, n_headers, &ch, &sn);
    strbuf_appendf(&cr, "%s\n%s\n%s\n%s\n%s\n%s", method, path && *path ? path : "/", query_canon,
                   ch.data, sn.data, payload_hash);
    strbuf_free(&ch);
    *signed_names_out = strbuf_detach(&sn, NULL);
    return strbuf_detach(&cr, NULL);
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request") */
static void signing_key(const struct sigv4_creds *cr, const char *date, unsigned char out[32])
{
    unsigned char a[32], b[32];
    struct strbuf key;

    strbuf_init(&key);
    strbuf_appendf(&key, "AWS4%s", cr->secret_key);
    hmac_sha256(key.data, key.len, date, a);
    OPENSSL_cleanse(key.data, key.len);
    strbuf_free(&key);
    hmac_sha256(a, 32, cr->region, b);
    hmac_sha256(b, 32, cr->service, a);
    hmac_sha256(a, 32, "aws4_request", out);
    OPENSSL_cleanse(a, sizeof(a));
    OPENSSL_cleanse(b, sizeof(b));
}

/* Returns the string to sign; writes the lowercase hex signature into sig. */
static char *sign_cr(const struct sigv4_creds *cr, const char *amz_date, const char *creq, char sig[65])
{
    char date[9], crhash[65];
    unsigned char k[32], mac[32];
    struct strbuf sts;

    memcpy(date, amz_date, 8);
    date[8] = '\0';
    sha256_hex(creq, strlen(creq), crhash);
    strbuf_init(&sts);
    strbuf_appendf(&sts, SIGV4_ALGO "\n%s\n%s/%s/%s/aws4_request\n%s", amz_date, date, cr->region,
                   cr->service, crhash);
    signing_key(cr, date, k);
    hmac_sha256(k, 32, sts.data, mac);
    OPENSSL_cleanse(k, sizeof(k));
    hex_encode(mac, 32, sig);
    return strbuf_detach(&sts, NULL);
}

static int creds_ok(const struct sigv4_creds *cr)
{
    return cr && cr->access_key && *cr->access_key && cr->secret_key && cr->region && *cr->region &&
           cr->service && *cr->service;
}

char *sigv4_sign(const struct sigv4_creds *cr, const char *method, const char *path,
                 const char *query, const struct sigv4_header *headers, size_t n_headers,
                 const char *payload_sha256_hex, const char *amz_date,
                 char **canonical_request_out, char **string_to_sign_out)
{
    char *signed_names, *creq, *sts, sig[65], date[9];
    struct strbuf auth, cq;

    if (canonical_request_out)
        *canonical_request_out = NULL;
    if (string_to_sign_out)
        *string_to_sign_out = NULL;
    if (!creds_ok(cr) || !method || !payload_sha256_hex || !amz_date_ok(amz_date) ||
        (n_headers && !headers))
        return NULL;
    for (size_t i = 0; i < n_headers; i++)
        if (!headers[i].name || !*headers[i].name)
            return NULL;

    strbuf_init(&cq);
    strbuf_append(&cq, "");
    canonical_query(&cq, query);
    creq = canonical_request(method, path, cq.data, headers, n_headers, payload_sha256_hex,
                             &signed_names);
    strbuf_free(&cq);
    sts = sign_cr(cr, amz_date, creq, sig);
    memcpy(date, amz_date, 8);
    date[8] = '\0';
    strbuf_init(&auth);
    strbuf_appendf(&auth, SIGV4_ALGO " Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s",
                   cr->access_key, date, cr->region, cr->service, signed_names, sig);
    free(signed_names);
    if (canonical_request_out)
        *canonical_request_out = creq;
    else
        free(creq);
    if (string_to_sign_out)
        *string_to_sign_out = sts;
    else
        free(sts);
    return strbuf_detach(&auth, NULL);
}

/* Appends "&name=value" with the value percent-encoded (first one without '&'). */
static void query_add(struct strbuf *q, const char *name, const char *value)
{
    strbuf_appendf(q, "%s%s=", q->len ? "&" : "", name);
    uri_encode_n(q, value, strlen(value), 0);
}

char *sigv4_presign_query(const struct sigv4_creds *cr, const char *method, const char *host,
                          const char *path, int expires_s, const char *amz_date)
{
    struct strbuf cq, cred;
    char date[9], sig[65], expires[16];
    char *signed_names, *creq, *sts;
    struct sigv4_header h = { "host", host };

    if (!creds_ok(cr) || !method || !host || !*host || expires_s < 1 || expires_s > 604800 ||
        !amz_date_ok(amz_date))
        return NULL;
    memcpy(date, amz_date, 8);
    date[8] = '\0';
    snprintf(expires, sizeof(expires), "%d", expires_s);
    strbuf_init(&cred);
    strbuf_appendf(&cred, "%s/%s/%s/%s/aws4_request", cr->access_key, date, cr->region, cr->service);

    /* Built directly in canonical (sorted) order rather than through
     * canonical_query(), so a session token holding '&' or '=' needs no
     * escaping round trip.  Byte order: Algorithm < Credential < Date <
     * Expires < Security-Token < SignedHeaders. */
    strbuf_init(&cq);
    query_add(&cq, "X-Amz-Algorithm", SIGV4_ALGO);
    query_add(&cq, "X-Amz-Credential", cred.data);
    query_add(&cq, "X-Amz-Date", amz_date);
    query_add(&cq, "X-Amz-Expires", expires);
    if (cr->session_token && *cr->session_token)
        query_add(&cq, "X-Amz-Security-Token", cr->session_token);
    query_add(&cq, "X-Amz-SignedHeaders", "host");
    strbuf_free(&cred);

    creq = canonical_request(method, path, cq.data, &h, 1, "UNSIGNED-PAYLOAD", &signed_names);
    sts = sign_cr(cr, amz_date, creq, sig);
    strbuf_appendf(&cq, "&X-Amz-Signature=%s", sig);
    free(signed_names);
    free(creq);
    free(sts);
    return strbuf_detach(&cq, NULL);
}
