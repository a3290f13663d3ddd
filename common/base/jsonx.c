/* jsonx — thin, strict wrappers over jansson for topic records.
 *
 * Strict on input because records cross process boundaries: a duplicate key
 * would let two readers see two different values, so it is refused. */
#include "jsonx.h"
#include "log.h"
#include "strbuf.h"
#include "timeutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *jsonx_loads(const void *buf, size_t len, char *err, size_t errlen)
{
    json_error_t je;
    json_t *v = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);

    if (!v) {
        snprintf(err, errlen, "%d:%d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        snprintf(err, errlen, "1:1: record is not a JSON object");
        json_decref(v);
        return NULL;
    }
    return v;
}

char *jsonx_dumps(const json_t *v, size_t *len)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s)
        panic("%s: json_dumps failed (out of memory?)", __func__);
    if (len)
        *len = strlen(s);
    return s;
}

json_t *jsonx_record_parse(const void *buf, size_t len, const char *schema, char *err, size_t errlen)
{
    json_t *v = jsonx_loads(buf, len, err, errlen);
    if (!v)
        return NULL;
    const json_t *s = json_object_get(v, "schema");
    if (!json_is_string(s)) {
        snprintf(err, errlen, "record has no \"schema\" string (want %s)", schema);
    } else if (strcmp(json_string_value(s), schema) != 0) {
        snprintf(err, errlen, "unknown schema \"%.64s\" (want %s)", json_string_value(s), schema);
    } else {
        return v;
    }
    json_decref(v);
    return NULL;
}

json_t *jsonx_record_new(const char *schema)
{
    json_t *o = json_object();
    if (!o || json_object_set_new(o, "schema", json_string(schema)) != 0)
        panic("%s: out of memory", __func__);
    return o;
}

const json_t *jsonx_path(const json_t *v, const char *path)
{
    char part[128];
    const char *p = path;

    while (v && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n >= sizeof(part) || !json_is_object(v))
            return NULL;
        memcpy(part, p, n);
        part[n] = '\0';
        v = json_object_get(v, part);
        p += n + (dot ? 1 : 0);
        if (dot && !*p)
            return NULL;   /* "a." */
    }
    return v;
}

const char *jsonx_str(const json_t *v, const char *path)
{
    const json_t *f = jsonx_path(v, path);
    return json_is_string(f) ? json_string_value(f) : NULL;
}

int jsonx_int(const json_t *v, const char *path, int64_t *out)
{
    const json_t *f = jsonx_path(v, path);
    if (!json_is_integer(f))
        return -EINVAL;
    *out = (int64_t)json_integer_value(f);
    return 0;
}

static int want(const json_t *v, const char *path, int required, int (*is)(const json_t *),
                const char *what, const json_t **out, char *err, size_t errlen)
{
    const json_t *f = jsonx_path(v, path);
    *out = NULL;
    if (!f && !required)
        return 0;
    if (!f) {
        snprintf(err, errlen, "field %s is missing", path);
        return -EINVAL;
    }
    if (!is(f)) {
        snprintf(err, errlen, "field %s is not %s", path, what);
        return -EINVAL;
    }
    *out = f;
    return 0;
}

static int is_string(const json_t *f) { return json_is_string(f); }
static int is_array(const json_t *f) { return json_is_array(f); }
static int is_object(const json_t *f) { return json_is_object(f); }

int jsonx_want_str(const json_t *v, const char *path, int required, const char **out, char *err,
                   size_t errlen)
{
    const json_t *f;
    int rc = want(v, path, required, is_string, "a string", &f, err, errlen);
    *out = f ? json_string_value(f) : NULL;
    return rc;
}

int jsonx_want_array(const json_t *v, const char *path, int required, const json_t **out, char *err,
                     size_t errlen)
{
    return want(v, path, required, is_array, "an array", out, err, errlen);
}

int jsonx_want_object(const json_t *v, const char *path, int required, const json_t **out, char *err,
                      size_t errlen)
{
    return want(v, path, required, is_object, "an object", out, err, errlen);
}

int64_t jsonx_time_ms(const json_t *v, const char *path)
{
    const char *s = jsonx_str(v, path);
    return s ? rfc3339_parse(s) : -1;
}

void jsonx_set(json_t *obj, const char *key, json_t *v)
{
    if (!v || json_object_set_new(obj, key, v) != 0)
        panic("%s: cannot set %s (out of memory?)", __func__, key);
}

int jsonx_set_time(json_t *obj, const char *key, int64_t ms)
{
    char buf[32];
    rfc3339_ms(ms, buf, sizeof(buf));
    if (json_object_set_new(obj, key, json_string(buf)) != 0)
        panic("%s: cannot set %s", __func__, key);
    return 0;
}

json_t *jsonx_text(const char *s)
{
    json_t *j = json_string(s ? s : "");
    if (!j) {
        char *copy = xstrdup(s);
        for (char *p = copy; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        j = json_string(copy);
        free(copy);
    }
    if (!j)
        panic("%s: out of memory", __func__);
    return j;
}
