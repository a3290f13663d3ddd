/* dkim_signer — DKIM signatures (RFC 6376) with libopendkim: relaxed/relaxed,
 * rsa-sha256 or ed25519-sha256 (RFC 8463), over From, To, Subject, Date,
 * Message-ID, MIME-Version, Content-Type, List-Unsubscribe and
 * List-Unsubscribe-Post (those present).  Named dkim_signer rather than dkim
 * so it never collides with libopendkim's <dkim.h> and dkim_* symbols.
 * Thread-safe: each signature uses its own libopendkim handle. */
#ifndef MF_SEND_DKIM_SIGNER_H
#define MF_SEND_DKIM_SIGNER_H
#include <stddef.h>

struct dkim_signer;

/* alg: "rsa-sha256" or "ed25519-sha256".  key_file: PEM private key (RSA), or
 * for ed25519 the base64 of the 32-byte seed or a PEM PKCS#8 key. */
struct dkim_signer *dkim_signer_new(const char *alg, const char *selector, const char *domain,
                                    const char *key_file, char *err, size_t errlen);
void dkim_signer_free(struct dkim_signer *s);   /* accepts NULL */

/* Signs the message prefix+body (CRLF line ends).  Returns the malloc'd
 * header field "DKIM-Signature: ...\r\n" (folded with CRLF) to prepend, or
 * NULL with err filled. */
char *dkim_signer_sign(struct dkim_signer *s, const char *id, const char *prefix, size_t plen,
                       const char *body, size_t blen, char *err, size_t errlen);

#endif
