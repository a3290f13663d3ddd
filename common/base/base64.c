/* base64 — one strict decoder.
 *
 * Not OpenSSL's EVP_DecodeBlock: it returns padding as zero bytes, so every
 * caller had to trim the length by looking at the text's last characters,
 * and it skips whitespace at either end and takes '=' for 'A' mid-text, so
 * that trim could be wrong and malformed text decoded.  Strict decoding
 * keeps AUTH, SES bodies and SNS signatures to one exact reading. */
#include "base64.h"

#include <stdint.h>
#include <stdlib.h>

#include "strbuf.h"

static int base64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

ssize_t base64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    if (n % 4 != 0 || cap < BASE64_DECODED_MAX(n) + 1)
        return -1;
    /* Padding is one or two '=' ending the last quantum, nowhere else. */
    size_t pad = n > 0 && in[n - 1] == '=' ? (in[n - 2] == '=' ? 2 : 1) : 0;
    size_t o = 0;

    for (size_t i = 0; i < n; i += 4) {
        size_t data = i + 4 == n ? 4 - pad : 4;
        uint32_t w = 0;
        for (size_t k = 0; k < 4; k++) {
            int v = k < data ? base64_value((unsigned char)in[i + k]) : 0;
            if (v < 0)
                return -1;
            w = w << 6 | (uint32_t)v;
        }
        out[o++] = (unsigned char)(w >> 16);
        if (data > 2)
            out[o++] = (unsigned char)(w >> 8);
        if (data > 3)
            out[o++] = (unsigned char)w;
    }
    out[o] = '\0';
    return (ssize_t)o;
}

unsigned char *base64_decode_alloc(const char *in, size_t n, size_t *outlen)
{
    size_t cap = BASE64_DECODED_MAX(n) + 1;
    unsigned char *out = xmalloc(cap);
    ssize_t len = base64_decode(in, n, out, cap);

    if (len < 0) {
        free(out);
        return NULL;
    }
    *outlen = (size_t)len;
    return out;
}
