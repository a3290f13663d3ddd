/* send_int — what the send worker's files share (not for other workers).
 * send.c owns the sender (settings, state dbs, the bus) and the lanes;
 * send_batch.c delivers a lane's batch; send_record.c reads one outbound
 * record and builds each recipient's copy. */
#ifndef MF_SEND_INT_H
#define MF_SEND_INT_H
#include "address.h"
#include "event_record.h"
#include "ids.h"
#include "sent_marks.h"
#include "transport.h"
#include "worker_loop.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sender {
    const struct config *cfg;
    stop_flag_t *stop;
    struct http_server *http;        /* readiness checks of the lanes' loops; may be NULL */
    struct bus *bus;
    struct sent_marks *marks;
    struct suppression_copy *supp;
    struct ratelimit *rl;
    struct send_hold *hold;          /* the transport refuses our account: all lanes wait */
    struct dkim_signer *dkim;
    struct tokens *tokens;
    struct verp_keys *verp_keys;   /* makes with the sign key, see verp.h */
    char *pause_file;
    char *transport_uri;
    struct transport_config tc;
    char *smtp_password, *ses_access, *ses_secret, *ses_token;
    int64_t max_age_ms, unsub_ttl_ms;
    int64_t denied_max_ms;           /* a record SES denies access this long goes to the DLQ */
    size_t batch_max;
    bool list_unsubscribe;
    char **tiers;
    int64_t *tier_ms;
    size_t n_tiers;
    struct {
        struct metric *delivered, *deferred, *bounced_perm, *bounced_trans, *bounced_undetermined;
        struct metric *suppressed_res, *dead;
        struct metric *suppressed, *attempt_seconds, *rl_tokens, *rl_rate, *rl_burst, *paused;
    } m;
};

/* One consuming thread: the outbound topic or one retry tier. */
struct lane {
    struct sender *w;
    char topic[128];
    char group[160];
    int tier;                      /* -1 = the outbound topic */
    pthread_t tid;
    struct transport *t;
    struct sent_journal *journal;  /* this lane's sent markers (sent_marks.h) */
    struct store *store[2];        /* incoming, attachments: opened on first use */
    struct bus_consumer *c;
    struct worker_loop *loop;
    struct send_batch *b;          /* the batch between batch_begin and batch_end */
    char denied_id[ID_LEN + 1];    /* the record SES denies access (AccessDenied) ... */
    int64_t denied_since;          /* ... since then (mono ms); "" when none */
    int rc;
};

/* One input record of a batch. */
struct rec_ctx {
    struct bus_record *r;
    size_t idx;                    /* in the batch */
    json_t *doc;
    const char *id, *inbound_id, *subject, *list;
    char from_addr[ADDRESS_BUFSZ];
    const char *dead_stage;
    char **rcpts;                  /* normalized */
    size_t n_rcpts;
    char *body;
    size_t body_len;
    int64_t created_ms, first_ms;
    int attempt;
    struct event_mail mail;
    json_t *retry;                 /* recipients for the next tier */
    const char *dead_class;
    char dead_msg[256];
};

struct job_ctx {
    struct lane *lane;
    struct rec_ctx *rc;
    char rcpt[ADDRESS_BUFSZ];
    char mail_from[ADDRESS_BUFSZ + 64];
    char *prefix;
    size_t prefix_len;
    int64_t done_ms;               /* when the transport finished it */
};

/* send_record.c */
/* Reads rc->r into rc (recipients normalized, body loaded and CRLF).
 * 0 ok, 1 dead (rc->dead_*), -1 transient (retry the record later). */
int send_record_parse(struct lane *l, struct rec_ctx *rc);
void send_record_free(struct rec_ctx *rc);
/* The compact VERP token (common/verp) of a message and recipient; use
 * "verp" for the return path, anything else for the mailto unsubscribe.
 * malloc'd. */
char *send_record_verp_token(struct sender *w, const char *id, const char *rcpt, const char *use);
/* j->prefix: the headers put before rc's message for j's recipient
 * (List-Unsubscribe, DKIM-Signature).  0, or -EINVAL with err set. */
int send_record_prefix(struct sender *w, struct rec_ctx *rc, struct job_ctx *j, char *err, size_t errlen);

/* send_batch.c: a lane's handler on the common loop (opaque = the lane). */
extern const struct wl_handler send_batch_handler;

#endif
