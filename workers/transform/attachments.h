/* attachments — one MIME leaf (or embedded message) to a stored object.
 *
 * Content is decoded as a stream (base64 here, quoted-printable and
 * uuencode through GMime's incremental decoders) in 64 KiB steps from the
 * parser's persisted stream, hashed with SHA-256 on the way, staged in an
 * unlinked temp file and handed to store_put_fd: memory stays flat whatever
 * the attachment size.  Object keys are built from a counter and a safe
 * rendering of the name; the original name only ever travels as metadata. */
#ifndef MF_ATTACHMENTS_H
#define MF_ATTACHMENTS_H
#include <stddef.h>
#include <stdint.h>
#include <gmime/gmime.h>

struct strbuf;
struct store;

/* Key-safe rendering: [A-Za-z0-9._-] only (runs of others become one '_'),
 * no leading '.', at most 80 bytes keeping a short extension.  malloc'd. */
char *attachment_safe_name(const char *name);

/* Display name: path components and control characters removed, valid
 * UTF-8, at most 200 bytes; fallback when nothing is left.  malloc'd. */
char *attachment_display_name(const char *raw, const char *fallback);

/* The original name of a part (RFC 2231 / 2047 decoded by GMime, then
 * attachment_display_name), or "attachment-<n>[.eml]".  malloc'd. */
char *attachment_part_name(GMimeObject *obj, int n);

/* 1 if obj is stored as an attachment rather than read as body text. */
int attachment_is_attachment(GMimeObject *obj);

/* Lower-cased "type/subtype" restricted to token characters. malloc'd. */
char *attachment_content_type(GMimeObject *obj);

/* Streaming base64 decoder that skips non-alphabet bytes and, like Python's
 * email package, still decodes a final quantum that lacks its padding and
 * stops at the padding that completes a quantum: what follows it (a
 * boundary the parser missed, an epilogue) is not content. */
struct b64_decoder {
    uint32_t acc;
    int n;      /* characters in the current quantum */
    int pads;   /* '=' seen since the last alphabet character */
    int done;   /* padding completed a quantum: the rest is ignored */
};
void b64_decoder_init(struct b64_decoder *d);
size_t b64_decoder_step(struct b64_decoder *d, const unsigned char *in, size_t len, unsigned char *out);
size_t b64_decoder_finish(struct b64_decoder *d, unsigned char *out);

/* Streaming uudecoder: content starts after a "begin <mode> <name>" line
 * and ends at "end".  A line shorter than its length character says (its
 * trailing spaces stripped in transit) reads as padded with zero bits, as
 * classic decoders do, so it never shifts the lines after it.  Each call
 * writes at most UU_DECODE_MAX_OUT(len) bytes. */
#define UU_LINE_MAX 128
#define UU_DECODE_MAX_OUT(len) (((len) / 2 + 1) * 63)
struct uu_decoder {
    char line[UU_LINE_MAX];
    size_t len;       /* characters of the current line, counted past UU_LINE_MAX */
    int state;
};
void uu_decoder_init(struct uu_decoder *d);
size_t uu_decoder_step(struct uu_decoder *d, const char *in, size_t len, unsigned char *out);
size_t uu_decoder_finish(struct uu_decoder *d, unsigned char *out);

/* Callback sink for decoded bytes: return 0 to go on, <0 to stop. */
typedef int (*attachment_sink)(void *opaque, const void *buf, size_t len);

struct attachment_limits {
    uint64_t max_bytes;      /* decoded bytes allowed for this part */
    double max_ratio;        /* decoded / encoded, 0 = no check */
    const char *tmp_dir;     /* staging directory, NULL = /tmp */
    int crlf;                /* the mail uses CRLF: embedded messages keep it */
    /* An embedded message's exact bytes in the raw mail, when the parser
     * knew where it starts (raw_start >= 0); else GMime re-serializes it. */
    const char *raw_map;
    int64_t raw_start, raw_end;
};

/* Decodes obj's content (a GMimePart's transfer encoding undone; a
 * GMimeMessagePart serialized as the .eml it carries) into sink.
 * Returns 0, -EFBIG when a limit was hit (err says which), -EIO. */
int attachment_decode(GMimeObject *obj, const struct attachment_limits *lim, attachment_sink sink,
                      void *opaque, uint64_t *decoded, char *err, size_t errlen);

/* Decode to a temp file in lim->tmp_dir, hashing, then store_put_fd under key.
 * sha256_hex[65] and *size are filled.  -EFBIG on a limit, other <0 on
 * disk/store failure. */
int attachment_store(GMimeObject *obj, struct store *st, const char *key, const char *ctype,
                     const struct attachment_limits *lim, char *sha256_hex,
                     uint64_t *size, char *err, size_t errlen);

/* Drops the pages of map[from, to) from this process's resident set (the
 * page cache keeps them): scanning a 40 MB mail must not count as 40 MB. */
void attachment_map_release(const char *map, size_t from, size_t to);

/* Hash only (blocked attachments are not stored but still identified). */
int attachment_hash(GMimeObject *obj, const struct attachment_limits *lim, char *sha256_hex,
                    uint64_t *size, char *err, size_t errlen);

#endif
