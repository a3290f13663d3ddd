/* tokens — HMAC-SHA256 tokens: key id + expiry + payload, URL-safe.
 *
 *   token = base64url( kid "." expiry_s "." payload ) "." base64url(mac)
 *   mac   = HMAC-SHA256(key[kid], the first part)
 *
 * One sign key, several verify keys (rotation).  Verification is constant time
 * in the MAC (CRYPTO_memcmp).  Payloads are opaque bytes chosen by the caller
 * (a link's object key, a VERP message id + recipient, an unsubscribe target). */
#ifndef MF_TOKENS_H
#define MF_TOKENS_H
#include <stddef.h>
#include <stdint.h>

struct tokens;

enum token_result { TOKEN_OK = 0, TOKEN_BAD = -1, TOKEN_EXPIRED = -2, TOKEN_UNKNOWN_KEY = -3 };

/* keys: "kid:secret" entries (secret is hex of >= 16 bytes, or text >= 16 chars);
 * the first is the sign key.  NULL + err on bad input. */
struct tokens *tokens_new(const char *const *keys, size_t n, char *err, size_t errlen);
void tokens_free(struct tokens *t);

/* malloc'd token; expires_s = absolute epoch seconds (0 = never). */
char *tokens_sign(struct tokens *t, const void *payload, size_t len, int64_t expires_s);
/* How many keys are configured, and tokens_sign() with keys[key] instead of the
 * sign key (key < tokens_count()), for callers that derive one value per key
 * (common/mail/verp's MAC keys) and must accept all of them. */
size_t tokens_count(const struct tokens *t);
char *tokens_sign_key(struct tokens *t, size_t key, const void *payload, size_t len, int64_t expires_s);
/* On TOKEN_OK *payload is malloc'd (NUL-terminated), *expires_s set. */
enum token_result tokens_verify(struct tokens *t, const char *token, int64_t now_s,
                                char **payload, size_t *len, int64_t *expires_s);

/* base64url without padding, shared with others. */
char *b64url_encode(const void *in, size_t n);
int   b64url_decode(const char *in, unsigned char **out, size_t *outlen);

#endif
