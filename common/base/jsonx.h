/* jsonx — the few jansson helpers every worker needs to read and write topic
 * records (schemas/README.md): parse a record strictly, check its "schema",
 * get typed fields by dotted path, and write timestamps in the one format.
 * Every record read from a topic goes through jsonx_record_parse: the error
 * text it writes is what the caller dead-letters the record with. */
#ifndef MF_JSONX_H
#define MF_JSONX_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Parses one record value: must be a JSON object, no duplicate keys, no
 * trailing data, no NUL in strings.  NULL + err ("line:col: reason") on error. */
json_t *jsonx_loads(const void *buf, size_t len, char *err, size_t errlen);
/* Compact UTF-8 serialization, malloc'd (free()); *len without the NUL. */
char *jsonx_dumps(const json_t *v, size_t *len);

/* jsonx_loads, then "schema" must be the string schema (a SCHEMA_* name
 * from topics.h): another version or family is refused, never guessed at.
 * NULL + err on error. */
json_t *jsonx_record_parse(const void *buf, size_t len, const char *schema, char *err, size_t errlen);
/* New object {"schema": schema} (a SCHEMA_* name from topics.h). */
json_t *jsonx_record_new(const char *schema);

/* Field by dotted path ("envelope.mail_from"); NULL when absent or of
 * another type.  Borrowed: valid while the object lives. */
const json_t *jsonx_path(const json_t *v, const char *path);
const char *jsonx_str(const json_t *v, const char *path);
/* 0 and *out on an integer field, -EINVAL otherwise. */
int jsonx_int(const json_t *v, const char *path, int64_t *out);
/* Typed reads that tell "absent" from "wrong type": 0 and *out (NULL when
 * absent and !required); -EINVAL + err ("field envelope.mail_from is not a
 * string") when absent and required, or present with another type (JSON
 * null counts as present). */
int jsonx_want_str(const json_t *v, const char *path, int required, const char **out, char *err,
                   size_t errlen);
int jsonx_want_array(const json_t *v, const char *path, int required, const json_t **out, char *err,
                     size_t errlen);
int jsonx_want_object(const json_t *v, const char *path, int required, const json_t **out, char *err,
                      size_t errlen);
/* RFC 3339 field -> ms; -1 when absent or malformed. */
int64_t jsonx_time_ms(const json_t *v, const char *path);

/* obj[key] = v, taking v over (a builder's one line per field); v NULL or
 * no memory is fatal. */
void jsonx_set(json_t *obj, const char *key, json_t *v);
/* obj[key] = "2026-11-26T10:00:00.123Z" for ms.  Returns 0. */
int jsonx_set_time(json_t *obj, const char *key, int64_t ms);
/* A JSON string for text from outside (server replies, headers): invalid
 * UTF-8 bytes become '?' rather than the field being dropped; NULL -> "". */
json_t *jsonx_text(const char *s);

#endif
