/* smtp_session — one ESMTP dialogue, independent of sockets and TLS.
 *
 * The transport (smtp_server.c, or a test) feeds received plaintext with
 * smtp_session_input() and gets replies through io->write.  Slow steps are
 * asynchronous: io->auth and io->submit start them and the transport answers
 * with smtp_session_auth_done() / smtp_session_submit_done(); meanwhile input
 * is buffered (the session asks the transport to stop reading through io->flow
 * when the buffer grows).  After STARTTLS the session discards whatever
 * plaintext followed the command and calls io->starttls.
 *
 * DATA ends only at CRLF.CRLF.  bare_lf = normalize accepts lines ended by a
 * bare LF and stores them with CRLF, but a "." line counts as the end only
 * when both it and the line before it end with a real CRLF; bare_lf = reject
 * refuses a message with a bare LF (550 5.5.2).  A bare CR always refuses the
 * message (550 5.5.2).  Errors found inside DATA are answered at its end. */
#ifndef MF_INGEST_SMTP_SESSION_H
#define MF_INGEST_SMTP_SESSION_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "address.h"
#include "ids.h"
#include "strbuf.h"

struct rules;
struct smtp_session;

struct smtp_session_conf {
    const char *hostname;          /* banner, EHLO, Received: */
    uint64_t max_size;             /* SIZE; message bytes without Received: */
    size_t max_line;               /* including CRLF (1000) */
    size_t max_header;             /* header block bytes */
    unsigned max_rcpt;             /* recipients per message */
    int bare_lf_reject;            /* 0 = normalize */
    int allow_plaintext_auth;
    int tls_available;             /* STARTTLS offered */
    unsigned max_errors;           /* bad commands before 421 */
    unsigned max_junk;             /* RSET NOOP VRFY EXPN HELP allowed before each
                                      counts as an error, reset when a message is
                                      queued (0 = no limit) */
    const struct rules *rules;
    long *buffered;                /* mail bytes held by all sessions (atomic), or NULL */
    long max_buffered;             /* past it DATA gets 452 4.3.1; 0 = no cap */
    const atomic_int *storage_low; /* set: MAIL FROM gets 452 4.3.1 (disk below reserve) */
};

struct smtp_rcpt {
    char addr[ADDRESS_BUFSZ];
    int rule;
};

/* A complete message handed to io->submit; owned by the session until
 * smtp_session_submit_done().  data holds the Received: header (received_len
 * bytes) followed by the message with CRLF line ends, dots unstuffed. */
struct smtp_message {
    char id[ID_LEN + 1];
    char mail_from[ADDRESS_BUFSZ];   /* "" = null sender */
    struct smtp_rcpt *rcpts;
    size_t n_rcpts;
    const char *helo, *client_ip, *auth_user;
    int tls;
    const char *tls_version, *tls_cipher;   /* filled by the transport */
    int64_t received_ms;
    size_t received_len;
    struct strbuf data;
};

struct smtp_session_io {
    void *opaque;
    void (*write)(void *opaque, const char *buf, size_t len);
    void (*starttls)(void *opaque);   /* the 220 is written; TLS starts now */
    void (*close)(void *opaque);      /* close after the written replies */
    void (*auth)(void *opaque, const char *user, const char *pass);
    void (*submit)(void *opaque, struct smtp_message *m);
    void (*flow)(void *opaque, int reading);   /* stop (0) / resume (1) reading */
};

struct smtp_session *smtp_session_new(const struct smtp_session_conf *conf,
                                      const struct smtp_session_io *io, const char *client_ip,
                                      int tls);
void smtp_session_free(struct smtp_session *s);   /* accepts NULL */
/* Before start: MAIL needs AUTH first (530 5.7.0), the submission port's rule. */
void smtp_session_require_auth(struct smtp_session *s);

void smtp_session_start(struct smtp_session *s);  /* writes the 220 banner */
void smtp_session_input(struct smtp_session *s, const char *buf, size_t len);
/* ok: 1 accepted, 0 wrong credentials (535), -1 refused for now (454). */
void smtp_session_auth_done(struct smtp_session *s, const char *user, int ok);
/* code/text: the reply for the message, e.g. 250 "2.0.0 Ok: queued as <id>". */
void smtp_session_submit_done(struct smtp_session *s, int code, const char *text);
/* The transport's timer fired / the server drains: 421 and close. */
void smtp_session_timeout(struct smtp_session *s);
void smtp_session_too_slow(struct smtp_session *s);   /* DATA under the minimum rate */
void smtp_session_shutdown(struct smtp_session *s);

int smtp_session_in_data(const struct smtp_session *s);   /* data timeout applies */
int smtp_session_busy(const struct smtp_session *s);      /* waiting on auth/submit */
int smtp_session_closing(const struct smtp_session *s);

#endif
