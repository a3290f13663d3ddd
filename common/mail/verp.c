/* verp — see verp.h for the token layout and why it is not a tokens.h token. */
#include "verp.h"
#include "ids.h"
#include "strbuf.h"
#include "tokens.h"
#include "topics.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#define VERP_MAC_LEN 10
#define VERP_RAW_LEN (16 + VERP_MAC_LEN)

static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";


/* 0, or -1 for a recipient too long to be one: addresses are <= 254 and
 * tags short, so no token is made or accepted for it (a fixed stand-in MAC
 * would verify against any token that carries it). */
static int mac(const void *key, size_t keylen, const char *tag, const unsigned char id[16],
               const char *rcpt, unsigned char out[VERP_MAC_LEN])
{
    unsigned char full[EVP_MAX_MD_SIZE];
    unsigned int flen = 0;
    size_t tl = strlen(tag), rl = strlen(rcpt);
    unsigned char buf[512];
    if (tl + rl + 18 > sizeof(buf))
        return -1;
    size_t n = 0;
    memcpy(buf + n, tag, tl), n += tl;
    buf[n++] = '|';
    memcpy(buf + n, id, 16), n += 16;
    buf[n++] = '|';
    memcpy(buf + n, rcpt, rl), n += rl;
    HMAC(EVP_sha256(), key, (int)keylen, buf, n, full, &flen);
    memcpy(out, full, VERP_MAC_LEN);
    return 0;
}

int verp_token(const void *key, size_t keylen, const char *tag, const char *id, const char *rcpt,
               char out[VERP_TOKEN_LEN + 1])
{
    unsigned char raw[VERP_RAW_LEN];
    if (id_to_bytes(id, raw) != 0 || mac(key, keylen, tag, raw, rcpt, raw + 16) != 0)
        return -EINVAL;
    /* 26 bytes = 208 bits -> 42 groups of 5 (the last padded with zeros). */
    size_t o = 0;
    unsigned int acc = 0, bits = 0;
    for (size_t i = 0; i < VERP_RAW_LEN; i++) {
        acc = (acc << 8) | raw[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = b32[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0)
        out[o++] = b32[(acc << (5 - bits)) & 31];
    out[o] = '\0';
    return 0;
}

int verp_check(const void *key, size_t keylen, const char *tag, const char *token, const char *rcpt,
               char id_out[VERP_ID_LEN + 1])
{
    if (strlen(token) != VERP_TOKEN_LEN)
        return -EINVAL;
    unsigned char raw[VERP_RAW_LEN + 1];
    size_t o = 0;
    unsigned int acc = 0, bits = 0;
    for (size_t i = 0; i < VERP_TOKEN_LEN; i++) {
        char c = token[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');   /* a relay may have changed case */
        const char *p = c ? strchr(b32, c) : NULL;
        if (!p)
            return -EINVAL;
        acc = (acc << 5) | (unsigned int)(p - b32);
        bits += 5;
        if (bits >= 8) {
            raw[o++] = (unsigned char)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    if (o != VERP_RAW_LEN || (acc & ((1u << bits) - 1)) != 0)
        return -EINVAL;
    unsigned char want[VERP_MAC_LEN];
    if (mac(key, keylen, tag, raw, rcpt, want) != 0 || CRYPTO_memcmp(want, raw + 16, VERP_MAC_LEN) != 0)
        return -EINVAL;
    id_from_bytes(raw, id_out);
    return 0;
}

struct verp_keys {
    char **key;   /* key[0] from the sign key; NUL-terminated text */
    size_t n;
};

struct verp_keys *verp_keys_new(struct tokens *t)
{
    static const char label[] = VERP_KEY_LABEL;
    struct verp_keys *k = xcalloc(1, sizeof(*k));
    k->n = tokens_count(t);
    k->key = xcalloc(k->n, sizeof(*k->key));
    for (size_t i = 0; i < k->n; i++)
        k->key[i] = tokens_sign_key(t, i, label, sizeof(label) - 1, 0);
    return k;
}

void verp_keys_free(struct verp_keys *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++) {
        OPENSSL_cleanse(k->key[i], strlen(k->key[i]));
        free(k->key[i]);
    }
    free(k->key);
    free(k);
}

int verp_keys_token(const struct verp_keys *k, const char *tag, const char *id, const char *rcpt,
                    char out[VERP_TOKEN_LEN + 1])
{
    return verp_token(k->key[0], strlen(k->key[0]), tag, id, rcpt, out);
}

int verp_keys_check(const struct verp_keys *k, const char *tag, const char *token, const char *rcpt,
                    char id_out[VERP_ID_LEN + 1])
{
    for (size_t i = 0; i < k->n; i++)
        if (verp_check(k->key[i], strlen(k->key[i]), tag, token, rcpt, id_out) == 0)
            return 0;
    return -EINVAL;
}
