/* sns_signer — a key and a self-signed certificate standing in for Amazon
 * SNS's, for the harnesses that verify SNS signatures (sns, http_routes).
 * Header-only, like fuzz.h. */
#ifndef MF_FUZZ_SNS_SIGNER_H
#define MF_FUZZ_SNS_SIGNER_H
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <string.h>

#include "fuzz.h"

static EVP_PKEY *sns_signer_key;
static char sns_signer_cert[512];

/* Makes the key and writes its certificate into the private directory
 * (sns_signer_cert: what sns_cert_file would name). */
static inline void sns_signer_init(void)
{
    sns_signer_key = EVP_RSA_gen(1024);   /* small: a signature per input */
    X509 *x = X509_new();
    if (!sns_signer_key || !x)
        panic("sns_signer: cannot make a key");
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, sns_signer_key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"sns.fuzz",
                               -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_sign(x, sns_signer_key, EVP_sha256());
    snprintf(sns_signer_cert, sizeof(sns_signer_cert), "%s/sns-cert.pem", fuzz_dir());
    FILE *f = fopen(sns_signer_cert, "w");
    if (!f || PEM_write_X509(f, x) != 1)
        panic("sns_signer: cannot write %s", sns_signer_cert);
    fclose(f);
    X509_free(x);
}

/* base64 of the signature of data as SignatureVersion version ("1": SHA-1,
 * else SHA-256) signs it; malloc'd. */
static inline char *sns_signer_sign(const char *data, const char *version)
{
    const EVP_MD *md = version && strcmp(version, "1") == 0 ? EVP_sha1() : EVP_sha256();
    unsigned char sig[512];
    size_t sl = sizeof(sig);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || EVP_DigestSignInit(c, NULL, md, NULL, sns_signer_key) != 1 ||
        EVP_DigestSign(c, sig, &sl, (const unsigned char *)data, strlen(data)) != 1)
        panic("sns_signer: cannot sign");
    EVP_MD_CTX_free(c);
    char *b64 = malloc(4 * sl / 3 + 8);
    if (!b64)
        abort();
    EVP_EncodeBlock((unsigned char *)b64, sig, (int)sl);
    return b64;
}

#endif
