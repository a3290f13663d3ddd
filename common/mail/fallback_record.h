/* fallback_record — fallback.v1 (schemas/fallback.v1.json): a message that
 * was not fully distributed, for a human.  Written by transform (recipient
 * and attachment problems) and feedback (bounces it cannot classify). */
#ifndef MF_FALLBACK_RECORD_H
#define MF_FALLBACK_RECORD_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct fallback_fields {
    const char *id;                        /* NULL: a new UUIDv7 */
    const char *inbound_id;                /* the inbound message, or NULL ... */
    const char *feedback_id;               /* ... and this for undetermined_bounce */
    int64_t created_ms;
    const char *reason;                    /* the schema's enum */
    const char *details;
    const char *rule, *subject;            /* NULL: left out */
    const char *sender;                    /* NULL: "" */
    const char *const *found;              /* as written in the mail */
    size_t n_found;
    const char *const *invalid;
    size_t n_invalid;
    const char *const *not_allowed;        /* NULL: left out */
    size_t n_not_allowed;
    const char *const *sent_to;            /* NULL: left out */
    size_t n_sent_to;
    json_t *flagged;                       /* taken over; NULL: left out */
    json_t *links;                         /* taken over; NULL: [] */
};

/* A new fallback.v1 object (the caller owns it; jsonx_dumps to produce). */
json_t *fallback_record_new(const struct fallback_fields *f);

#endif
