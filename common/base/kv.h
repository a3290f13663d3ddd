/* kv — small LMDB caches with TTL: dedupe keys, sent markers, the suppression
 * and revocation copies.  One environment per path, named databases inside.
 * Stale readers left by a killed process are cleared on open (mdb_reader_check).
 * Safe to share between threads of one process. */
#ifndef MF_KV_H
#define MF_KV_H
#include <stddef.h>
#include <stdint.h>

struct kv;

/* Opens (creating dirs) the environment at dir and the named db. */
struct kv *kv_open(const char *dir, const char *db, uint64_t map_size, char *err, size_t errlen);
void kv_close(struct kv *k);
/* KV_VOLATILE: no fsync per write, for caches rebuilt from a topic at every
 * start (the suppression and revocation copies).  Flags belong to the
 * environment: give such a cache a directory of its own. */
#define KV_VOLATILE 1u
struct kv *kv_open_flags(const char *dir, const char *db, uint64_t map_size, unsigned flags,
                         char *err, size_t errlen);
/* Deletes every entry of the db in one transaction. */
int kv_clear(struct kv *k);

/* expires_ms: absolute wall-clock ms, 0 = never.  Values may be empty. */
int kv_put(struct kv *k, const void *key, size_t klen, const void *val, size_t vlen, int64_t expires_ms);
/* Puts n entries in one transaction (one commit, so one sync for all of
 * them: send's sent markers of a batch): all of them or none. */
struct kv_item {
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
    int64_t expires_ms;
};
int kv_put_many(struct kv *k, const struct kv_item *items, size_t n);
/* Puts only if absent (or expired): 1 = inserted, 0 = already there, <0 error. */
int kv_put_new(struct kv *k, const void *key, size_t klen, const void *val, size_t vlen, int64_t expires_ms);
/* 1 = found (*val malloc'd, may be NULL when vlen is NULL), 0 = absent/expired, <0 error. */
int kv_get(struct kv *k, const void *key, size_t klen, void **val, size_t *vlen);
int kv_del(struct kv *k, const void *key, size_t klen);
/* Deletes expired entries; returns how many. */
long kv_expire(struct kv *k, int64_t now_ms);
/* Iterates live entries in key order from `start` (NULL = first); cb returns
 * non-zero to stop.  Returns entries visited. */
typedef int (*kv_iter_cb)(void *opaque, const void *key, size_t klen, const void *val, size_t vlen);
long kv_iter(struct kv *k, const void *start, size_t slen, kv_iter_cb cb, void *opaque);
long kv_count(struct kv *k);

#endif
