/* feedback_int — what the feedback worker's files share (not for other
 * workers).  feedback.c owns struct feedback: it fills it in at start and
 * frees it at stop; the record handlers (feedback_records.c), the public HTTP
 * routes (feedback_http.c) and the suppression API (feedback_api.c) read it. */
#ifndef MF_FEEDBACK_INT_H
#define MF_FEEDBACK_INT_H
#include "bus.h"
#include "config.h"
#include "http.h"

#include <stddef.h>
#include <stdint.h>

/* A "seen" key a record of the batch being handled added (feedback_records.c). */
struct seen_held {
    char *key;
    size_t index;    /* the record's index in its batch */
};

struct feedback {
    const struct config *cfg;
    struct bus *bus;
    struct store *incoming;
    struct tokens *tokens;
    struct verp_keys *verp_keys;   /* checks with every token key (rotation) */
    struct suppression_copy *copy;
    struct kv *transient, *seen;
    struct bus_consumer *fc, *ec;
    struct worker_loop *floop, *eloop;
    char *api_token;
    char **arns;
    size_t n_arns;
    const char *cert_file;
    long transient_threshold;
    int64_t transient_window_ms;
    struct metric *m_bounce, *m_complaint, *m_unsub, *m_forged, *m_review, *m_suppressed,
                  *m_sns_rejected;
    /* The batch being handled (one thread runs both loops in turn): where
     * the outputs of record out_index go, and the seen keys held until the
     * batch commits. */
    struct wl_batch *out;
    size_t out_index;
    struct seen_held *seen_batch;
    size_t n_seen, cap_seen;
};

/* feedback_records.c: one record of mailfleet.feedback / mailfleet.events.
 * 0 = done (bad records are logged and skipped), < 0 = store or bus trouble:
 * try the record again. */
int feedback_records_handle(struct feedback *f, const struct bus_record *r);
int feedback_records_handle_event(struct feedback *f, const struct bus_record *r);
/* After a batch of either loop: writes the seen keys of its first committed
 * records, drops the rest. */
void feedback_records_batch_end(struct feedback *f, size_t committed);
/* Drops the seen keys record index of the batch added: it is retried. */
void feedback_records_forget(struct feedback *f, size_t index);
/* One-click token "u|rcpt|list" -> address, list; 0 when it verifies. */
int feedback_records_unsub_lookup(struct feedback *f, const char *tok, char *rcpt, size_t rlen, char *list,
                                  size_t llen);

/* feedback_http.c: POST|GET /u/<token> and POST /sns (opaque = the feedback). */
void feedback_http_unsubscribe(void *opaque, const struct http_request *req, struct http_response *resp);
void feedback_http_sns(void *opaque, const struct http_request *req, struct http_response *resp);

/* feedback_api.c: /v2/email/suppression/... (opaque = the feedback). */
void feedback_api_serve(void *opaque, const struct http_request *req, struct http_response *resp);

#endif
