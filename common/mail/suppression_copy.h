/* suppression_copy — this process's copy of the compacted
 * mailfleet.suppression topic, in LMDB (common/kv).
 *
 * Keys are "address" (suppressed everywhere) or "address|list" (unsubscribed
 * from one list), spelled by common/suppression's suppression_key(); a
 * tombstone deletes.  The copy is rebuilt from the start of
 * the topic on every start (the group never commits), so a lost or stale
 * state_dir can never hide a suppression; senders wait until it has caught up
 * with what the topic held at start (suppression_copy_ready).
 *
 * Why not resume from a committed group offset: under Kafka the offset lives
 * in the broker while the copy lives on the pod's disk; a pod that lost its
 * disk would resume at the end with an empty copy and send to suppressed
 * addresses.  Re-reading costs one pass over a
 * compacted topic at startup. */
#ifndef MF_SUPPRESSION_COPY_H
#define MF_SUPPRESSION_COPY_H
#include "stop.h"   /* stop_flag_t */
#include <stddef.h>

struct bus;
struct suppression_copy;

#include "suppression.h"   /* suppression_key() */

/* Opens (and empties) the copy under dir. */
struct suppression_copy *suppression_copy_open(const char *dir, char *err, size_t errlen);
/* Stops the follower thread (if started) and closes. Accepts NULL. */
void suppression_copy_free(struct suppression_copy *s);

/* Applies one record: val NULL = tombstone.  The value is suppression.v1 JSON
 * whose "reason" is kept.  Keys are re-spelled by suppression_key().
 * Returns 0 or <0 (a key that is no address is ignored: 0). */
int suppression_copy_apply(struct suppression_copy *s, const void *key, size_t klen,
                           const void *val, size_t vlen);

/* 1 = suppressed (reason copied, "" when none; *per_list = 1 when it was the
 * address|list entry that matched), 0 = not, <0 = error.  list may be NULL. */
int suppression_copy_check(struct suppression_copy *s, const char *addr, const char *list,
                           char *reason, size_t rlen, int *per_list);

/* Follows the topic in a thread (consumer group `group`) until *stop. */
int suppression_copy_start(struct suppression_copy *s, struct bus *b, const char *group,
                           stop_flag_t *stop, char *err, size_t errlen);
/* 1 once the copy holds everything the topic held when following began. */
int suppression_copy_ready(struct suppression_copy *s);
/* The LMDB copy itself (key -> suppression.v1 JSON), for listing (feedback's API). */
struct kv *suppression_copy_kv(struct suppression_copy *s);

#endif
