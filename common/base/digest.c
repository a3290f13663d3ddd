/* digest — SHA-256 to hex, once.  OpenSSL failing a plain digest is not
 * something a caller can recover from, so it panics. */
#include "digest.h"

#include "ids.h"
#include "log.h"

void sha256_hex(const void *data, size_t len, char out[SHA256_HEX_LEN + 1])
{
    unsigned char md[32];
    unsigned int mdlen = 0;

    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        panic("%s: EVP_Digest failed", __func__);
    hex_encode(md, 32, out);
}

void sha256_final_hex(EVP_MD_CTX *md, char out[SHA256_HEX_LEN + 1])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;

    if (!EVP_DigestFinal_ex(md, d, &dl) || dl != 32)
        panic("%s: EVP_DigestFinal_ex failed", __func__);
    hex_encode(d, 32, out);
}
