/* inbound_record — inbound.v1 records and the envelope/store objects. */
#include "inbound_record.h"
#include "ids.h"
#include "jsonx.h"
#include "timeutil.h"
#include "topics.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

json_t *record_envelope_json(const struct record_envelope *e)
{
    json_t *o = json_object(), *rcpts = json_array();
    jsonx_set(o, "mail_from", jsonx_text(e->mail_from));
    for (size_t i = 0; i < e->n_rcpt_to; i++)
        json_array_append_new(rcpts, jsonx_text(e->rcpt_to[i]));
    jsonx_set(o, "rcpt_to", rcpts);
    jsonx_set(o, "helo", jsonx_text(e->helo));
    jsonx_set(o, "client_ip", jsonx_text(e->client_ip));
    jsonx_set(o, "tls", json_boolean(e->tls));
    if (e->tls_version) {
        jsonx_set(o, "tls_version", jsonx_text(e->tls_version));
        jsonx_set(o, "tls_cipher", jsonx_text(e->tls_cipher));
    }
    jsonx_set(o, "auth_user", e->auth_user ? jsonx_text(e->auth_user) : json_null());
    return o;
}

json_t *record_store_json(const struct record_store *s)
{
    json_t *o = json_object();
    jsonx_set(o, "key", jsonx_text(s->key));
    jsonx_set(o, "size", json_integer((json_int_t)s->size));
    jsonx_set(o, "sha256", jsonx_text(s->sha256));
    return o;
}

char *inbound_record_build(const struct inbound_fields *f, size_t *len)
{
    json_t *o = jsonx_record_new(SCHEMA_INBOUND);
    jsonx_set(o, "id", jsonx_text(f->id));
    jsonx_set_time(o, "received_at", f->received_ms);
    jsonx_set(o, "rule", jsonx_text(f->rule));
    jsonx_set(o, "envelope", record_envelope_json(f->envelope));
    jsonx_set(o, "store", record_store_json(f->store));
    if (f->message_id)
        jsonx_set(o, "message_id", jsonx_text(f->message_id));
    if (f->spooled)
        jsonx_set(o, "spooled", json_true());
    char *s = jsonx_dumps(o, len);
    json_decref(o);
    return s;
}

int inbound_record_parse(const void *buf, size_t len, struct inbound_record *in, char *err,
                         size_t errlen)
{
    const char *recv;
    memset(in, 0, sizeof(*in));
    if (!buf) {
        snprintf(err, errlen, "tombstone on %s", TOPIC_INBOUND);
        return -EINVAL;
    }
    in->root = jsonx_record_parse(buf, len, SCHEMA_INBOUND, err, errlen);
    if (!in->root)
        return -EINVAL;
    if (jsonx_want_str(in->root, "id", 1, &in->id, err, errlen) != 0 ||
        jsonx_want_str(in->root, "rule", 0, &in->rule, err, errlen) != 0 ||
        jsonx_want_str(in->root, "received_at", 0, &recv, err, errlen) != 0 ||
        jsonx_want_str(in->root, "envelope.mail_from", 0, &in->mail_from, err, errlen) != 0 ||
        jsonx_want_str(in->root, "store.key", 1, &in->key, err, errlen) != 0) {
        json_decref(in->root);
        memset(in, 0, sizeof(*in));
        return -EINVAL;
    }
    in->received_ms = recv ? rfc3339_parse(recv) : -1;
    if (in->received_ms < 0)
        in->received_ms = id_time_ms(in->id) > 0 ? id_time_ms(in->id) : now_ms();
    return 0;
}
