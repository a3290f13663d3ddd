/* suppression — the suppression list's records and keys, one definition for
 * the feedback worker (writer, API), the CLI and send (reader).
 *
 * Topic mailfleet.suppression is compacted: key = lower-cased address, or
 * "address|list" for a per-list unsubscribe; value = suppression.v1 JSON;
 * a tombstone (NULL value) removes the entry. */
#ifndef MF_SUPPRESSION_H
#define MF_SUPPRESSION_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

struct bus;
struct kv;

/* Normalizes addr (common/address) and lower-cases it; list may be NULL.
 * Returns 0 or -EINVAL. */
int suppression_key(const char *addr, const char *list, char *out, size_t outlen);
/* reason: BOUNCE, COMPLAINT, UNSUBSCRIBE or MANUAL; returns 0 if valid. */
int suppression_reason_valid(const char *reason);

/* Produces the record (or the tombstone) and waits until durable.  source:
 * dsn, arf, sns, send, unsubscribe, cli or api (suppression.v1). */
int suppression_publish(struct bus *b, const char *addr, const char *list, const char *reason,
                        const char *source, const char *message_id, const char *feedback_id, char *err, size_t errlen);
int suppression_remove(struct bus *b, const char *addr, const char *list, char *err, size_t errlen);
/* The JSON value for a key (malloc'd) as written by suppression_publish. */
char *suppression_record(const char *addr, const char *list, const char *reason, int64_t ts_ms,
                         const char *source, const char *message_id, const char *feedback_id);

/* Parses a suppression.v1 value strictly (jsonx_record_parse): emailAddress,
 * reason and lastUpdateTime must be strings.  NULL + err on error. */
json_t *suppression_record_parse(const void *buf, size_t len, char *err, size_t errlen);

/* 1 if addr is suppressed account-wide or for list (list may be NULL),
 * 0 if not, <0 on error.  copy: suppression_copy_kv() of a suppression_copy. */
int suppression_check(struct kv *copy, const char *addr, const char *list);

#endif
