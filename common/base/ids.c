/* ids — UUIDv7: 48-bit ms timestamp, then a counter seeded randomly each ms so
 * ids from one process sort in creation order. */
#include "ids.h"

#include <errno.h>
#include "log.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "timeutil.h"

static pthread_mutex_t id_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t last_ms;
static uint32_t seq;   /* 12-bit rand_a used as a counter */

char *id_new(char out[ID_LEN + 1])
{
    unsigned char b[16];

    if (RAND_bytes(b, sizeof(b)) != 1)
        panic("%s: RAND_bytes failed", __func__);
    pthread_mutex_lock(&id_lock);
    int64_t ms = now_ms();
    if (ms <= last_ms) {
        ms = last_ms;
        if (++seq > 0xfff) {   /* counter spent: borrow the next ms */
            ms = ++last_ms;
            seq = b[6] & 0x3f;
        }
    } else {
        last_ms = ms;
        seq = ((uint32_t)(b[6] & 0x3f) << 4) | (b[7] >> 4); /* leave room to count */
    }
    uint32_t s = seq;
    pthread_mutex_unlock(&id_lock);

    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | ((s >> 8) & 0x0f));
    b[7] = (unsigned char)(s & 0xff);
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));
    return id_from_bytes(b, out);
}

static int hyphen_at(int i)
{
    return i == 8 || i == 13 || i == 18 || i == 23;
}

int id_to_bytes(const char *s, unsigned char out[16])
{
    if (strlen(s) != ID_LEN)
        return -EINVAL;
    size_t o = 0;
    for (int i = 0; i < ID_LEN;) {
        if (hyphen_at(i)) {
            if (s[i++] != '-')
                return -EINVAL;
            continue;
        }
        int hi = hex_digit(s[i]), lo = hex_digit(s[i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[o++] = (unsigned char)(hi << 4 | lo);
        i += 2;
    }
    return 0;
}

char *id_from_bytes(const unsigned char in[16], char out[ID_LEN + 1])
{
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (hyphen_at((int)o))
            out[o++] = '-';
        hex_encode(&in[i], 1, out + o);
        o += 2;
    }
    out[o] = '\0';
    return out;
}

void id_shard(const char *id, char out[3])
{
    size_t n = strlen(id);
    for (int k = 0; k < 2; k++) {
        char c = n >= 2 ? id[n - 2 + (size_t)k] : '0';
        out[k] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ? c : '_';
    }
    out[2] = '\0';
}

int id_valid(const char *s)
{
    if (strlen(s) != ID_LEN)
        return 0;
    for (int i = 0; i < ID_LEN; i++) {
        if (hyphen_at(i)) {
            if (s[i] != '-')
                return 0;
        } else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }
    /* version 7 and the RFC 9562 variant (10xx), as the schemas require */
    return s[14] == '7' && (s[19] == '8' || s[19] == '9' || s[19] == 'a' || s[19] == 'b');
}

int64_t id_time_ms(const char *s)
{
    if (!id_valid(s))
        return -1;
    int64_t ms = 0;
    for (int i = 0; i < 13; i++) {
        if (s[i] == '-')
            continue;
        int c = s[i];
        ms = ms * 16 + (c <= '9' ? c - '0' : c - 'a' + 10);
    }
    return ms;
}

void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int hex_digit(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int hex_decode(const char *in, unsigned char *out, size_t outlen)
{
    size_t n = strlen(in);
    if (n % 2 || n / 2 > outlen)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int h = hex_digit(in[2 * i]), l = hex_digit(in[2 * i + 1]);
        if (h < 0 || l < 0)
            return -1;
        out[i] = (unsigned char)(h << 4 | l);
    }
    return (int)(n / 2);
}
