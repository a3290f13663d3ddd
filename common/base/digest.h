/* digest — SHA-256 as lower-case hex: the form object checksums, spool and
 * revocation keys and SigV4 payload hashes all use. */
#ifndef MF_DIGEST_H
#define MF_DIGEST_H
#include <stddef.h>
#include <openssl/evp.h>

#define SHA256_HEX_LEN 64   /* + NUL */

/* hex(SHA-256(data[0..len))) into out. */
void sha256_hex(const void *data, size_t len, char out[SHA256_HEX_LEN + 1]);

/* Finishes a SHA-256 digest started with EVP_DigestInit_ex(md, EVP_sha256())
 * and writes its hex into out.  md can be initialised again afterwards. */
void sha256_final_hex(EVP_MD_CTX *md, char out[SHA256_HEX_LEN + 1]);

#endif
