/* fallback_record — fallback.v1, one builder for transform and feedback. */
#include "fallback_record.h"
#include "ids.h"
#include "jsonx.h"
#include "topics.h"

static json_t *texts(const char *const *l, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, jsonx_text(l[i]));
    return a;
}

json_t *fallback_record_new(const struct fallback_fields *f)
{
    char id[ID_LEN + 1];
    json_t *o = jsonx_record_new(SCHEMA_FALLBACK);
    jsonx_set(o, "id", json_string(f->id ? f->id : id_new(id)));
    if (f->inbound_id)
        jsonx_set(o, "inbound_id", jsonx_text(f->inbound_id));
    if (f->feedback_id)
        jsonx_set(o, "feedback_id", jsonx_text(f->feedback_id));
    jsonx_set_time(o, "created_at", f->created_ms);
    jsonx_set(o, "reason", jsonx_text(f->reason));
    jsonx_set(o, "details", jsonx_text(f->details ? f->details : f->reason));
    if (f->rule)
        jsonx_set(o, "rule", jsonx_text(f->rule));
    jsonx_set(o, "sender", jsonx_text(f->sender ? f->sender : ""));
    if (f->subject)
        jsonx_set(o, "subject", jsonx_text(f->subject));
    jsonx_set(o, "found", texts(f->found, f->n_found));
    jsonx_set(o, "invalid", texts(f->invalid, f->n_invalid));
    if (f->not_allowed)
        jsonx_set(o, "not_allowed", texts(f->not_allowed, f->n_not_allowed));
    if (f->sent_to)
        jsonx_set(o, "sent_to", texts(f->sent_to, f->n_sent_to));
    if (f->flagged)
        jsonx_set(o, "flagged", f->flagged);
    jsonx_set(o, "links", f->links ? f->links : json_array());
    return o;
}
