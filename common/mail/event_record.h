/* event_record — the one builder of event.v1 records (schemas/event.v1.json),
 * in the SES event-publishing shape: eventType, mail{...} and one object
 * named after the type, so existing SES event consumers read them
 * unchanged.  send (Delivery, Bounce, DeliveryDelay, Suppressed), feedback
 * (Bounce, Complaint, Unsubscribe) and links (Download) all build here.
 * One event per recipient outcome; status strings are RFC 3463 codes
 * ("5.1.1").  Text from outside (server replies, diagnostics) is escaped by
 * jansson and invalid UTF-8 in it becomes '?'. */
#ifndef MF_EVENT_RECORD_H
#define MF_EVENT_RECORD_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The message an event is about (borrowed strings). */
struct event_mail {
    const char *message_id;        /* mail.messageId: the outbound id when we sent it */
    const char *inbound_id;        /* top-level inbound_id; NULL = absent */
    const char *source;            /* From address; NULL = mail holds messageId only */
    const char *subject;           /* mail.commonHeaders.subject; may be NULL */
    int64_t sent_ms;               /* mail.timestamp; <= 0 = the event's time */
    const char *const *destination;
    size_t n_destination;
};

/* One recipient of a Bounce or DeliveryDelay; NULL fields are left out. */
struct event_recipient {
    const char *address;
    const char *action;            /* "failed" (Bounce only) */
    const char *status;
    const char *diagnostic;
};

/* Each returns a malloc'd compact JSON document (NUL-terminated, *len set
 * when len is not NULL) with a new id.  now_ms stamps the event. */
char *event_record_delivery(const struct event_mail *m, const char *rcpt, const char *smtp_response,
                            int64_t processing_ms, const char *reporting_mta, int64_t now_ms, size_t *len);
/* bounce_type "Permanent" / "Transient" / "Undetermined"; sub_type "General",
 * "MailboxFull"...; reporting_mta may be NULL. */
char *event_record_bounce(const struct event_mail *m, const struct event_recipient *r,
                          const char *bounce_type, const char *sub_type, const char *reporting_mta,
                          int64_t now_ms, size_t *len);
char *event_record_delay(const struct event_mail *m, const struct event_recipient *r,
                         int64_t expiration_ms, const char *reporting_mta, int64_t now_ms, size_t *len);
/* reason: the suppression record's reason (BOUNCE, COMPLAINT, UNSUBSCRIBE,
 * MANUAL; anything else is reported as MANUAL); list: the per-list entry that
 * matched, or NULL for an address-wide one. */
char *event_record_suppressed(const struct event_mail *m, const char *rcpt, const char *reason,
                              const char *list, int64_t now_ms, size_t *len);
/* feedback_type: ARF Feedback-Type or SES complaintFeedbackType; may be NULL. */
char *event_record_complaint(const struct event_mail *m, const char *rcpt, const char *feedback_type,
                             int64_t now_ms, size_t *len);
/* No mail object: an unsubscribe is about an address.  method "one-click" or
 * "mailto"; list and feedback_id may be NULL. */
char *event_record_unsubscribe(const char *rcpt, const char *list, const char *method,
                               const char *feedback_id, int64_t now_ms, size_t *len);
/* user_agent may be NULL (cut to 1024 bytes). */
char *event_record_download(const struct event_mail *m, const char *ip, const char *user_agent,
                            const char *name, const char *key, int status, uint64_t bytes,
                            int64_t now_ms, size_t *len);

/* Parses an event.v1 value strictly (jsonx_record_parse) and checks that
 * eventType is a string.  NULL + err on error. */
json_t *event_record_parse(const void *buf, size_t len, char *err, size_t errlen);

#endif
