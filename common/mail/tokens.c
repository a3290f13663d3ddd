/* tokens — HMAC-SHA256 tokens with key ids, expiry and rotation.
 *
 * The MAC covers the base64url text of the first part exactly as it appears in
 * the token, so there is one byte string to authenticate and no second
 * encoding to get wrong.  The decoder is strict (no padding, no stray bits) so
 * one MAC has exactly one spelling: a token cannot be varied and still verify.
 * Verification order is parse -> key lookup -> MAC -> expiry: an attacker
 * learns nothing about expiry or payload without a valid MAC, and the MAC
 * compare is constant time. */
#include "tokens.h"
#include "ids.h"
#include "log.h"
#include "strbuf.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKENS_KID_MAX 16
#define TOKENS_SECRET_MIN 16
#define TOKENS_MAC_LEN 32

struct tokens_key {
    char kid[TOKENS_KID_MAX + 1];
    unsigned char *secret;
    size_t secret_len;
};

struct tokens {
    struct tokens_key *keys;   /* keys[0] signs */
    size_t n;
};

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *b64url_encode(const void *in, size_t n)
{
    const unsigned char *p = in;
    char *out = xmalloc((n + 2) / 3 * 4 + 1);
    size_t o = 0, i = 0;

    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return out;
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/* Decodes len chars of in.  0 on success with *out malloc'd and NUL-terminated
 * (handy for text payloads); -EINVAL on any char outside the alphabet, padding,
 * an impossible length or non-zero unused bits. */
static int b64url_decode_n(const char *in, size_t len, unsigned char **out, size_t *outlen)
{
    if (len % 4 == 1)
        return -EINVAL;
    unsigned char *buf = xmalloc(len / 4 * 3 + 3);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;

    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0) {
            free(buf);
            return -EINVAL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) {   /* leftover bits must be zero: one spelling per value */
        free(buf);
        return -EINVAL;
    }
    buf[o] = '\0';
    *out = buf;
    if (outlen)
        *outlen = o;
    return 0;
}

int b64url_decode(const char *in, unsigned char **out, size_t *outlen)
{
    return b64url_decode_n(in, strlen(in), out, outlen);
}

static int kid_valid(const char *s, size_t n)
{
    if (n == 0 || n > TOKENS_KID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

/* A secret that is all hex of >= 16 bytes is used as those bytes; anything
 * else of >= 16 chars is used as text.  Shorter secrets are refused. */
static int parse_secret(const char *s, struct tokens_key *k)
{
    size_t n = strlen(s);
    if (n >= 2 * TOKENS_SECRET_MIN && n % 2 == 0) {
        unsigned char *b = xmalloc(n / 2);
        if (hex_decode(s, b, n / 2) == (int)(n / 2)) {
            k->secret = b;
            k->secret_len = n / 2;
            return 0;
        }
        free(b);
    }
    if (n < TOKENS_SECRET_MIN)
        return -EINVAL;
    k->secret = (unsigned char *)xstrndup(s, n);
    k->secret_len = n;
    return 0;
}

struct tokens *tokens_new(const char *const *keys, size_t n, char *err, size_t errlen)
{
    if (n == 0) {
        snprintf(err, errlen, "tokens: no keys configured");
        return NULL;
    }
    struct tokens *t = xcalloc(1, sizeof(*t));
    t->keys = xcalloc(n, sizeof(*t->keys));
    for (size_t i = 0; i < n; i++) {
        const char *colon = keys[i] ? strchr(keys[i], ':') : NULL;
        size_t kl = colon ? (size_t)(colon - keys[i]) : 0;
        if (!colon || !kid_valid(keys[i], kl)) {
            snprintf(err, errlen, "tokens: key %zu: expected kid:secret with kid [A-Za-z0-9]{1,%d}",
                     i + 1, TOKENS_KID_MAX);
            tokens_free(t);
            return NULL;
        }
        memcpy(t->keys[i].kid, keys[i], kl);
        t->keys[i].kid[kl] = '\0';
        for (size_t j = 0; j < i; j++)
            if (strcmp(t->keys[j].kid, t->keys[i].kid) == 0) {
                snprintf(err, errlen, "tokens: key id %s given twice", t->keys[i].kid);
                tokens_free(t);
                return NULL;
            }
        if (parse_secret(colon + 1, &t->keys[i]) < 0) {
            /* never echo the secret itself */
            snprintf(err, errlen, "tokens: key %s: secret must be >= %d bytes of hex or >= %d chars",
                     t->keys[i].kid, TOKENS_SECRET_MIN, TOKENS_SECRET_MIN);
            t->n = i + 1;
            tokens_free(t);
            return NULL;
        }
        t->n = i + 1;
    }
    return t;
}

void tokens_free(struct tokens *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++) {
        if (t->keys[i].secret)
            OPENSSL_cleanse(t->keys[i].secret, t->keys[i].secret_len);
        free(t->keys[i].secret);
    }
    free(t->keys);
    free(t);
}

static void mac(const struct tokens_key *k, const char *msg, size_t len,
                unsigned char out[TOKENS_MAC_LEN])
{
    unsigned int ol = TOKENS_MAC_LEN;
    if (!HMAC(EVP_sha256(), k->secret, (int)k->secret_len, (const unsigned char *)msg, len, out, &ol)
        || ol != TOKENS_MAC_LEN)
        panic("%s: HMAC-SHA256 failed", __func__);
}

size_t tokens_count(const struct tokens *t)
{
    return t->n;
}

char *tokens_sign(struct tokens *t, const void *payload, size_t len, int64_t expires_s)
{
    return tokens_sign_key(t, 0, payload, len, expires_s);
}

char *tokens_sign_key(struct tokens *t, size_t key, const void *payload, size_t len, int64_t expires_s)
{
    if (key >= t->n)
        panic("%s: key %zu of %zu", __func__, key, t->n);
    const struct tokens_key *k = &t->keys[key];
    struct strbuf b;
    unsigned char m[TOKENS_MAC_LEN];

    if (expires_s < 0)
        panic("%s: negative expiry", __func__);
    strbuf_init(&b);
    strbuf_appendf(&b, "%s.%lld.", k->kid, (long long)expires_s);
    strbuf_append_n(&b, payload, len);
    char *first = b64url_encode(b.data, b.len);
    strbuf_free(&b);

    mac(k, first, strlen(first), m);
    char *ms = b64url_encode(m, sizeof(m));
    strbuf_append(&b, first);
    strbuf_append_n(&b, ".", 1);
    strbuf_append(&b, ms);
    free(first);
    free(ms);
    return strbuf_detach(&b, NULL);
}

/* Strict decimal: digits only, no sign, no leading zero (one spelling). */
static int parse_expiry(const char *s, size_t n, int64_t *out)
{
    int64_t v = 0;
    if (n == 0 || n > 18 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

enum token_result tokens_verify(struct tokens *t, const char *token, int64_t now_s,
                                char **payload, size_t *len, int64_t *expires_s)
{
    const char *dot = token ? strrchr(token, '.') : NULL;
    unsigned char *first = NULL, *given = NULL;
    size_t flen, glen;
    enum token_result r = TOKEN_BAD;

    if (!dot || dot == token)
        return TOKEN_BAD;
    if (b64url_decode_n(token, (size_t)(dot - token), &first, &flen) < 0)
        return TOKEN_BAD;
    if (b64url_decode(dot + 1, &given, &glen) < 0 || glen != TOKENS_MAC_LEN)
        goto out;

    /* first = kid "." expiry "." payload; the payload may itself hold dots or NULs */
    const char *f = (const char *)first, *end = f + flen;
    const char *d1 = memchr(f, '.', flen);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    int64_t exp;
    if (!d2 || !kid_valid(f, (size_t)(d1 - f)) || parse_expiry(d1 + 1, (size_t)(d2 - d1 - 1), &exp) < 0)
        goto out;

    const struct tokens_key *k = NULL;
    for (size_t i = 0; i < t->n && !k; i++)
        if (strlen(t->keys[i].kid) == (size_t)(d1 - f) && memcmp(t->keys[i].kid, f, (size_t)(d1 - f)) == 0)
            k = &t->keys[i];
    if (!k) {
        r = TOKEN_UNKNOWN_KEY;
        goto out;
    }
    unsigned char m[TOKENS_MAC_LEN];
    mac(k, token, (size_t)(dot - token), m);
    if (CRYPTO_memcmp(m, given, TOKENS_MAC_LEN) != 0)
        goto out;
    if (expires_s)   /* authentic, so the caller may report when it expired */
        *expires_s = exp;
    if (exp != 0 && now_s >= exp) {
        r = TOKEN_EXPIRED;
        goto out;
    }
    size_t pl = (size_t)(end - d2 - 1);
    if (payload)
        *payload = xstrndup(d2 + 1, pl);
    if (len)
        *len = pl;
    r = TOKEN_OK;
out:
    free(first);
    free(given);
    return r;
}
