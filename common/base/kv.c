/* kv — LMDB caches with TTL.
 *
 * Value layout: 8-byte big-endian expiry (absolute ms, 0 = never), then the
 * caller's bytes.  Expired entries stay on disk until kv_expire() but every
 * reader treats them as absent, so expiry is exact without a sweeper thread.
 *
 * LMDB forbids opening one environment twice in a process (closing either
 * would drop the other's file locks), so environments are shared through a
 * small registry keyed by directory and reference counted; each kv handle
 * is one named database inside.  MDB_NOTLS lets any thread use any handle:
 * read transactions are not pinned to threads, write transactions are
 * serialized by LMDB's own writer lock, so kv_put_new is atomic. */
#include "kv.h"
#include "fsutil.h"
#include "log.h"
#include "strbuf.h"
#include "timeutil.h"

#include <errno.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define KV_DEFAULT_MAP_SIZE (1ULL << 30)
#define KV_MAX_DBS 32
#define KV_HDR 8

struct kv_env {
    char *path;      /* realpath of the directory */
    MDB_env *env;
    int refs;
    struct kv_env *next;
};

struct kv {
    struct kv_env *e;
    MDB_dbi dbi;
};

static pthread_mutex_t kv_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kv_env *kv_registry;

/* LMDB returns errno values (positive) or its own MDB_* codes (negative). */
static int kv_errno(int rc)
{
    switch (rc) {
    case MDB_MAP_FULL:
        return -ENOSPC;
    case MDB_READERS_FULL:
    case MDB_TXN_FULL:
    case MDB_DBS_FULL:
        return -EAGAIN;
    case MDB_BAD_VALSIZE:
        return -EINVAL;
    default:
        return rc > 0 ? -rc : -EIO;
    }
}

static struct kv_env *env_get(const char *dir, uint64_t map_size, unsigned flags, char *err, size_t errlen)
{
    char real[PATH_MAX];
    int rc = fs_mkdir_p(dir, 0750);

    if (rc < 0) {
        snprintf(err, errlen, "kv: %s: cannot create directory: %s", dir, strerror(-rc));
        return NULL;
    }
    if (!realpath(dir, real)) {
        snprintf(err, errlen, "kv: %s: %s", dir, strerror(errno));
        return NULL;
    }
    for (struct kv_env *e = kv_registry; e; e = e->next)
        if (strcmp(e->path, real) == 0) {
            e->refs++;
            return e;
        }

    MDB_env *env;
    if ((rc = mdb_env_create(&env)) != 0) {
        snprintf(err, errlen, "kv: %s: %s", dir, mdb_strerror(rc));
        return NULL;
    }
    mdb_env_set_maxdbs(env, KV_MAX_DBS);
    mdb_env_set_mapsize(env, map_size ? map_size : KV_DEFAULT_MAP_SIZE);
    /* A rebuildable cache needs no fsync per write: it is emptied and
     * refilled from its topic on every start (KV_VOLATILE). */
    unsigned envflags = MDB_NOTLS | (flags & KV_VOLATILE ? MDB_NOSYNC | MDB_NOMETASYNC : 0);
    if ((rc = mdb_env_open(env, real, envflags, 0640)) != 0) {
        snprintf(err, errlen, "kv: %s: open: %s", dir, mdb_strerror(rc));
        mdb_env_close(env);
        return NULL;
    }
    int dead = 0;
    mdb_reader_check(env, &dead);   /* slots left by a killed process pin old pages */
    if (dead > 0)
        log_kv(LOG_INFO, "kv: cleared stale readers", "path", real, NULL);

    struct kv_env *e = xcalloc(1, sizeof(*e));
    e->path = xstrdup(real);
    e->env = env;
    e->refs = 1;
    e->next = kv_registry;
    kv_registry = e;
    return e;
}

static void env_put(struct kv_env *e)
{
    if (--e->refs > 0)
        return;
    for (struct kv_env **pp = &kv_registry; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    mdb_env_close(e->env);
    free(e->path);
    free(e);
}

struct kv *kv_open(const char *dir, const char *db, uint64_t map_size, char *err, size_t errlen)
{
    return kv_open_flags(dir, db, map_size, 0, err, errlen);
}

struct kv *kv_open_flags(const char *dir, const char *db, uint64_t map_size, unsigned flags,
                         char *err, size_t errlen)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    int rc;

    pthread_mutex_lock(&kv_registry_lock);
    struct kv_env *e = env_get(dir, map_size, flags, err, errlen);
    if (!e) {
        pthread_mutex_unlock(&kv_registry_lock);
        return NULL;
    }
    /* Opening a dbi must not race another open in this process: done under
     * the registry lock. */
    if ((rc = mdb_txn_begin(e->env, NULL, 0, &txn)) != 0) {
        snprintf(err, errlen, "kv: %s: begin: %s", dir, mdb_strerror(rc));
        env_put(e);
        pthread_mutex_unlock(&kv_registry_lock);
        return NULL;
    }
    if ((rc = mdb_dbi_open(txn, db, MDB_CREATE, &dbi)) != 0 || (rc = mdb_txn_commit(txn)) != 0) {
        if (rc != 0)
            mdb_txn_abort(txn);
        snprintf(err, errlen, "kv: %s: database %s: %s", dir, db ? db : "(main)", mdb_strerror(rc));
        env_put(e);
        pthread_mutex_unlock(&kv_registry_lock);
        return NULL;
    }
    pthread_mutex_unlock(&kv_registry_lock);

    struct kv *k = xcalloc(1, sizeof(*k));
    k->e = e;
    k->dbi = dbi;
    return k;
}

int kv_clear(struct kv *k)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(k->e->env, NULL, 0, &txn);
    if (rc != 0)
        return kv_errno(rc);
    if ((rc = mdb_drop(txn, k->dbi, 0)) != 0) {
        mdb_txn_abort(txn);
        return kv_errno(rc);
    }
    rc = mdb_txn_commit(txn);
    return rc ? kv_errno(rc) : 0;
}

void kv_close(struct kv *k)
{
    if (!k)
        return;
    /* The dbi handle stays valid in the env; LMDB frees it with the env. */
    pthread_mutex_lock(&kv_registry_lock);
    env_put(k->e);
    pthread_mutex_unlock(&kv_registry_lock);
    free(k);
}

static int key_ok(const struct kv *k, size_t klen)
{
    return klen > 0 && klen <= (size_t)mdb_env_get_maxkeysize(k->e->env);
}

static int64_t hdr_expiry(const void *data)
{
    const unsigned char *p = data;
    uint64_t v = 0;
    for (int i = 0; i < KV_HDR; i++)
        v = v << 8 | p[i];
    return (int64_t)v;
}

static int live(const MDB_val *v, int64_t now)
{
    if (v->mv_size < KV_HDR)
        return 0;   /* not ours: treat as absent rather than crash */
    int64_t exp = hdr_expiry(v->mv_data);
    return exp == 0 || exp > now;
}

/* Writes header + value straight into LMDB's page (MDB_RESERVE): one copy. */
static int put_in(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, const void *val, size_t vlen,
                  int64_t expires_ms)
{
    MDB_val v = { .mv_size = KV_HDR + vlen, .mv_data = NULL };
    int rc = mdb_put(txn, dbi, key, &v, MDB_RESERVE);
    if (rc != 0)
        return rc;
    unsigned char *p = v.mv_data;
    uint64_t e = expires_ms < 0 ? 0 : (uint64_t)expires_ms;
    for (int i = KV_HDR - 1; i >= 0; i--, e >>= 8)
        p[i] = (unsigned char)e;
    if (vlen)
        memcpy(p + KV_HDR, val, vlen);
    return 0;
}

static int put(struct kv *k, const void *key, size_t klen, const void *val, size_t vlen,
               int64_t expires_ms, int only_new)
{
    MDB_txn *txn;
    MDB_val kk = { klen, (void *)key }, cur;
    int rc;

    if (!key_ok(k, klen))
        return -EINVAL;
    if ((rc = mdb_txn_begin(k->e->env, NULL, 0, &txn)) != 0)
        return kv_errno(rc);
    if (only_new) {
        rc = mdb_get(txn, k->dbi, &kk, &cur);
        if (rc == 0 && live(&cur, now_ms())) {
            mdb_txn_abort(txn);
            return 0;
        }
        if (rc != 0 && rc != MDB_NOTFOUND) {
            mdb_txn_abort(txn);
            return kv_errno(rc);
        }
    }
    if ((rc = put_in(txn, k->dbi, &kk, val, vlen, expires_ms)) != 0) {
        mdb_txn_abort(txn);
        return kv_errno(rc);
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return kv_errno(rc);
    return 1;
}

int kv_put(struct kv *k, const void *key, size_t klen, const void *val, size_t vlen, int64_t expires_ms)
{
    int rc = put(k, key, klen, val, vlen, expires_ms, 0);
    return rc < 0 ? rc : 0;
}

int kv_put_many(struct kv *k, const struct kv_item *items, size_t n)
{
    MDB_txn *txn;
    int rc;

    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!key_ok(k, items[i].klen))
            return -EINVAL;
    if ((rc = mdb_txn_begin(k->e->env, NULL, 0, &txn)) != 0)
        return kv_errno(rc);
    for (size_t i = 0; i < n; i++) {
        MDB_val kk = { items[i].klen, (void *)items[i].key };
        if ((rc = put_in(txn, k->dbi, &kk, items[i].val, items[i].vlen, items[i].expires_ms)) != 0) {
            mdb_txn_abort(txn);
            return kv_errno(rc);
        }
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return kv_errno(rc);
    return 0;
}

int kv_put_new(struct kv *k, const void *key, size_t klen, const void *val, size_t vlen, int64_t expires_ms)
{
    return put(k, key, klen, val, vlen, expires_ms, 1);
}

int kv_get(struct kv *k, const void *key, size_t klen, void **val, size_t *vlen)
{
    MDB_txn *txn;
    MDB_val kk = { klen, (void *)key }, v;
    int rc;

    if (val)
        *val = NULL;
    if (vlen)
        *vlen = 0;
    if (!key_ok(k, klen))
        return -EINVAL;
    if ((rc = mdb_txn_begin(k->e->env, NULL, MDB_RDONLY, &txn)) != 0)
        return kv_errno(rc);
    rc = mdb_get(txn, k->dbi, &kk, &v);
    if (rc == MDB_NOTFOUND || (rc == 0 && !live(&v, now_ms()))) {
        mdb_txn_abort(txn);
        return 0;
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return kv_errno(rc);
    }
    size_t n = v.mv_size - KV_HDR;
    if (val)
        *val = xstrndup((const char *)v.mv_data + KV_HDR, n);   /* NUL-terminated: handy for text */
    if (vlen)
        *vlen = n;
    mdb_txn_abort(txn);
    return 1;
}

int kv_del(struct kv *k, const void *key, size_t klen)
{
    MDB_txn *txn;
    MDB_val kk = { klen, (void *)key };
    int rc;

    if (!key_ok(k, klen))
        return -EINVAL;
    if ((rc = mdb_txn_begin(k->e->env, NULL, 0, &txn)) != 0)
        return kv_errno(rc);
    rc = mdb_del(txn, k->dbi, &kk, NULL);
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        return 0;
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return kv_errno(rc);
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return kv_errno(rc);
    return 0;
}

long kv_expire(struct kv *k, int64_t now)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val kk, v;
    long n = 0;
    int rc;

    if ((rc = mdb_txn_begin(k->e->env, NULL, 0, &txn)) != 0)
        return kv_errno(rc);
    if ((rc = mdb_cursor_open(txn, k->dbi, &cur)) != 0) {
        mdb_txn_abort(txn);
        return kv_errno(rc);
    }
    for (rc = mdb_cursor_get(cur, &kk, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &kk, &v, MDB_NEXT)) {
        if (live(&v, now))
            continue;
        if ((rc = mdb_cursor_del(cur, 0)) != 0)
            break;
        n++;
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        return kv_errno(rc);
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return kv_errno(rc);
    return n;
}

long kv_iter(struct kv *k, const void *start, size_t slen, kv_iter_cb cb, void *opaque)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val kk = { slen, (void *)start }, v;
    int64_t now = now_ms();
    long n = 0;
    int rc;

    if ((rc = mdb_txn_begin(k->e->env, NULL, MDB_RDONLY, &txn)) != 0)
        return kv_errno(rc);
    if ((rc = mdb_cursor_open(txn, k->dbi, &cur)) != 0) {
        mdb_txn_abort(txn);
        return kv_errno(rc);
    }
    rc = start && slen ? mdb_cursor_get(cur, &kk, &v, MDB_SET_RANGE)
                       : mdb_cursor_get(cur, &kk, &v, MDB_FIRST);
    for (; rc == 0; rc = mdb_cursor_get(cur, &kk, &v, MDB_NEXT)) {
        if (!live(&v, now))
            continue;
        n++;
        if (cb && cb(opaque, kk.mv_data, kk.mv_size, (const char *)v.mv_data + KV_HDR,
                     v.mv_size - KV_HDR))
            break;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return kv_errno(rc);
    return n;
}

long kv_count(struct kv *k)
{
    return kv_iter(k, NULL, 0, NULL, NULL);
}
