/* feedback_record — feedback.v1 (schemas/feedback.v1.json): raw feedback for
 * the feedback worker.  Built by ingest (DSN/ARF mail, mailto unsubscribes)
 * and by the feedback worker's HTTP side (SNS posts, one-click
 * unsubscribes); read by the feedback worker. */
#ifndef MF_FEEDBACK_RECORD_H
#define MF_FEEDBACK_RECORD_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "inbound_record.h"   /* struct record_envelope, struct record_store */

/* kind "unsubscribe": what to unsubscribe (NULL fields are left out). */
struct feedback_unsubscribe {
    const char *method;                    /* "one-click" or "mailto" */
    const char *token;
    const char *address, *list, *client_ip;   /* only when already verified */
};

/* kind "sns": the SNS POST body's fields we keep. */
struct feedback_sns {
    const char *type, *message_id, *topic_arn, *message;
};

struct feedback_fields {
    const char *id;                        /* UUIDv7, also the record key */
    const char *kind;                      /* dsn, arf, sns, unsubscribe */
    int64_t received_ms;
    const char *rule;                      /* NULL: left out */
    const struct record_envelope *envelope;   /* mail kinds; NULL: left out */
    const struct record_store *store;      /* mail kinds; NULL: left out */
    const struct feedback_unsubscribe *unsubscribe;
    const struct feedback_sns *sns;
};

/* The record's value: malloc'd compact JSON, *len set when len is not NULL. */
char *feedback_record_build(const struct feedback_fields *f, size_t *len);

/* Parses strictly (jsonx_record_parse) and checks that id and kind are
 * strings and that envelope, store, unsubscribe and notification are objects
 * when present.  NULL + err on error. */
json_t *feedback_record_parse(const void *buf, size_t len, char *err, size_t errlen);

#endif
