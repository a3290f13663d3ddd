/* events — builds event.v1 JSON with jansson (never by hand: server replies
 * and diagnostics are untrusted text and must be escaped). */
#include "events.h"
#include "topics.h"
#include "ids.h"
#include "log.h"
#include "strbuf.h"
#include "timeutil.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static json_t *jstr(const char *s)
{
    /* Server replies may hold invalid UTF-8: json_string() would refuse it,
     * so fall back to a lossy copy rather than dropping the field. */
    json_t *j = json_string(s ? s : "");
    if (!j) {
        char *copy = xstrdup(s);
        for (char *p = copy; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        j = json_string(copy);
        free(copy);
    }
    return j;
}

static json_t *jtime(int64_t ms)
{
    char buf[32];
    return json_string(rfc3339_ms(ms, buf, sizeof(buf)));
}

static json_t *event_new(const char *type, const struct events_mail *m, int64_t now_ms)
{
    char id[ID_LEN + 1];
    json_t *ev = json_object();
    json_object_set_new(ev, "schema", json_string(SCHEMA_EVENT));
    json_object_set_new(ev, "id", json_string(id_new(id)));
    json_object_set_new(ev, "eventType", json_string(type));
    if (m->inbound_id)
        json_object_set_new(ev, "inbound_id", jstr(m->inbound_id));

    json_t *mail = json_object();
    json_object_set_new(mail, "timestamp", jtime(m->sent_ms > 0 ? m->sent_ms : now_ms));
    json_object_set_new(mail, "messageId", jstr(m->message_id));
    json_object_set_new(mail, "source", jstr(m->source));
    json_t *dest = json_array();
    for (size_t i = 0; i < m->n_destination; i++)
        json_array_append_new(dest, jstr(m->destination[i]));
    json_object_set_new(mail, "destination", dest);
    if (m->subject) {
        json_t *ch = json_object();
        json_object_set_new(ch, "subject", jstr(m->subject));
        json_object_set_new(mail, "commonHeaders", ch);
    }
    json_object_set_new(ev, "mail", mail);
    return ev;
}

static char *finish(json_t *ev, size_t *len)
{
    char *s = json_dumps(ev, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(ev);
    if (!s)
        panic("%s: json_dumps failed", __func__);
    if (len)
        *len = strlen(s);
    return s;
}

char *events_delivery(const struct events_mail *m, const char *rcpt, const char *smtp_response,
                      int64_t processing_ms, const char *reporting_mta, int64_t now_ms, size_t *len)
{
    json_t *ev = event_new("Delivery", m, now_ms);
    json_t *d = json_object();
    json_object_set_new(d, "timestamp", jtime(now_ms));
    json_object_set_new(d, "processingTimeMillis", json_integer(processing_ms < 0 ? 0 : processing_ms));
    json_t *r = json_array();
    json_array_append_new(r, jstr(rcpt));
    json_object_set_new(d, "recipients", r);
    json_object_set_new(d, "smtpResponse", jstr(smtp_response));
    json_object_set_new(d, "reportingMTA", jstr(reporting_mta));
    json_object_set_new(ev, "delivery", d);
    return finish(ev, len);
}

char *events_bounce(const struct events_mail *m, const char *rcpt, const char *bounce_type,
                    const char *sub_type, const char *status, const char *diagnostic,
                    const char *reporting_mta, int64_t now_ms, size_t *len)
{
    json_t *ev = event_new("Bounce", m, now_ms);
    json_t *b = json_object();
    json_object_set_new(b, "bounceType", json_string(bounce_type));
    json_object_set_new(b, "bounceSubType", json_string(sub_type));
    json_t *rs = json_array(), *r = json_object();
    json_object_set_new(r, "emailAddress", jstr(rcpt));
    json_object_set_new(r, "action", json_string("failed"));
    json_object_set_new(r, "status", jstr(status));
    json_object_set_new(r, "diagnosticCode", jstr(diagnostic));
    json_array_append_new(rs, r);
    json_object_set_new(b, "bouncedRecipients", rs);
    json_object_set_new(b, "timestamp", jtime(now_ms));
    json_object_set_new(b, "reportingMTA", jstr(reporting_mta));
    json_object_set_new(ev, "bounce", b);
    return finish(ev, len);
}

char *events_delay(const struct events_mail *m, const char *rcpt, const char *status,
                   const char *diagnostic, int64_t expiration_ms, const char *reporting_mta,
                   int64_t now_ms, size_t *len)
{
    json_t *ev = event_new("DeliveryDelay", m, now_ms);
    json_t *d = json_object();
    json_object_set_new(d, "timestamp", jtime(now_ms));
    json_object_set_new(d, "delayType", json_string("TransientCommunicationFailure"));
    json_object_set_new(d, "expirationTime", jtime(expiration_ms));
    json_object_set_new(d, "reportingMTA", jstr(reporting_mta));
    json_t *rs = json_array(), *r = json_object();
    json_object_set_new(r, "emailAddress", jstr(rcpt));
    json_object_set_new(r, "status", jstr(status));
    json_object_set_new(r, "diagnosticCode", jstr(diagnostic));
    json_array_append_new(rs, r);
    json_object_set_new(d, "delayedRecipients", rs);
    json_object_set_new(ev, "deliveryDelay", d);
    return finish(ev, len);
}

char *events_suppressed(const struct events_mail *m, const char *rcpt, const char *reason,
                        const char *list, int64_t now_ms, size_t *len)
{
    static const char *const known[] = { "BOUNCE", "COMPLAINT", "UNSUBSCRIBE", "MANUAL", NULL };
    const char *r = "MANUAL";
    for (size_t i = 0; reason && known[i]; i++)
        if (strcmp(reason, known[i]) == 0)
            r = known[i];
    json_t *ev = event_new("Suppressed", m, now_ms);
    json_t *s = json_object();
    json_object_set_new(s, "timestamp", jtime(now_ms));
    json_t *rs = json_array(), *one = json_object();
    json_object_set_new(one, "emailAddress", jstr(rcpt));
    json_object_set_new(one, "reason", json_string(r));
    if (list && *list)
        json_object_set_new(one, "list", jstr(list));
    json_array_append_new(rs, one);
    json_object_set_new(s, "suppressedRecipients", rs);
    json_object_set_new(ev, "suppressed", s);
    return finish(ev, len);
}
