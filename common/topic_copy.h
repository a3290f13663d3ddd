/* topic_copy — a local LMDB copy of a compacted topic (the suppression list,
 * link revocations), kept current by a background thread.
 *
 * The copy applies records in order: a value replaces the key's entry, a
 * tombstone deletes it — right whether or not the broker has compacted yet.
 * The consumer group's offset is committed after each applied batch, and
 * the copy lives in LMDB beside it, so a restart resumes instead of
 * re-reading the topic; a lost copy is rebuilt by deleting its directory and
 * the group's offset (`from the beginning`). */
#ifndef MF_TOPIC_COPY_H
#define MF_TOPIC_COPY_H
#include <stddef.h>
#include <stdint.h>

struct bus;
struct kv;
struct topic_copy;

/* Starts the thread.  group should be unique per copy (e.g. "send-suppression").
 * The kv environment is opened at dir with database name db. */
struct topic_copy *topic_copy_start(struct bus *b, const char *topic, const char *group,
                                    const char *dir, const char *db, char *err, size_t errlen);
void topic_copy_stop(struct topic_copy *tc);   /* joins; accepts NULL */
struct kv *topic_copy_kv(struct topic_copy *tc);
/* Applies one record directly (read-your-writes for a producer that just
 * wrote it); the consumer will apply it again, harmlessly. */
void topic_copy_apply(struct topic_copy *tc, const void *key, size_t klen, const void *val, size_t vlen);
/* 1 once the copy has reached the end of the topic at least once. */
int topic_copy_caught_up(struct topic_copy *tc);
int64_t topic_copy_applied(struct topic_copy *tc);   /* records applied since start */

#endif
