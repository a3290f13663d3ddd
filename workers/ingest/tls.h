/* tls — OpenSSL server contexts and per-connection TLS over memory BIOs, so
 * the transport (libuv streams) moves the ciphertext and OpenSSL never touches
 * a socket.  TLS 1.2 minimum. */
#ifndef MF_INGEST_TLS_H
#define MF_INGEST_TLS_H
#include <stddef.h>
#include <stdint.h>

struct strbuf;
struct tls_ctx;
struct tls_conn;

/* Loads cert chain and key (PEM).  NULL + err on failure. */
struct tls_ctx *tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *c);   /* connections keep their own reference */
/* The leaf certificate's notAfter, seconds since the epoch (0: unknown). */
int64_t tls_ctx_not_after(const struct tls_ctx *c);

/* Writes a self-signed certificate (EC P-256, 10 years, CN and SAN = cn and
 * 127.0.0.1) and its key (mode 0600) when cert_file is missing.  0 = written
 * or already there, <0 on error. */
int tls_generate_self_signed(const char *cert_file, const char *key_file, const char *cn, char *err,
                             size_t errlen);

struct tls_conn *tls_conn_new(struct tls_ctx *ctx);
void tls_conn_free(struct tls_conn *t);   /* accepts NULL */

/* Ciphertext from the peer in; decrypted bytes appended to plain, bytes for
 * the peer appended to net.  0 ok, -EPROTO on a TLS failure, -ECONNRESET
 * after the peer's close_notify. */
int tls_conn_feed(struct tls_conn *t, const void *buf, size_t len, struct strbuf *plain,
                  struct strbuf *net);
/* Encrypts plaintext into net (only after the handshake). */
int tls_conn_write(struct tls_conn *t, const void *buf, size_t len, struct strbuf *net);
void tls_conn_close_notify(struct tls_conn *t, struct strbuf *net);
int tls_conn_ready(const struct tls_conn *t);   /* handshake done */
const char *tls_conn_version(const struct tls_conn *t);
const char *tls_conn_cipher(const struct tls_conn *t);

#endif
