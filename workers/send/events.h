/* events — event.v1 records in the SES event-publishing shape (eventType,
 * mail{...}, delivery / bounce / deliveryDelay / suppressed{...}), so existing
 * SES event consumers read them unchanged (schemas/event.v1.json).  One event
 * per recipient outcome; status strings are RFC 3463 codes ("5.1.1"). */
#ifndef MF_SEND_EVENTS_H
#define MF_SEND_EVENTS_H
#include <stddef.h>
#include <stdint.h>

/* The message an event is about (borrowed strings). */
struct events_mail {
    const char *message_id;        /* outbound id */
    const char *inbound_id;        /* may be NULL */
    const char *source;            /* From address */
    const char *subject;           /* may be NULL */
    int64_t sent_ms;               /* when the outbound record was created */
    const char *const *destination;
    size_t n_destination;
};

/* Each returns a malloc'd JSON document (NUL-terminated, *len set). */
char *events_delivery(const struct events_mail *m, const char *rcpt, const char *smtp_response,
                      int64_t processing_ms, const char *reporting_mta, int64_t now_ms, size_t *len);
/* bounce_type "Permanent" / "Transient"; sub_type "General", "MailboxFull"... */
char *events_bounce(const struct events_mail *m, const char *rcpt, const char *bounce_type,
                    const char *sub_type, const char *status, const char *diagnostic,
                    const char *reporting_mta, int64_t now_ms, size_t *len);
char *events_delay(const struct events_mail *m, const char *rcpt, const char *status,
                   const char *diagnostic, int64_t expiration_ms, const char *reporting_mta,
                   int64_t now_ms, size_t *len);
/* reason: the suppression record's reason (BOUNCE, COMPLAINT, UNSUBSCRIBE,
 * MANUAL; anything else is reported as MANUAL); list: the per-list entry that
 * matched, or NULL for an address-wide one. */
char *events_suppressed(const struct events_mail *m, const char *rcpt, const char *reason,
                        const char *list, int64_t now_ms, size_t *len);

#endif
