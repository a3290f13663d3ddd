/* attachments — decode, hash and store one attachment (see attachments.h).
 *
 * Nothing here trusts the part: names are reduced to a safe alphabet before
 * they touch a key, sizes are bounded while decoding (the ratio check stops
 * a part that decodes to far more than it occupies), and content is only
 * streamed, never loaded. */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>

#include "attachments.h"
#include "ids.h"
#include "log.h"
#include "store.h"
#include "strbuf.h"

#define ATTACHMENT_CHUNK 65536
#define UU_SLICE 1024
_Static_assert(UU_DECODE_MAX_OUT(UU_SLICE) <= ATTACHMENT_CHUNK, "a uuencode slice fits the output");
#define ATTACHMENT_INMEM_MAX (256 * 1024)
#define SAFE_NAME_MAX 80
#define DISPLAY_NAME_MAX 200

static int safe_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

char *attachment_safe_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    char *o = xmalloc(n + 1 + 16);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (safe_char(c))
            o[k++] = (char)c;
        else if (k == 0 || o[k - 1] != '_')
            o[k++] = '_';
    }
    o[k] = '\0';
    /* A leading dot hides the file on disk; leading '_' or '-' is noise. */
    size_t s = 0;
    while (s < k && (o[s] == '.' || o[s] == '_' || o[s] == '-'))
        s++;
    memmove(o, o + s, k - s + 1);
    k -= s;
    while (k > 0 && (o[k - 1] == '.' || o[k - 1] == '_'))
        o[--k] = '\0';
    if (k > SAFE_NAME_MAX) {
        /* Keep a short extension so the stored object still says what it is. */
        const char *dot = strrchr(o, '.');
        size_t ext = dot ? strlen(dot) : 0;
        if (ext > 16)
            ext = 0;
        memmove(o + SAFE_NAME_MAX - ext, o + k - ext, ext + 1);
        k = SAFE_NAME_MAX;
        o[k] = '\0';
    }
    if (k == 0)
        strcpy(o, "attachment");
    return o;
}

char *attachment_display_name(const char *raw, const char *fallback)
{
    if (!raw)
        return xstrdup(fallback);
    /* The last path component, whichever separator the sender used. */
    const char *base = raw;
    for (const char *p = raw; *p; p++)
        if (*p == '/' || *p == '\\')
            base = p + 1;
    gchar *valid = g_utf8_make_valid(base, -1);
    struct strbuf b;
    strbuf_init(&b);
    for (const unsigned char *p = (const unsigned char *)valid; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            continue;
        /* C1 controls (U+0080..U+009F) as UTF-8 are 0xC2 0x80..0x9F. */
        if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
            p++;
            continue;
        }
        strbuf_append_n(&b, p, 1);
    }
    g_free(valid);
    char *s = b.data ? strbuf_detach(&b, NULL) : xstrdup("");
    /* Trim spaces and dots at both ends: "..", " " and "" name nothing. */
    size_t len = strlen(s), a = 0;
    while (a < len && (s[a] == ' ' || s[a] == '.'))
        a++;
    while (len > a && (s[len - 1] == ' ' || s[len - 1] == '.'))
        len--;
    if (len - a > DISPLAY_NAME_MAX) {
        len = a + DISPLAY_NAME_MAX;
        while (len > a && ((unsigned char)s[len] & 0xc0) == 0x80)
            len--;
    }
    memmove(s, s + a, len - a);
    s[len - a] = '\0';
    if (!*s) {
        free(s);
        return xstrdup(fallback);
    }
    return s;
}

int attachment_is_attachment(GMimeObject *obj)
{
    if (GMIME_IS_MESSAGE_PART(obj))
        return 1;
    if (!GMIME_IS_PART(obj))
        return 0;
    if (g_mime_part_is_attachment(GMIME_PART(obj)))
        return 1;
    if (g_mime_part_get_filename(GMIME_PART(obj)))
        return 1;
    /* A nameless non-text leaf (an inline image, an octet stream) is still
     * content the recipient must be able to fetch. */
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    return !(ct && g_mime_content_type_is_type(ct, "text", "*"));
}

char *attachment_part_name(GMimeObject *obj, int n)
{
    char fb[64];
    int is_msg = GMIME_IS_MESSAGE_PART(obj);
    snprintf(fb, sizeof(fb), "attachment-%d%s", n, is_msg ? ".eml" : "");
    const char *raw = NULL;
    if (GMIME_IS_PART(obj))
        raw = g_mime_part_get_filename(GMIME_PART(obj));
    else {
        raw = g_mime_object_get_content_disposition_parameter(obj, "filename");
        if (!raw)
            raw = g_mime_object_get_content_type_parameter(obj, "name");
    }
    char *name = attachment_display_name(raw, fb);
    if (is_msg && raw) {
        size_t l = strlen(name);
        if (l < 4 || strcasecmp(name + l - 4, ".eml") != 0) {
            char *x = xmalloc(l + 5);
            memcpy(x, name, l);
            memcpy(x + l, ".eml", 5);
            free(name);
            name = x;
        }
    }
    return name;
}

char *attachment_content_type(GMimeObject *obj)
{
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    char *mt = ct ? g_mime_content_type_get_mime_type(ct) : NULL;
    char *o = xstrdup(mt ? mt : "application/octet-stream");
    g_free(mt);
    for (char *p = o; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 'A' && c <= 'Z')
            *p = (char)(c - 'A' + 'a');
        else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("/.+-_", c))) {
            free(o);
            return xstrdup("application/octet-stream");
        }
    }
    if (GMIME_IS_MESSAGE_PART(obj)) {
        free(o);
        return xstrdup("message/rfc822");
    }
    return o;
}

void attachment_map_release(const char *map, size_t from, size_t to)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t a = (from + pg - 1) / pg * pg, b = to / pg * pg;
    if (b > a)
        madvise((void *)(map + a), b - a, MADV_DONTNEED);
}

/* --- base64 ---------------------------------------------------------- */

/* Value of each byte in the base64 alphabet (RFC 4648), -1 outside it.
 * Written out rather than built at run time, so no thread has to build it. */
static const signed char b64_value[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, -1, 63,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
    -1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, -1,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

void b64_decoder_init(struct b64_decoder *d)
{
    memset(d, 0, sizeof(*d));
}

size_t b64_decoder_step(struct b64_decoder *d, const unsigned char *in, size_t len, unsigned char *out)
{
    unsigned char *o = out;
    uint32_t acc = d->acc;
    int n = d->n;
    for (size_t i = 0; i < len && !d->done; i++) {
        /* Fast path: a whole aligned quantum of alphabet characters. */
        while (n == 0 && i + 4 <= len) {
            int a = b64_value[in[i]], b = b64_value[in[i + 1]], c = b64_value[in[i + 2]],
                d = b64_value[in[i + 3]];
            if ((a | b | c | d) < 0)
                break;
            uint32_t q = ((uint32_t)a << 18) | ((uint32_t)b << 12) | ((uint32_t)c << 6) | (uint32_t)d;
            o[0] = (unsigned char)(q >> 16);
            o[1] = (unsigned char)(q >> 8);
            o[2] = (unsigned char)q;
            o += 3;
            i += 4;
        }
        if (i >= len)
            break;
        signed char v = b64_value[in[i]];
        if (v < 0) {
            /* Padding counts once two characters of a quantum are in; when
             * it fills the quantum the data is over.  A stray '=' (one
             * after two characters, then more data) is skipped. */
            if (in[i] == '=' && n >= 2 && n + ++d->pads >= 4) {
                if (n == 2) {
                    *o++ = (unsigned char)(acc >> 4);
                } else {
                    *o++ = (unsigned char)(acc >> 10);
                    *o++ = (unsigned char)(acc >> 2);
                }
                acc = 0;
                n = 0;
                d->done = 1;
            }
            continue;
        }
        d->pads = 0;
        acc = (acc << 6) | (uint32_t)v;
        if (++n == 4) {
            *o++ = (unsigned char)(acc >> 16);
            *o++ = (unsigned char)(acc >> 8);
            *o++ = (unsigned char)acc;
            acc = 0;
            n = 0;
        }
    }
    d->acc = acc;
    d->n = n;
    return (size_t)(o - out);
}

size_t b64_decoder_finish(struct b64_decoder *d, unsigned char *out)
{
    size_t k = 0;
    /* Missing padding: 2 or 3 leftover characters still carry 1 or 2 bytes. */
    if (d->n == 2) {
        out[k++] = (unsigned char)(d->acc >> 4);
    } else if (d->n == 3) {
        out[k++] = (unsigned char)(d->acc >> 10);
        out[k++] = (unsigned char)(d->acc >> 2);
    }
    d->n = 0;
    d->acc = 0;
    return k;
}

/* --- uuencode -------------------------------------------------------- */

enum { UU_BEFORE_BEGIN, UU_DATA, UU_END };

void uu_decoder_init(struct uu_decoder *d)
{
    memset(d, 0, sizeof(*d));
}

/* Six bits per character, offset by 0x20; '`' stands for a space (zero). */
static unsigned uu_bits(unsigned char c)
{
    return (unsigned)(c - 0x20) & 0x3f;
}

static int uu_is_begin(const char *s, size_t len)
{
    if (len < 7 || memcmp(s, "begin ", 6) != 0 || s[6] < '0' || s[6] > '7')
        return 0;
    size_t i = 6;
    while (i < len && s[i] >= '0' && s[i] <= '7')
        i++;
    return i == len || s[i] == ' ';
}

static int uu_is_end(const char *s, size_t len)
{
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    while (len > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    return len == 3 && memcmp(s, "end", 3) == 0;
}

/* One complete line (no line break) of len characters, the first
 * UU_LINE_MAX of them in d->line. */
static size_t uu_line(struct uu_decoder *d, size_t len, unsigned char *out)
{
    const unsigned char *s = (const unsigned char *)d->line;
    if (len > UU_LINE_MAX)
        len = UU_LINE_MAX;
    if (len > 0 && s[len - 1] == '\r')
        len--;
    if (d->state == UU_BEFORE_BEGIN) {
        if (uu_is_begin(d->line, len))
            d->state = UU_DATA;
        return 0;
    }
    if (d->state != UU_DATA || len == 0)
        return 0;
    if (uu_is_end(d->line, len)) {
        d->state = UU_END;
        return 0;
    }
    size_t want = uu_bits(s[0]), k = 0;
    for (size_t at = 1; k < want; at += 4) {
        unsigned q = 0;
        for (size_t j = 0; j < 4; j++)
            q = (q << 6) | (at + j < len ? uu_bits(s[at + j]) : 0);
        for (int j = 2; j >= 0 && k < want; j--)
            out[k++] = (unsigned char)(q >> (8 * j));
    }
    return k;
}

size_t uu_decoder_step(struct uu_decoder *d, const char *in, size_t len, unsigned char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < len && d->state != UU_END; i++) {
        if (in[i] == '\n') {
            k += uu_line(d, d->len, out + k);
            d->len = 0;
            continue;
        }
        if (d->len < UU_LINE_MAX)
            d->line[d->len] = in[i];
        d->len++;
    }
    return k;
}

size_t uu_decoder_finish(struct uu_decoder *d, unsigned char *out)
{
    size_t k = d->len && d->state != UU_END ? uu_line(d, d->len, out) : 0;
    d->len = 0;
    d->state = UU_END;
    return k;
}

/* --- decoding -------------------------------------------------------- */

struct limit_state {
    const struct attachment_limits *lim;
    uint64_t encoded, decoded;
    char *err;
    size_t errlen;
};

static int limit_check(struct limit_state *ls)
{
    if (ls->lim->max_bytes && ls->decoded > ls->lim->max_bytes) {
        snprintf(ls->err, ls->errlen, "attachment decodes to more than %llu bytes",
                 (unsigned long long)ls->lim->max_bytes);
        return -EFBIG;
    }
    /* 64 KiB slack so tiny parts never trip the ratio. */
    if (ls->lim->max_ratio > 0 &&
        (double)ls->decoded > ls->lim->max_ratio * (double)ls->encoded + 65536.0) {
        snprintf(ls->err, ls->errlen, "attachment decodes to more than %.0fx its encoded size",
                 ls->lim->max_ratio);
        return -EFBIG;
    }
    return 0;
}

static int decode_part(GMimePart *part, struct limit_state *ls, attachment_sink sink, void *opaque)
{
    GMimeDataWrapper *w = g_mime_part_get_content(part);
    if (!w)
        return 0;
    GMimeStream *st = g_mime_data_wrapper_get_stream(w);
    if (!st)
        return 0;
    GMimeContentEncoding enc = g_mime_data_wrapper_get_encoding(w);
    if (g_mime_stream_reset(st) < 0) {
        snprintf(ls->err, ls->errlen, "cannot rewind the part's stream");
        return -EIO;
    }
    /* On the stack: per-call heap buffers this size would be mmap'd and
     * unmapped for every attachment.  Decoding never grows the data. */
    char in[ATTACHMENT_CHUNK];
    char out[ATTACHMENT_CHUNK + 64];
    struct b64_decoder b64;
    struct uu_decoder uu;
    GMimeEncoding ge;
    int rc = 0;
    b64_decoder_init(&b64);
    uu_decoder_init(&uu);
    if (enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE)
        g_mime_encoding_init_decode(&ge, enc);
    /* uuencode can make 45 bytes of a 2-byte line: read it in slices
     * whose output fits out[]. */
    size_t step = enc == GMIME_CONTENT_ENCODING_UUENCODE ? UU_SLICE : ATTACHMENT_CHUNK;
    for (;;) {
        ssize_t n = g_mime_stream_eos(st) ? 0 : g_mime_stream_read(st, in, step);
        if (n < 0 && g_mime_stream_eos(st))
            n = 0;
        if (n < 0) {
            snprintf(ls->err, ls->errlen, "read error in the raw mail");
            rc = -EIO;
            break;
        }
        size_t k;
        size_t slen = (size_t)n;
        if (n == 0) {
            if (enc == GMIME_CONTENT_ENCODING_BASE64)
                k = b64_decoder_finish(&b64, (unsigned char *)out);
            else if (enc == GMIME_CONTENT_ENCODING_UUENCODE)
                k = uu_decoder_finish(&uu, (unsigned char *)out);
            else if (enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE)
                k = g_mime_encoding_flush(&ge, in, 0, out);
            else
                k = 0;
        } else if (enc == GMIME_CONTENT_ENCODING_BASE64) {
            k = b64_decoder_step(&b64, (const unsigned char *)in, slen, (unsigned char *)out);
        } else if (enc == GMIME_CONTENT_ENCODING_UUENCODE) {
            k = uu_decoder_step(&uu, in, slen, (unsigned char *)out);
        } else if (enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE) {
            k = g_mime_encoding_step(&ge, in, slen, out);
        } else {
            memcpy(out, in, slen);
            k = slen;
        }
        ls->encoded += (uint64_t)n;
        ls->decoded += k;
        if ((rc = limit_check(ls)) < 0)
            break;
        if (k && sink(opaque, out, k) < 0) {
            snprintf(ls->err, ls->errlen, "cannot write the decoded attachment");
            rc = -EIO;
            break;
        }
        if (n == 0)
            break;
    }
    return rc;
}

/* The embedded message's exact bytes, straight from the mapped mail
 * (raw_start..raw_end), handing the pages already copied back as it goes. */
static int copy_raw_message(struct limit_state *ls, attachment_sink sink, void *opaque)
{
    const char *p = ls->lim->raw_map + ls->lim->raw_start;
    uint64_t left = (uint64_t)(ls->lim->raw_end - ls->lim->raw_start);
    const char *released = p;
    while (left > 0) {
        if (p - released >= (1 << 22)) {
            attachment_map_release(ls->lim->raw_map, (size_t)(released - ls->lim->raw_map),
                                   (size_t)(p - ls->lim->raw_map));
            released = p;
        }
        size_t n = left > ATTACHMENT_CHUNK ? ATTACHMENT_CHUNK : (size_t)left;
        ls->encoded += n;
        ls->decoded += n;
        int rc = limit_check(ls);
        if (rc < 0)
            return rc;
        if (sink(opaque, p, n) < 0) {
            snprintf(ls->err, ls->errlen, "cannot write the decoded attachment");
            return -EIO;
        }
        p += n;
        left -= n;
    }
    attachment_map_release(ls->lim->raw_map, (size_t)(released - ls->lim->raw_map),
                           (size_t)(p - ls->lim->raw_map));
    return 0;
}

/* An embedded message is serialized by GMime (its raw headers and persisted
 * content, so the bytes are the original's) into an unlinked temp file and
 * read back into the sink. */
static int serialize_message(GMimeMessagePart *mp, struct limit_state *ls, attachment_sink sink,
                             void *opaque)
{
    GMimeMessage *msg = g_mime_message_part_get_message(mp);
    if (!msg)
        return 0;
    char path[4096];
    const char *dir = ls->lim->tmp_dir && *ls->lim->tmp_dir ? ls->lim->tmp_dir : "/tmp";
    snprintf(path, sizeof(path), "%s/mf-eml-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        snprintf(ls->err, ls->errlen, "temp file: %s", strerror(errno));
        return -errno;
    }
    unlink(path);
    GMimeStream *fs = g_mime_stream_fs_new(dup(fd));
    GMimeFormatOptions *fo = g_mime_format_options_new();
    g_mime_format_options_set_newline_format(fo, ls->lim->crlf ? GMIME_NEWLINE_FORMAT_DOS
                                                                : GMIME_NEWLINE_FORMAT_UNIX);
    ssize_t w = g_mime_object_write_to_stream(GMIME_OBJECT(msg), fo, fs);
    g_mime_format_options_free(fo);
    g_mime_stream_flush(fs);
    g_object_unref(fs);
    int rc = 0;
    if (w < 0 || lseek(fd, 0, SEEK_SET) < 0) {
        snprintf(ls->err, ls->errlen, "cannot serialize the embedded message");
        close(fd);
        return -EIO;
    }
    char *buf = xmalloc(ATTACHMENT_CHUNK);
    for (;;) {
        ssize_t n = read(fd, buf, ATTACHMENT_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -EIO;
            snprintf(ls->err, ls->errlen, "temp file read: %s", strerror(errno));
            break;
        }
        if (n == 0)
            break;
        ls->encoded += (uint64_t)n;
        ls->decoded += (uint64_t)n;
        if ((rc = limit_check(ls)) < 0)
            break;
        if (sink(opaque, buf, (size_t)n) < 0) {
            snprintf(ls->err, ls->errlen, "cannot write the decoded attachment");
            rc = -EIO;
            break;
        }
    }
    free(buf);
    close(fd);
    return rc;
}

/* An embedded message: its exact bytes when the mail is mapped, else as
 * GMime writes it. */
static int decode_message(GMimeMessagePart *mp, struct limit_state *ls, attachment_sink sink,
                          void *opaque)
{
    if (ls->lim->raw_map && ls->lim->raw_start >= 0 && ls->lim->raw_end >= ls->lim->raw_start)
        return copy_raw_message(ls, sink, opaque);
    return serialize_message(mp, ls, sink, opaque);
}

int attachment_decode(GMimeObject *obj, const struct attachment_limits *lim, attachment_sink sink,
                      void *opaque, uint64_t *decoded, char *err, size_t errlen)
{
    struct limit_state ls = { lim, 0, 0, err, errlen };
    int rc = 0;
    if (GMIME_IS_MESSAGE_PART(obj))
        rc = decode_message(GMIME_MESSAGE_PART(obj), &ls, sink, opaque);
    else if (GMIME_IS_PART(obj))
        rc = decode_part(GMIME_PART(obj), &ls, sink, opaque);
    if (decoded)
        *decoded = ls.decoded;
    return rc;
}

/* --- hashing sinks --------------------------------------------------- */

struct hash_sink {
    EVP_MD_CTX *md;
    int fd;          /* -1: hash only */
};

static int hash_sink_write(void *opaque, const void *buf, size_t len)
{
    struct hash_sink *h = opaque;
    EVP_DigestUpdate(h->md, buf, len);
    const char *p = buf;
    while (h->fd >= 0 && len > 0) {
        ssize_t w = write(h->fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static void hash_hex(EVP_MD_CTX *md, char *hex)
{
    unsigned char d[32];
    unsigned int dl = 0;
    EVP_DigestFinal_ex(md, d, &dl);
    hex_encode(d, 32, hex);
}

int attachment_hash(GMimeObject *obj, const struct attachment_limits *lim, char *sha256_hex,
                    uint64_t *size, char *err, size_t errlen)
{
    struct hash_sink h = { EVP_MD_CTX_new(), -1 };
    if (!h.md)
        panic("%s: out of memory", __func__);
    EVP_DigestInit_ex(h.md, EVP_sha256(), NULL);
    int rc = attachment_decode(obj, lim, hash_sink_write, &h, size, err, errlen);
    hash_hex(h.md, sha256_hex);
    EVP_MD_CTX_free(h.md);
    return rc;
}

/* Bytes the part occupies in the raw mail, or -1 when unknown.  Decoding
 * never makes more than that (base64, QP, uuencode all shrink). */
static int64_t encoded_length(GMimeObject *obj, const struct attachment_limits *lim)
{
    if (GMIME_IS_MESSAGE_PART(obj))
        return lim->raw_map && lim->raw_start >= 0 ? lim->raw_end - lim->raw_start : -1;
    GMimeDataWrapper *w = GMIME_IS_PART(obj) ? g_mime_part_get_content(GMIME_PART(obj)) : NULL;
    GMimeStream *s = w ? g_mime_data_wrapper_get_stream(w) : NULL;
    return s ? g_mime_stream_length(s) : -1;
}

struct mem_sink {
    EVP_MD_CTX *md;
    struct strbuf buf;
};

static int mem_sink_write(void *opaque, const void *buf, size_t len)
{
    struct mem_sink *m = opaque;
    EVP_DigestUpdate(m->md, buf, len);
    strbuf_append_n(&m->buf, buf, len);
    return 0;
}

int attachment_store(GMimeObject *obj, struct store *st, const char *key, const char *ctype,
                     const struct attachment_limits *lim, char *sha256_hex,
                     uint64_t *size, char *err, size_t errlen)
{
    /* Small attachments (most device mail) skip the temp file. */
    int64_t enc = encoded_length(obj, lim);
    if (enc >= 0 && enc <= ATTACHMENT_INMEM_MAX) {
        struct mem_sink m = { EVP_MD_CTX_new(), { 0 } };
        if (!m.md)
            panic("%s: out of memory", __func__);
        strbuf_init(&m.buf);
        EVP_DigestInit_ex(m.md, EVP_sha256(), NULL);
        int rc = attachment_decode(obj, lim, mem_sink_write, &m, size, err, errlen);
        hash_hex(m.md, sha256_hex);
        EVP_MD_CTX_free(m.md);
        if (rc == 0) {
            struct store_object so;
            memset(&so, 0, sizeof(so));
            rc = store_put_buf(st, key, m.buf.data ? m.buf.data : "", m.buf.len, ctype, &so, err,
                               errlen);
        }
        strbuf_free(&m.buf);
        return rc;
    }
    char path[4096];
    const char *tmp_dir = lim->tmp_dir && *lim->tmp_dir ? lim->tmp_dir : "/tmp";
    snprintf(path, sizeof(path), "%s/mf-att-XXXXXX", tmp_dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "temp file in %s: %s", tmp_dir, strerror(e));
        return -e;
    }
    /* Unlinked at once: a crash leaves nothing behind. */
    unlink(path);
    struct hash_sink h = { EVP_MD_CTX_new(), fd };
    if (!h.md)
        panic("%s: out of memory", __func__);
    EVP_DigestInit_ex(h.md, EVP_sha256(), NULL);
    int rc = attachment_decode(obj, lim, hash_sink_write, &h, size, err, errlen);
    hash_hex(h.md, sha256_hex);
    EVP_MD_CTX_free(h.md);
    if (rc == 0 && lseek(fd, 0, SEEK_SET) < 0) {
        rc = -errno;
        snprintf(err, errlen, "temp file: %s", strerror(errno));
    }
    if (rc == 0) {
        struct store_object so;
        memset(&so, 0, sizeof(so));
        rc = store_put_fd(st, key, fd, ctype, &so, err, errlen);
        if (rc == 0 && so.sha256[0] && strcmp(so.sha256, sha256_hex) != 0) {
            snprintf(err, errlen, "store saw different bytes than were decoded");
            rc = -EIO;
        }
    }
    close(fd);
    return rc;
}
