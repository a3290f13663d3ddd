/* base64 — standard base64 (RFC 4648 section 4) decoding, strict: the
 * alphabet only, '=' padding to a multiple of four, no whitespace.  Used for
 * SMTP AUTH, outbound bodies and SNS signatures.  (base64url for tokens is
 * in common/mail/tokens.h; transform's lenient streaming decoder for MIME
 * parts is in workers/transform/attachments.h.) */
#ifndef MF_BASE64_H
#define MF_BASE64_H
#include <stddef.h>
#include <sys/types.h>

/* Most bytes n characters of base64 decode to. */
#define BASE64_DECODED_MAX(n) ((n) / 4 * 3)

/* Decodes in[0..n) into out and NUL-terminates it; out holds cap bytes,
 * which must be at least BASE64_DECODED_MAX(n) + 1.  Returns the number of
 * bytes decoded (0 for n == 0), or -1 when the text is not base64 or out is
 * too small. */
ssize_t base64_decode(const char *in, size_t n, unsigned char *out, size_t cap);

/* base64_decode into a new NUL-terminated buffer (the caller frees it);
 * NULL when the text is not base64. */
unsigned char *base64_decode_alloc(const char *in, size_t n, size_t *outlen);

#endif
