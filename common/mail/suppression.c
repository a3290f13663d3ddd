/* suppression — keys and records of the suppression list. */
#include "suppression.h"
#include "address.h"
#include "bus.h"
#include "jsonx.h"
#include "kv.h"
#include "strbuf.h"
#include "timeutil.h"
#include "topics.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int suppression_key(const char *addr, const char *list, char *out, size_t outlen)
{
    char a[ADDRESS_BUFSZ];
    if (address_normalize(addr, a, sizeof(a)) != 0)
        return -EINVAL;
    /* Whole address lower-cased: a bounce for User@ must stop mail to user@
     * (mailbox providers treat local parts case-insensitively in practice). */
    for (char *p = a; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (list && list[0]) {
        for (const char *p = list; *p; p++)   /* list names are ours: keep them simple */
            if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
                return -EINVAL;
        if ((size_t)snprintf(out, outlen, "%s|%s", a, list) >= outlen)
            return -EINVAL;
    } else if ((size_t)snprintf(out, outlen, "%s", a) >= outlen) {
        return -EINVAL;
    }
    return 0;
}

int suppression_reason_valid(const char *reason)
{
    static const char *ok[] = { "BOUNCE", "COMPLAINT", "UNSUBSCRIBE", "MANUAL" };
    for (size_t i = 0; i < 4; i++)
        if (reason && strcmp(reason, ok[i]) == 0)
            return 1;
    return 0;
}

char *suppression_record(const char *addr, const char *list, const char *reason, int64_t ts_ms,
                         const char *source, const char *message_id, const char *feedback_id)
{
    char ts[32], key[512];
    if (suppression_key(addr, NULL, key, sizeof(key)) != 0)
        return NULL;
    rfc3339_ms(ts_ms, ts, sizeof(ts));
    json_t *o = jsonx_record_new(SCHEMA_SUPPRESSION);
    json_object_set_new(o, "emailAddress", json_string(key));
    json_object_set_new(o, "reason", json_string(reason));
    json_object_set_new(o, "lastUpdateTime", json_string(ts));
    if (list && list[0])
        json_object_set_new(o, "list", json_string(list));
    if (source && source[0])
        json_object_set_new(o, "source", json_string(source));
    if (message_id && message_id[0])
        json_object_set_new(o, "messageId", json_string(message_id));
    if (feedback_id && feedback_id[0])
        json_object_set_new(o, "feedbackId", json_string(feedback_id));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

json_t *suppression_record_parse(const void *buf, size_t len, char *err, size_t errlen)
{
    json_t *o = jsonx_record_parse(buf, len, SCHEMA_SUPPRESSION, err, errlen);
    const char *s;
    if (o && (jsonx_want_str(o, "emailAddress", 1, &s, err, errlen) != 0 ||
              jsonx_want_str(o, "reason", 1, &s, err, errlen) != 0 ||
              jsonx_want_str(o, "lastUpdateTime", 1, &s, err, errlen) != 0 ||
              jsonx_want_str(o, "list", 0, &s, err, errlen) != 0)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int produce(struct bus *b, const char *key, const char *value, char *err, size_t errlen)
{
    struct bus_record r = { .topic = TOPIC_SUPPRESSION, .key = key, .key_len = strlen(key),
                            .value = value, .value_len = value ? strlen(value) : 0, .partition = -1 };
    return bus_produce(b, &r, 1, 30000, err, errlen);
}

int suppression_publish(struct bus *b, const char *addr, const char *list, const char *reason,
                        const char *source, const char *message_id, const char *feedback_id, char *err, size_t errlen)
{
    char key[512];
    if (suppression_key(addr, list, key, sizeof(key)) != 0) {
        snprintf(err, errlen, "not a valid address or list");
        return -EINVAL;
    }
    if (!suppression_reason_valid(reason)) {
        snprintf(err, errlen, "reason must be BOUNCE, COMPLAINT, UNSUBSCRIBE or MANUAL");
        return -EINVAL;
    }
    char *v = suppression_record(addr, list, reason, now_ms(), source, message_id, feedback_id);
    int rc = produce(b, key, v, err, errlen);
    free(v);
    return rc;
}

int suppression_remove(struct bus *b, const char *addr, const char *list, char *err, size_t errlen)
{
    char key[512];
    if (suppression_key(addr, list, key, sizeof(key)) != 0) {
        snprintf(err, errlen, "not a valid address or list");
        return -EINVAL;
    }
    return produce(b, key, NULL, err, errlen);
}

int suppression_check(struct kv *copy, const char *addr, const char *list)
{
    char key[512];
    if (suppression_key(addr, NULL, key, sizeof(key)) != 0)
        return -EINVAL;
    int rc = kv_get(copy, key, strlen(key), NULL, NULL);
    if (rc != 0 || !list || !list[0])
        return rc;
    if (suppression_key(addr, list, key, sizeof(key)) != 0)
        return -EINVAL;
    return kv_get(copy, key, strlen(key), NULL, NULL);
}
