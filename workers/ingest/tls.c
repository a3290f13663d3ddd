/* tls — OpenSSL with memory BIOs: rbio holds what the peer sent, wbio what
 * we must send; the caller moves bytes between them and the socket. */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "fsutil.h"
#include "log.h"
#include "strbuf.h"

struct tls_ctx {
    SSL_CTX *ctx;
};

struct tls_conn {
    SSL *ssl;
    BIO *rbio, *wbio;
    int ready;
};

static void ssl_error(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "unknown error";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, errlen, "%s: %s", what, buf);
    ERR_clear_error();
}

struct tls_ctx *tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_error(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* No renegotiation, no session tickets to rotate keys for. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        ssl_error(err, errlen, cert_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ssl_error(err, errlen, key_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    struct tls_ctx *c = xcalloc(1, sizeof(*c));
    c->ctx = ctx;
    return c;
}

int64_t tls_ctx_not_after(const struct tls_ctx *c)
{
    X509 *leaf = SSL_CTX_get0_certificate(c->ctx);
    struct tm tm;
    if (!leaf || ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

void tls_ctx_free(struct tls_ctx *c)
{
    if (!c)
        return;
    SSL_CTX_free(c->ctx);
    free(c);
}

int tls_generate_self_signed(const char *cert_file, const char *key_file, const char *cn, char *err,
                             size_t errlen)
{
    if (access(cert_file, R_OK) == 0 && access(key_file, R_OK) == 0)
        return 0;
    int rc = -EIO;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f = NULL;
    if (!pkey || !x) {
        ssl_error(err, errlen, "key generation");
        goto out;
    }
    X509_set_version(x, 2);
    unsigned char serial[16];
    FILE *r = fopen("/dev/urandom", "r");
    if (!r || fread(serial, 1, sizeof(serial), r) != sizeof(serial)) {
        if (r)
            fclose(r);
        snprintf(err, errlen, "cannot read /dev/urandom");
        goto out;
    }
    fclose(r);
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    char san[512];
    snprintf(san, sizeof(san), "DNS:%s,DNS:localhost,IP:127.0.0.1", cn);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    if (!ext) {
        ssl_error(err, errlen, "subjectAltName");
        goto out;
    }
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (!X509_sign(x, pkey, EVP_sha256())) {
        ssl_error(err, errlen, "X509_sign");
        goto out;
    }
    const char *files[] = { key_file, cert_file };
    for (size_t i = 0; i < 2; i++) {
        int mk = fs_mkdir_parent(files[i], 0755);
        if (mk < 0) {
            snprintf(err, errlen, "%s: cannot create its directory: %s", files[i], strerror(-mk));
            goto out;
        }
    }
    int fd = open(key_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || !(f = fdopen(fd, "w")) || !PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) ||
        fclose(f) != 0) {
        snprintf(err, errlen, "%s: cannot write", key_file);
        goto out;
    }
    f = fopen(cert_file, "w");
    if (!f || !PEM_write_X509(f, x) || fclose(f) != 0) {
        snprintf(err, errlen, "%s: cannot write", cert_file);
        f = NULL;
        goto out;
    }
    f = NULL;
    rc = 0;
out:
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx)
{
    struct tls_conn *t = xcalloc(1, sizeof(*t));
    t->ssl = SSL_new(ctx->ctx);   /* takes its own reference on the SSL_CTX */
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio)
        panic("%s: out of memory", __func__);
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    return t;
}

void tls_conn_free(struct tls_conn *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);   /* frees both BIOs */
    free(t);
}

static void drain_wbio(struct tls_conn *t, struct strbuf *net)
{
    char buf[16384];
    int n;
    while ((n = BIO_read(t->wbio, buf, sizeof(buf))) > 0)
        strbuf_append_n(net, buf, (size_t)n);
}

int tls_conn_feed(struct tls_conn *t, const void *buf, size_t len, struct strbuf *plain,
                  struct strbuf *net)
{
    if (len && BIO_write(t->rbio, buf, (int)len) != (int)len)
        panic("%s: BIO_write", __func__);
    int rc = 0;
    if (!t->ready) {
        int r = SSL_do_handshake(t->ssl);
        if (r == 1) {
            t->ready = 1;
        } else {
            int e = SSL_get_error(t->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                rc = -EPROTO;
        }
    }
    while (rc == 0 && t->ready) {
        char tmp[16384];
        int n = SSL_read(t->ssl, tmp, sizeof(tmp));
        if (n > 0) {
            strbuf_append_n(plain, tmp, (size_t)n);
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_ZERO_RETURN)
            rc = -ECONNRESET;
        else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            rc = -EPROTO;
        break;
    }
    ERR_clear_error();
    drain_wbio(t, net);
    return rc;
}

int tls_conn_write(struct tls_conn *t, const void *buf, size_t len, struct strbuf *net)
{
    const char *p = buf;
    while (len > 0) {
        int n = SSL_write(t->ssl, p, (int)(len > 16384 ? 16384 : len));
        if (n <= 0) {
            ERR_clear_error();
            drain_wbio(t, net);
            return -EPROTO;
        }
        p += n;
        len -= (size_t)n;
        drain_wbio(t, net);
    }
    return 0;
}

void tls_conn_close_notify(struct tls_conn *t, struct strbuf *net)
{
    if (t->ready)
        SSL_shutdown(t->ssl);
    ERR_clear_error();
    drain_wbio(t, net);
}

int tls_conn_ready(const struct tls_conn *t)
{
    return t->ready;
}

const char *tls_conn_version(const struct tls_conn *t)
{
    return SSL_get_version(t->ssl);
}

const char *tls_conn_cipher(const struct tls_conn *t)
{
    return SSL_get_cipher_name(t->ssl);
}
