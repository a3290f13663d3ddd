/* feedback_record — feedback.v1, one builder for ingest and feedback. */
#include "feedback_record.h"
#include "jsonx.h"
#include "topics.h"

#include <stdio.h>

static void set_opt(json_t *o, const char *key, const char *v)
{
    if (v)
        jsonx_set(o, key, jsonx_text(v));
}

char *feedback_record_build(const struct feedback_fields *f, size_t *len)
{
    json_t *o = jsonx_record_new(SCHEMA_FEEDBACK);
    jsonx_set(o, "id", jsonx_text(f->id));
    jsonx_set(o, "kind", jsonx_text(f->kind));
    jsonx_set_time(o, "received_at", f->received_ms);
    set_opt(o, "rule", f->rule);
    if (f->envelope)
        jsonx_set(o, "envelope", record_envelope_json(f->envelope));
    if (f->store)
        jsonx_set(o, "store", record_store_json(f->store));
    if (f->sns) {
        json_t *n = json_object();
        set_opt(n, "Type", f->sns->type);
        set_opt(n, "MessageId", f->sns->message_id);
        set_opt(n, "TopicArn", f->sns->topic_arn);
        set_opt(n, "Message", f->sns->message);
        jsonx_set(o, "notification", n);
    }
    if (f->unsubscribe) {
        json_t *u = json_object();
        set_opt(u, "method", f->unsubscribe->method);
        set_opt(u, "token", f->unsubscribe->token);
        set_opt(u, "address", f->unsubscribe->address);
        set_opt(u, "client_ip", f->unsubscribe->client_ip);
        if (f->unsubscribe->list && *f->unsubscribe->list)
            jsonx_set(u, "list", jsonx_text(f->unsubscribe->list));
        jsonx_set(o, "unsubscribe", u);
    }
    char *s = jsonx_dumps(o, len);
    json_decref(o);
    return s;
}

json_t *feedback_record_parse(const void *buf, size_t len, char *err, size_t errlen)
{
    if (!buf) {
        snprintf(err, errlen, "tombstone on %s", TOPIC_FEEDBACK);
        return NULL;
    }
    json_t *o = jsonx_record_parse(buf, len, SCHEMA_FEEDBACK, err, errlen);
    const char *s;
    const json_t *j;
    if (o && (jsonx_want_str(o, "id", 1, &s, err, errlen) != 0 ||
              jsonx_want_str(o, "kind", 1, &s, err, errlen) != 0 ||
              jsonx_want_object(o, "envelope", 0, &j, err, errlen) != 0 ||
              jsonx_want_array(o, "envelope.rcpt_to", 0, &j, err, errlen) != 0 ||
              jsonx_want_object(o, "store", 0, &j, err, errlen) != 0 ||
              jsonx_want_object(o, "unsubscribe", 0, &j, err, errlen) != 0 ||
              jsonx_want_object(o, "notification", 0, &j, err, errlen) != 0)) {
        json_decref(o);
        return NULL;
    }
    return o;
}
