/* transport — where send hands a message for one recipient:
 *
 *   outbox:<dir>            one .eml per recipient at <dir>/<rcpt>/<id>.eml
 *                           (temp + fsync + rename + fsync dir)
 *   smtp://host:port        relay via libcurl; STARTTLS required unless
 *   smtps://host:port       configured otherwise; AUTH; curl multi with N
 *                           parallel connections kept open between batches
 *   ses:<region>            SES v2 SendEmail (Raw), SigV4-signed HTTPS POST
 *
 * A batch of jobs is delivered at once; each job's result is filled in and
 * `done` is called as soon as that job finishes (send writes its sent marker
 * there, before anything else happens).  Once a job ends TRANSPORT_HOLD no
 * further job of the batch starts (those stay NOT_RUN): the service refuses
 * us, so the rest would be refused too.  A transport object is used by one
 * thread. */
#ifndef MF_SEND_TRANSPORT_H
#define MF_SEND_TRANSPORT_H
#include "stop.h"   /* stop_flag_t */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ratelimit;

struct transport_config {
    int connections;              /* parallel connections per transport (>= 1) */
    int per_domain;               /* max jobs in flight per recipient domain (>= 1) */
    const char *starttls;         /* "required" (default), "optional", "off" */
    const char *user;             /* AUTH, may be NULL */
    const char *password;
    const char *helo;             /* EHLO name */
    const char *ca_file;          /* may be NULL: system store */
    bool tls_verify;
    int64_t timeout_ms;           /* whole transfer */
    int64_t connect_timeout_ms;
    /* ses */
    const char *ses_endpoint;     /* NULL = https://email.<region>.amazonaws.com */
    const char *access_key, *secret_key, *session_token;
};

enum transport_result {
    TRANSPORT_NOT_RUN = 0,        /* not attempted (stopping) */
    TRANSPORT_OK,                 /* 2xx: delivered */
    TRANSPORT_TEMP,               /* 4xx, timeout, connection error: retry */
    TRANSPORT_PERM,               /* 5xx: bounce (Permanent: the recipient is suppressed) */
    TRANSPORT_UNDETERMINED,       /* the service refused this message for this recipient
                                     without showing the address is bad (SES: sandbox,
                                     content, size, bad request): bounce Undetermined,
                                     which feedback sends to review, suppressing nobody */
    TRANSPORT_HOLD,               /* the service refuses our account or sender, not
                                     the recipient (SES sending paused, quota, sender
                                     not verified): no bounce; stop using the
                                     transport for a while, then try again */
};

/* Why a transport holds (transport_job.hold_reason), a metric label each;
 * NULL-terminated. */
extern const char *const transport_hold_reasons[];

struct transport_job {
    /* in (borrowed) */
    const char *id;               /* outbound id (file name for outbox) */
    const char *mail_from;        /* envelope sender, a valid address */
    const char *rcpt;             /* normalized recipient */
    const char *from_addr;        /* header From address (SES FromEmailAddress) */
    const char *prefix;           /* per-recipient headers to prepend, CRLF lines */
    size_t prefix_len;
    const char *body;             /* the message (CRLF), shared between jobs */
    size_t body_len;
    void *opaque;                 /* the caller's */
    /* out */
    enum transport_result result;
    int code;                     /* SMTP / HTTP status, 0 when none */
    char status[16];              /* enhanced status "5.1.1" */
    char response[512];           /* server reply (one line) or local error */
    const char *hold_reason;      /* TRANSPORT_HOLD: one of transport_hold_reasons */
    int64_t elapsed_us;
};

typedef void (*transport_done_cb)(void *opaque, struct transport_job *job);

struct transport;

/* uri as above.  NULL + err on a bad uri or setting. */
struct transport *transport_open(const char *uri, const struct transport_config *tc, char *err,
                                 size_t errlen);
void transport_free(struct transport *t);   /* accepts NULL */
const char *transport_name(const struct transport *t);   /* "outbox", "smtp", "ses" */
/* Describes the peer for reportingMTA ("127.0.0.1:2525", "outbox"). */
const char *transport_peer(const struct transport *t);

/* Delivers jobs (each job's result starts NOT_RUN).  rl (may be NULL) is
 * asked for a token before each attempt.  When *stop becomes non-zero, or a
 * job ended TRANSPORT_HOLD, jobs not yet started stay NOT_RUN.  Returns 0. */
int transport_send(struct transport *t, struct transport_job *jobs, size_t n, struct ratelimit *rl,
                   transport_done_cb done, stop_flag_t *stop);

/* "550 5.1.1 <x>: User unknown" -> code 550, status "5.1.1" (or the default
 * "5.0.0" / "4.0.0" / "2.0.0" when the reply has none).  Exposed for tests. */
void transport_parse_reply(const char *line, int *code, char status[16]);

#endif
