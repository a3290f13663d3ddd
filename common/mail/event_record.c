/* event_record — event.v1 built with jansson, never by hand: server replies
 * and diagnostics are untrusted text and must be escaped. */
#include "event_record.h"
#include "ids.h"
#include "jsonx.h"
#include "timeutil.h"
#include "topics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *jtime(int64_t ms)
{
    char buf[32];
    return json_string(rfc3339_ms(ms, buf, sizeof(buf)));
}

/* schema, id, eventType and (when m is not NULL) inbound_id and mail. */
static json_t *event_new(const char *type, const struct event_mail *m, int64_t now_ms)
{
    char id[ID_LEN + 1];
    json_t *ev = jsonx_record_new(SCHEMA_EVENT);
    jsonx_set(ev, "id", json_string(id_new(id)));
    jsonx_set(ev, "eventType", json_string(type));
    if (!m)
        return ev;
    if (m->inbound_id)
        jsonx_set(ev, "inbound_id", jsonx_text(m->inbound_id));
    json_t *mail = json_object();
    if (m->source) {
        jsonx_set(mail, "timestamp", jtime(m->sent_ms > 0 ? m->sent_ms : now_ms));
        jsonx_set(mail, "messageId", jsonx_text(m->message_id));
        jsonx_set(mail, "source", jsonx_text(m->source));
        json_t *dest = json_array();
        for (size_t i = 0; i < m->n_destination; i++)
            json_array_append_new(dest, jsonx_text(m->destination[i]));
        jsonx_set(mail, "destination", dest);
    } else {
        jsonx_set(mail, "messageId", jsonx_text(m->message_id));
    }
    if (m->subject) {
        json_t *ch = json_object();
        jsonx_set(ch, "subject", jsonx_text(m->subject));
        jsonx_set(mail, "commonHeaders", ch);
    }
    jsonx_set(ev, "mail", mail);
    return ev;
}

static char *finish(json_t *ev, const char *type_key, json_t *body, size_t *len)
{
    jsonx_set(ev, type_key, body);
    char *s = jsonx_dumps(ev, len);
    json_decref(ev);
    return s;
}

/* {emailAddress, action?, status?, diagnosticCode?} */
static json_t *recipient(const struct event_recipient *r)
{
    json_t *o = json_object();
    jsonx_set(o, "emailAddress", jsonx_text(r->address));
    if (r->action)
        jsonx_set(o, "action", jsonx_text(r->action));
    if (r->status)
        jsonx_set(o, "status", jsonx_text(r->status));
    if (r->diagnostic)
        jsonx_set(o, "diagnosticCode", jsonx_text(r->diagnostic));
    return o;
}

char *event_record_delivery(const struct event_mail *m, const char *rcpt, const char *smtp_response,
                            int64_t processing_ms, const char *reporting_mta, int64_t now_ms, size_t *len)
{
    json_t *ev = event_new("Delivery", m, now_ms);
    json_t *d = json_object();
    jsonx_set(d, "timestamp", jtime(now_ms));
    jsonx_set(d, "processingTimeMillis", json_integer(processing_ms < 0 ? 0 : processing_ms));
    json_t *r = json_array();
    json_array_append_new(r, jsonx_text(rcpt));
    jsonx_set(d, "recipients", r);
    jsonx_set(d, "smtpResponse", jsonx_text(smtp_response));
    jsonx_set(d, "reportingMTA", jsonx_text(reporting_mta));
    return finish(ev, "delivery", d, len);
}

char *event_record_bounce(const struct event_mail *m, const struct event_recipient *r,
                          const char *bounce_type, const char *sub_type, const char *reporting_mta,
                          int64_t now_ms, size_t *len)
{
    json_t *ev = event_new("Bounce", m, now_ms);
    json_t *b = json_object();
    jsonx_set(b, "bounceType", jsonx_text(bounce_type));
    jsonx_set(b, "bounceSubType", jsonx_text(sub_type));
    json_t *rs = json_array();
    json_array_append_new(rs, recipient(r));
    jsonx_set(b, "bouncedRecipients", rs);
    jsonx_set(b, "timestamp", jtime(now_ms));
    if (reporting_mta)
        jsonx_set(b, "reportingMTA", jsonx_text(reporting_mta));
    return finish(ev, "bounce", b, len);
}

char *event_record_delay(const struct event_mail *m, const struct event_recipient *r,
                         int64_t expiration_ms, const char *reporting_mta, int64_t now_ms, size_t *len)
{
    json_t *ev = event_new("DeliveryDelay", m, now_ms);
    json_t *d = json_object();
    jsonx_set(d, "timestamp", jtime(now_ms));
    jsonx_set(d, "delayType", json_string("TransientCommunicationFailure"));
    jsonx_set(d, "expirationTime", jtime(expiration_ms));
    jsonx_set(d, "reportingMTA", jsonx_text(reporting_mta));
    json_t *rs = json_array();
    json_array_append_new(rs, recipient(r));
    jsonx_set(d, "delayedRecipients", rs);
    return finish(ev, "deliveryDelay", d, len);
}

char *event_record_suppressed(const struct event_mail *m, const char *rcpt, const char *reason,
                              const char *list, int64_t now_ms, size_t *len)
{
    static const char *const known[] = { "BOUNCE", "COMPLAINT", "UNSUBSCRIBE", "MANUAL", NULL };
    const char *why = "MANUAL";
    for (size_t i = 0; reason && known[i]; i++)
        if (strcmp(reason, known[i]) == 0)
            why = known[i];
    json_t *ev = event_new("Suppressed", m, now_ms);
    json_t *s = json_object();
    jsonx_set(s, "timestamp", jtime(now_ms));
    json_t *rs = json_array(), *one = json_object();
    jsonx_set(one, "emailAddress", jsonx_text(rcpt));
    jsonx_set(one, "reason", json_string(why));
    if (list && *list)
        jsonx_set(one, "list", jsonx_text(list));
    json_array_append_new(rs, one);
    jsonx_set(s, "suppressedRecipients", rs);
    return finish(ev, "suppressed", s, len);
}

char *event_record_complaint(const struct event_mail *m, const char *rcpt, const char *feedback_type,
                             int64_t now_ms, size_t *len)
{
    json_t *ev = event_new("Complaint", m, now_ms);
    json_t *c = json_object();
    json_t *rs = json_array(), *one = json_object();
    jsonx_set(one, "emailAddress", jsonx_text(rcpt));
    json_array_append_new(rs, one);
    jsonx_set(c, "complainedRecipients", rs);
    jsonx_set(c, "timestamp", jtime(now_ms));
    if (feedback_type && *feedback_type)
        jsonx_set(c, "complaintFeedbackType", jsonx_text(feedback_type));
    return finish(ev, "complaint", c, len);
}

char *event_record_unsubscribe(const char *rcpt, const char *list, const char *method,
                               const char *feedback_id, int64_t now_ms, size_t *len)
{
    json_t *ev = event_new("Unsubscribe", NULL, now_ms);
    json_t *u = json_object();
    jsonx_set(u, "timestamp", jtime(now_ms));
    jsonx_set(u, "emailAddress", jsonx_text(rcpt));
    jsonx_set(u, "method", jsonx_text(method));
    if (list && *list)
        jsonx_set(u, "list", jsonx_text(list));
    if (feedback_id && id_valid(feedback_id))
        jsonx_set(u, "feedbackId", json_string(feedback_id));
    return finish(ev, "unsubscribe", u, len);
}

char *event_record_download(const struct event_mail *m, const char *ip, const char *user_agent,
                            const char *name, const char *key, int status, uint64_t bytes,
                            int64_t now_ms, size_t *len)
{
    json_t *ev = event_new("Download", m, now_ms);
    json_t *d = json_object();
    jsonx_set(d, "timestamp", jtime(now_ms));
    jsonx_set(d, "ipAddress", jsonx_text(ip));
    if (user_agent) {
        char ua[1025];
        snprintf(ua, sizeof(ua), "%s", user_agent);
        jsonx_set(d, "userAgent", jsonx_text(ua));
    }
    jsonx_set(d, "name", jsonx_text(name));
    jsonx_set(d, "key", jsonx_text(key));
    jsonx_set(d, "status", json_integer(status));
    jsonx_set(d, "bytes", json_integer((json_int_t)bytes));
    return finish(ev, "download", d, len);
}

json_t *event_record_parse(const void *buf, size_t len, char *err, size_t errlen)
{
    json_t *ev = jsonx_record_parse(buf, len, SCHEMA_EVENT, err, errlen);
    const char *type;
    if (ev && jsonx_want_str(ev, "eventType", 1, &type, err, errlen) != 0) {
        json_decref(ev);
        return NULL;
    }
    return ev;
}
