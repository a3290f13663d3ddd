/* bus_local — the durable local queue: one LMDB environment in <dir>.
 *
 * Layout (named databases in one environment):
 *   log      topic \0 BE64(offset)      -> encoded record (see local_encode)
 *   next     topic                      -> BE64 next offset to write
 *   offsets  group \0 topic             -> BE64 committed offset (next to read)
 *   keys     topic \0 0x00 key          -> BE64 offset of the newest record
 *            topic \0 0x01 sha256(key)     with that key (compacted topics only)
 * Every topic has one partition, 0.
 *
 * Guarantees: bus_produce returns 0 only after mdb_txn_commit (default sync,
 * so fdatasync'ed); a record is in one transaction with its offset bump, so a
 * kill -9 at any point leaves either the whole record or nothing.  Several
 * processes may produce: LMDB's writer lock serializes them and the next
 * offset is read inside the write transaction.
 *
 * Group commit: producing threads queue their records; whoever finds no
 * leader at work becomes the leader, writes everything queued in one
 * transaction, and wakes the others with the result.  Threads arriving during
 * a commit form the next batch, so under load a batch grows to whatever piled
 * up during one fsync.
 *
 * One consumer per group across processes: an flock() on <dir>/groups/<group>.lock
 * held for the consumer's life.  Scaling a group out is Kafka's job.
 *
 * Compacted topics lose a key's older record when a newer one is appended.
 * Retention (opt->retention_ms) drops records older than it from the front of
 * each log, run by a leader at most once a minute and on open; compacted
 * topics keep their live values (they are state) and drop only old tombstones.
 *
 * LMDB must not be opened twice in one process (its locks are per process),
 * so handles on the same directory share one environment (local_env). */
#include "bus_impl.h"
#include "fsutil.h"
#include "log.h"
#include "strbuf.h"
#include "timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOCAL_TOPIC_MAX 249                    /* Kafka's limit, so names port */
#define LOCAL_GROUP_MAX 200
#define LOCAL_DEFAULT_MAP_SIZE (8ULL << 30)
#define LOCAL_HOUSEKEEPING_MS 60000
#define LOCAL_RETENTION_MAX_DELETES 20000      /* bounds the extra latency of one batch */
#define LOCAL_RECHECK_MS 5                     /* another process's commits wake nobody here */
#define LOCAL_FORMAT 1
#define LOCAL_F_TOMBSTONE 1
#define LOCAL_F_KEY 2

struct local_write;

struct local_env {
    struct local_env *next;        /* registry of open environments */
    dev_t dev;
    ino_t ino;
    int refs;
    char *dir;
    MDB_env *env;
    MDB_dbi log, next_off, offsets, keys;
    size_t max_key;
    pthread_mutex_t mu;
    pthread_cond_t turn;           /* followers: the leader finished a batch */
    pthread_cond_t data;           /* consumers: something was committed */
    struct local_write *queue, **queue_tail;
    int leader_busy;
    uint64_t generation;           /* bumped after every commit */
    int64_t reader_check_due_ms;   /* mono; touched only by the current leader */
};

struct local_bus {
    struct local_env *e;
    char **compacted;
    size_t n_compacted;
    int64_t retention_ms;
    int64_t retention_due_ms;      /* mono; touched only by the current leader */
};

/* A group's next offset on one topic. */
struct local_offset {
    const char *topic;
    int64_t offset;
};

/* One caller's share of a batch: records to append and/or offsets to commit. */
struct local_write {
    struct local_write *next;
    struct local_bus *lb;
    const struct bus_record *recs;
    size_t n;
    const char *group;             /* != NULL: commit offs for this group */
    const struct local_offset *offs;
    size_t n_offs;
    int done, rc;
    char err[256];
};

struct local_consumer {
    struct local_bus *lb;
    char *group;
    char **topics;
    int64_t *pos;                  /* next offset to read, per topic */
    size_t n_topics;
    size_t rr;                     /* round robin start, so no topic starves */
    int lock_fd;
};

static pthread_mutex_t local_registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct local_env *local_registry;

/* ---- encoding ---- */

static void put_varint(struct strbuf *b, uint64_t v)
{
    unsigned char tmp[10];
    size_t n = 0;
    do {
        tmp[n] = v & 0x7f;
        v >>= 7;
        if (v)
            tmp[n] |= 0x80;
        n++;
    } while (v);
    strbuf_append_n(b, tmp, n);
}

static int get_varint(const unsigned char **p, const unsigned char *end, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        unsigned char c = *(*p)++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = v & 0xff;
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* format, flags, varint timestamp, [varint klen, key], varint nh,
 * nh x (varint nlen, name with its NUL, varint vlen, value), then the value
 * to the end.  The flags byte tells a tombstone from an empty value; names
 * keep their NUL so a decoded header can point into the page. */
static void local_encode(struct strbuf *b, const struct bus_record *r, int64_t ts)
{
    unsigned char head[2] = { LOCAL_FORMAT, 0 };
    if (!r->value)
        head[1] |= LOCAL_F_TOMBSTONE;
    if (r->key)
        head[1] |= LOCAL_F_KEY;
    strbuf_append_n(b, head, 2);
    put_varint(b, (uint64_t)ts);
    if (r->key) {
        put_varint(b, r->key_len);
        strbuf_append_n(b, r->key, r->key_len);
    }
    put_varint(b, r->n_headers);
    for (size_t i = 0; i < r->n_headers; i++) {
        size_t nlen = strlen(r->headers[i].name) + 1;
        put_varint(b, nlen);
        strbuf_append_n(b, r->headers[i].name, nlen);
        put_varint(b, r->headers[i].value_len);
        strbuf_append_n(b, r->headers[i].value, r->headers[i].value_len);
    }
    if (r->value)
        strbuf_append_n(b, r->value, r->value_len);
}

struct local_view {
    int tombstone;
    int64_t ts;
    const void *key;
    size_t klen;
    uint64_t nh;
    const unsigned char *hdrs, *hdrs_end;
    const void *value;
    size_t vlen;
};

static int take(const unsigned char **p, const unsigned char *end, size_t *len)
{
    uint64_t v;
    if (get_varint(p, end, &v) < 0 || v > (uint64_t)(end - *p))
        return -1;
    *len = v;
    return 0;
}

static int local_decode(const MDB_val *v, struct local_view *out)
{
    const unsigned char *p = v->mv_data, *end = p + v->mv_size;
    uint64_t ts;
    size_t len;

    if (v->mv_size < 2 || p[0] != LOCAL_FORMAT)
        return -1;
    unsigned flags = p[1];
    p += 2;
    if (get_varint(&p, end, &ts) < 0)
        return -1;
    out->ts = (int64_t)ts;
    out->tombstone = flags & LOCAL_F_TOMBSTONE;
    out->key = NULL;
    out->klen = 0;
    if (flags & LOCAL_F_KEY) {
        if (take(&p, end, &len) < 0)
            return -1;
        out->key = p;
        out->klen = len;
        p += len;
    }
    if (get_varint(&p, end, &out->nh) < 0)
        return -1;
    out->hdrs = p;
    for (uint64_t i = 0; i < out->nh; i++) {
        if (take(&p, end, &len) < 0 || len == 0 || p[len - 1] != '\0')
            return -1;
        p += len;
        if (take(&p, end, &len) < 0)
            return -1;
        p += len;
    }
    out->hdrs_end = p;
    out->value = out->tombstone ? NULL : p;
    out->vlen = out->tombstone ? 0 : (size_t)(end - p);
    return out->tombstone && p != end ? -1 : 0;
}

static struct bus_record *local_build(const char *topic, const struct local_view *v, int64_t offset)
{
    struct bus_header stack[16] = { { 0 } }, *hs = stack;
    if (v->nh > sizeof stack / sizeof stack[0])
        hs = xcalloc(v->nh, sizeof *hs);
    const unsigned char *p = v->hdrs;
    for (uint64_t i = 0; i < v->nh; i++) {
        size_t len;
        take(&p, v->hdrs_end, &len);   /* validated by local_decode */
        hs[i].name = (const char *)p;
        p += len;
        take(&p, v->hdrs_end, &len);
        hs[i].value = p;
        hs[i].value_len = len;
        p += len;
    }
    struct bus_record *r = bus_record_build(topic, v->key, v->klen, v->value, v->vlen, hs, v->nh,
                                            v->ts, 0, offset);
    if (hs != stack)
        free(hs);
    return r;
}

/* ---- keys ---- */

static int topic_valid(const char *t, char *err, size_t errlen)
{
    size_t n = t ? strlen(t) : 0;
    if (n == 0 || n > LOCAL_TOPIC_MAX || strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                   "0123456789._-") != n) {
        snprintf(err, errlen, "bad topic name \"%.64s\" (1-%d of [A-Za-z0-9._-])",
                 t ? t : "(null)", LOCAL_TOPIC_MAX);
        return 0;
    }
    return 1;
}

/* topic \0 BE64(offset) into buf (>= LOCAL_TOPIC_MAX + 9) */
static MDB_val log_key(unsigned char *buf, const char *topic, int64_t offset)
{
    size_t tlen = strlen(topic);
    memcpy(buf, topic, tlen + 1);
    put_be64(buf + tlen + 1, (uint64_t)offset);
    return (MDB_val){ tlen + 9, buf };
}

static int log_key_in_topic(const MDB_val *k, const char *topic)
{
    size_t tlen = strlen(topic);
    return k->mv_size == tlen + 9 && memcmp(k->mv_data, topic, tlen + 1) == 0;
}

static int64_t log_key_offset(const MDB_val *k)
{
    return (int64_t)get_be64((const unsigned char *)k->mv_data + k->mv_size - 8);
}

/* group \0 topic into buf; lengths are validated by the callers */
static MDB_val offsets_key(char *buf, const char *group, const char *topic)
{
    size_t glen = strlen(group), tlen = strlen(topic);
    memcpy(buf, group, glen + 1);
    memcpy(buf + glen + 1, topic, tlen);
    return (MDB_val){ glen + 1 + tlen, buf };
}

/* Keys too long for LMDB's key limit are indexed by their SHA-256. */
static MDB_val compact_key(const struct local_env *e, unsigned char *buf, const char *topic,
                           const void *key, size_t klen)
{
    size_t tlen = strlen(topic);
    memcpy(buf, topic, tlen + 1);
    if (tlen + 2 + klen <= e->max_key) {
        buf[tlen + 1] = 0;
        memcpy(buf + tlen + 2, key, klen);
        return (MDB_val){ tlen + 2 + klen, buf };
    }
    buf[tlen + 1] = 1;
    SHA256(key, klen, buf + tlen + 2);
    return (MDB_val){ tlen + 2 + SHA256_DIGEST_LENGTH, buf };
}

static int topic_compacted(const struct local_bus *lb, const char *topic)
{
    /* mailfleet's compacted topics are compacted whoever writes them (the
     * CLI, feedback, send): a producer that did not say so must not leave an
     * old value behind a tombstone for retention to resurrect. */
    for (const char *const *t = bus_compacted_topics; *t; t++)
        if (strcmp(*t, topic) == 0)
            return 1;
    for (size_t i = 0; i < lb->n_compacted; i++)
        if (strcmp(lb->compacted[i], topic) == 0)
            return 1;
    return 0;
}

static int64_t read_next_offset(struct local_env *e, MDB_txn *txn, const char *topic)
{
    MDB_val k = { strlen(topic), (void *)topic }, v;
    if (mdb_get(txn, e->next_off, &k, &v) != 0 || v.mv_size != 8)
        return 0;
    return (int64_t)get_be64(v.mv_data);
}

static int64_t read_committed(struct local_env *e, MDB_txn *txn, const char *group, const char *topic)
{
    char buf[LOCAL_GROUP_MAX + LOCAL_TOPIC_MAX + 2];
    MDB_val k = offsets_key(buf, group, topic), v;
    if (mdb_get(txn, e->offsets, &k, &v) != 0 || v.mv_size != 8)
        return -1;
    return (int64_t)get_be64(v.mv_data);
}

/* First record at or after offset in topic: 1 (key/val set), 0 none, <0 error. */
static int seek_topic(MDB_cursor *cur, const char *topic, int64_t offset, MDB_val *k, MDB_val *v)
{
    unsigned char buf[LOCAL_TOPIC_MAX + 9];
    *k = log_key(buf, topic, offset);
    int rc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return -EIO;
    return log_key_in_topic(k, topic);
}

/* ---- writing: one transaction per batch ---- */

struct next_cache {
    const char *topic;
    int64_t next;
};

struct batch_state {
    struct next_cache *topics;
    size_t n, cap;
    struct strbuf enc;
};

static int64_t *batch_next(struct local_env *e, MDB_txn *txn, struct batch_state *bs, const char *topic)
{
    for (size_t i = 0; i < bs->n; i++)
        if (strcmp(bs->topics[i].topic, topic) == 0)
            return &bs->topics[i].next;
    if (bs->n == bs->cap) {
        bs->cap = bs->cap ? bs->cap * 2 : 8;
        bs->topics = xrealloc(bs->topics, bs->cap * sizeof *bs->topics);
    }
    bs->topics[bs->n].topic = topic;
    bs->topics[bs->n].next = read_next_offset(e, txn, topic);
    return &bs->topics[bs->n++].next;
}

static int append_record(struct local_bus *lb, MDB_txn *txn, struct batch_state *bs,
                         const struct bus_record *r, int64_t now)
{
    struct local_env *e = lb->e;
    unsigned char kbuf[LOCAL_TOPIC_MAX + 9];
    int64_t *next = batch_next(e, txn, bs, r->topic);
    int64_t off = (*next)++;

    strbuf_reset(&bs->enc);
    local_encode(&bs->enc, r, r->timestamp_ms ? r->timestamp_ms : now);
    MDB_val k = log_key(kbuf, r->topic, off), v = { bs->enc.len, bs->enc.data };
    int rc = mdb_put(txn, e->log, &k, &v, MDB_NOOVERWRITE);
    if (rc != 0)
        return rc;
    if (!r->key || !topic_compacted(lb, r->topic))
        return 0;

    /* Compaction: the newest record per key stays; the one it replaces goes
     * now.  A tombstone takes the key's place too, so it removes its
     * predecessor and is itself removed by the next write or by retention. */
    unsigned char cbuf[LOCAL_TOPIC_MAX + 2 + 512];
    MDB_val ck = compact_key(e, cbuf, r->topic, r->key, r->key_len), cv;
    rc = mdb_get(txn, e->keys, &ck, &cv);
    if (rc == 0 && cv.mv_size == 8) {
        MDB_val ok = log_key(kbuf, r->topic, (int64_t)get_be64(cv.mv_data));
        rc = mdb_del(txn, e->log, &ok, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return rc;
    } else if (rc != MDB_NOTFOUND && rc != 0) {
        return rc;
    }
    unsigned char ob[8];
    put_be64(ob, (uint64_t)off);
    MDB_val ov = { 8, ob };
    return mdb_put(txn, e->keys, &ck, &ov, 0);
}

static int put_committed(struct local_env *e, MDB_txn *txn, const char *group, const char *topic,
                         int64_t offset)
{
    char buf[LOCAL_GROUP_MAX + LOCAL_TOPIC_MAX + 2];
    unsigned char ob[8];
    MDB_val k = offsets_key(buf, group, topic), v = { 8, ob };
    put_be64(ob, (uint64_t)offset);
    return mdb_put(txn, e->offsets, &k, &v, 0);
}

/* Drops records older than the retention from the front of every topic's log.
 * Logs are in timestamp order (give or take producers' clocks), so the scan of
 * a topic stops at the first record young enough to stay.  Returns 1 if it
 * stopped at the deletion cap, so the next batch goes on. */
static int retention_pass(struct local_bus *lb, MDB_txn *txn, int *mdb_rc)
{
    struct local_env *e = lb->e;
    int64_t cutoff = now_ms() - lb->retention_ms;
    MDB_cursor *tc = NULL, *lc = NULL;
    MDB_val tk, tv;
    int deleted = 0, rc;

    if ((rc = mdb_cursor_open(txn, e->next_off, &tc)) != 0 ||
        (rc = mdb_cursor_open(txn, e->log, &lc)) != 0)
        goto out;
    for (rc = mdb_cursor_get(tc, &tk, &tv, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(tc, &tk, &tv, MDB_NEXT)) {
        char topic[LOCAL_TOPIC_MAX + 1];
        if (tk.mv_size > LOCAL_TOPIC_MAX)
            continue;
        memcpy(topic, tk.mv_data, tk.mv_size);
        topic[tk.mv_size] = '\0';
        int compacted = topic_compacted(lb, topic), found;
        int64_t from = 0;
        MDB_val k, v;
        while ((found = seek_topic(lc, topic, from, &k, &v)) == 1) {
            struct local_view rv;
            int ok = local_decode(&v, &rv) == 0;
            from = log_key_offset(&k) + 1;
            if (ok && rv.ts >= cutoff)
                break;
            /* A compacted topic is state (the suppression list): each key's
             * live value stays however old; only old tombstones go. */
            if (compacted && ok && !rv.tombstone)
                continue;
            if (compacted && ok && rv.key) {
                unsigned char cbuf[LOCAL_TOPIC_MAX + 2 + 512];
                MDB_val ck = compact_key(e, cbuf, topic, rv.key, rv.klen), cv;
                if (mdb_get(txn, e->keys, &ck, &cv) == 0 && cv.mv_size == 8 &&
                    (int64_t)get_be64(cv.mv_data) == log_key_offset(&k) &&
                    (rc = mdb_del(txn, e->keys, &ck, NULL)) != 0)
                    goto out;
            }
            if ((rc = mdb_cursor_del(lc, 0)) != 0)
                goto out;
            if (++deleted >= LOCAL_RETENTION_MAX_DELETES) {
                mdb_cursor_close(lc);
                mdb_cursor_close(tc);
                *mdb_rc = 0;
                return 1;
            }
        }
        if (found < 0) {
            rc = EIO;
            goto out;
        }
    }
    rc = rc == MDB_NOTFOUND ? 0 : rc;
out:
    mdb_cursor_close(lc);
    mdb_cursor_close(tc);
    *mdb_rc = rc;
    return 0;
}

static int mdb_to_errno(int rc)
{
    if (rc == MDB_MAP_FULL)
        return -ENOSPC;
    if (rc > 0)
        return -rc;
    return -EIO;
}

/* Reader slots left by killed processes pin old pages (the file grows), so
 * they are cleared on open and then once a minute. */
static void reader_check(struct local_env *e)
{
    int stale = 0;
    mdb_reader_check(e->env, &stale);
    if (stale)
        log_info("local queue %s: cleared %d stale reader slots", e->dir, stale);
    e->reader_check_due_ms = mono_ms() + LOCAL_HOUSEKEEPING_MS;
}

static void commit_batch(struct local_env *e, struct local_write *batch)
{
    struct batch_state bs = { 0 };
    MDB_txn *txn = NULL;
    int64_t now = now_ms();
    const char *what = "begin";
    if (mono_ms() >= e->reader_check_due_ms)
        reader_check(e);
    int rc = mdb_txn_begin(e->env, NULL, 0, &txn);

    strbuf_init(&bs.enc);
    for (struct local_write *w = batch; rc == 0 && w; w = w->next) {
        what = "append";
        for (size_t i = 0; rc == 0 && i < w->n; i++)
            rc = append_record(w->lb, txn, &bs, &w->recs[i], now);
        if (rc == 0)
            what = "commit offset";
        for (size_t i = 0; rc == 0 && w->group && i < w->n_offs; i++)
            rc = put_committed(e, txn, w->group, w->offs[i].topic, w->offs[i].offset);
        struct local_bus *lb = w->lb;
        if (rc == 0 && lb->retention_ms > 0 && mono_ms() >= lb->retention_due_ms) {
            what = "retention";
            int more = retention_pass(lb, txn, &rc);
            lb->retention_due_ms = mono_ms() + (more ? 0 : LOCAL_HOUSEKEEPING_MS);
        }
    }
    for (size_t i = 0; rc == 0 && i < bs.n; i++) {
        unsigned char nb[8];
        MDB_val k = { strlen(bs.topics[i].topic), (void *)bs.topics[i].topic }, v = { 8, nb };
        what = "next offset";
        put_be64(nb, (uint64_t)bs.topics[i].next);
        rc = mdb_put(txn, e->next_off, &k, &v, 0);
    }
    if (rc == 0) {
        what = "commit";
        rc = mdb_txn_commit(txn);   /* frees txn either way */
        txn = NULL;
    }
    if (txn)
        mdb_txn_abort(txn);
    for (struct local_write *w = batch; w; w = w->next) {
        w->rc = rc == 0 ? 0 : mdb_to_errno(rc);
        if (rc != 0)
            snprintf(w->err, sizeof w->err, "local queue %s: %s failed: %s", e->dir, what,
                     mdb_strerror(rc));
    }
    free(bs.topics);
    strbuf_free(&bs.enc);
}

/* Queues w and returns once a leader (maybe this thread) has committed it. */
static int local_submit(struct local_env *e, struct local_write *w, char *err, size_t errlen)
{
    w->next = NULL;
    w->done = 0;
    pthread_mutex_lock(&e->mu);
    *e->queue_tail = w;
    e->queue_tail = &w->next;
    while (!w->done) {
        if (e->leader_busy) {
            pthread_cond_wait(&e->turn, &e->mu);
            continue;
        }
        e->leader_busy = 1;
        struct local_write *batch = e->queue;
        e->queue = NULL;
        e->queue_tail = &e->queue;
        pthread_mutex_unlock(&e->mu);

        commit_batch(e, batch);

        pthread_mutex_lock(&e->mu);
        for (struct local_write *x = batch, *nx; x; x = nx) {
            nx = x->next;
            x->done = 1;
        }
        e->leader_busy = 0;
        e->generation++;
        pthread_cond_broadcast(&e->turn);
        pthread_cond_broadcast(&e->data);
    }
    pthread_mutex_unlock(&e->mu);
    if (w->rc < 0)
        snprintf(err, errlen, "%s", w->err);
    return w->rc;
}

/* ---- environment registry ---- */

static void env_free(struct local_env *e)
{
    if (e->env)
        mdb_env_close(e->env);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->turn);
    pthread_cond_destroy(&e->data);
    free(e->dir);
    free(e);
}

static struct local_env *env_create(const char *dir, const struct stat *st, uint64_t map_size,
                                    char *err, size_t errlen)
{
    struct local_env *e = xcalloc(1, sizeof *e);
    pthread_condattr_t ca;
    MDB_txn *txn = NULL;
    int rc;

    e->dir = xstrdup(dir);
    e->dev = st->st_dev;
    e->ino = st->st_ino;
    e->queue_tail = &e->queue;
    pthread_mutex_init(&e->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->turn, &ca);
    pthread_cond_init(&e->data, &ca);
    pthread_condattr_destroy(&ca);

    const char *what = "create";
    if ((rc = mdb_env_create(&e->env)) != 0)
        goto fail;
    what = "configure";
    if ((rc = mdb_env_set_maxdbs(e->env, 8)) != 0 ||
        (rc = mdb_env_set_maxreaders(e->env, 1024)) != 0 ||
        (rc = mdb_env_set_mapsize(e->env, map_size ? map_size : LOCAL_DEFAULT_MAP_SIZE)) != 0)
        goto fail;
    /* MDB_NOTLS: read transactions are not tied to a thread, since a consumer
     * may be polled from whichever thread runs it. */
    what = "open";
    if ((rc = mdb_env_open(e->env, dir, MDB_NOTLS, 0640)) != 0)
        goto fail;
    reader_check(e);
    e->max_key = (size_t)mdb_env_get_maxkeysize(e->env);
    what = "open databases";
    if ((rc = mdb_txn_begin(e->env, NULL, 0, &txn)) != 0 ||
        (rc = mdb_dbi_open(txn, "log", MDB_CREATE, &e->log)) != 0 ||
        (rc = mdb_dbi_open(txn, "next", MDB_CREATE, &e->next_off)) != 0 ||
        (rc = mdb_dbi_open(txn, "offsets", MDB_CREATE, &e->offsets)) != 0 ||
        (rc = mdb_dbi_open(txn, "keys", MDB_CREATE, &e->keys)) != 0)
        goto fail;
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc != 0)
        goto fail;
    return e;
fail:
    snprintf(err, errlen, "local queue %s: %s: %s", dir, what, mdb_strerror(rc));
    if (txn)
        mdb_txn_abort(txn);
    env_free(e);
    return NULL;
}

static struct local_env *env_get(const char *dir, uint64_t map_size, char *err, size_t errlen)
{
    struct stat st;
    char groups[4096];

    if (snprintf(groups, sizeof groups, "%s/groups", dir) >= (int)sizeof groups) {
        snprintf(err, errlen, "local queue directory name too long");
        return NULL;
    }
    int rc = fs_mkdir_p(groups, 0750);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create %s: %s", groups, strerror(-rc));
        return NULL;
    }
    if (stat(dir, &st) < 0) {
        snprintf(err, errlen, "cannot stat %s: %s", dir, strerror(errno));
        return NULL;
    }
    pthread_mutex_lock(&local_registry_mu);
    struct local_env *e = local_registry;
    while (e && !(e->dev == st.st_dev && e->ino == st.st_ino))
        e = e->next;
    if (!e) {
        e = env_create(dir, &st, map_size, err, errlen);
        if (e) {
            e->next = local_registry;
            local_registry = e;
        }
    }
    if (e)
        e->refs++;
    pthread_mutex_unlock(&local_registry_mu);
    return e;
}

static void env_put(struct local_env *e)
{
    pthread_mutex_lock(&local_registry_mu);
    if (--e->refs > 0) {
        pthread_mutex_unlock(&local_registry_mu);
        return;
    }
    for (struct local_env **pp = &local_registry; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    pthread_mutex_unlock(&local_registry_mu);
    env_free(e);
}

/* ---- ops ---- */

static void local_close(void *impl)
{
    struct local_bus *lb = impl;
    if (!lb)
        return;
    env_put(lb->e);
    for (size_t i = 0; i < lb->n_compacted; i++)
        free(lb->compacted[i]);
    free(lb->compacted);
    free(lb);
}

static void *local_open(const char *where, const struct bus_options *opt, char *err, size_t errlen)
{
    struct local_env *e = env_get(where, opt->map_size, err, errlen);
    if (!e)
        return NULL;
    struct local_bus *lb = xcalloc(1, sizeof *lb);
    lb->e = e;
    lb->retention_ms = opt->retention_ms;
    for (const char *const *t = opt->compacted_topics; t && *t; t++) {
        lb->compacted = xrealloc(lb->compacted, (lb->n_compacted + 1) * sizeof *lb->compacted);
        lb->compacted[lb->n_compacted++] = xstrdup(*t);
    }
    if (lb->retention_ms > 0) {
        /* An empty batch: the leader runs the (due) retention pass. */
        struct local_write w = { .lb = lb };
        if (local_submit(e, &w, err, errlen) < 0) {
            local_close(lb);
            return NULL;
        }
    }
    return lb;
}

static int records_valid(const struct bus_record *recs, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        if (!topic_valid(recs[i].topic, err, errlen))
            return 0;
        if (recs[i].partition != -1 && recs[i].partition != 0) {
            snprintf(err, errlen, "topic %s: partition %d does not exist (local topics have only 0)",
                     recs[i].topic, (int)recs[i].partition);
            return 0;
        }
        for (size_t h = 0; h < recs[i].n_headers; h++)
            if (!recs[i].headers[h].name) {
                snprintf(err, errlen, "topic %s: header without a name", recs[i].topic);
                return 0;
            }
    }
    return 1;
}

/* Local produce has no useful timeout: a commit is one fsync, and a record
 * handed to the leader cannot be taken back. */
static int local_produce(void *impl, const struct bus_record *recs, size_t n, int timeout_ms,
                         char *err, size_t errlen)
{
    struct local_bus *lb = impl;
    if (!records_valid(recs, n, err, errlen))
        return -EINVAL;
    struct local_write w = { .lb = lb, .recs = recs, .n = n };
    return local_submit(lb->e, &w, err, errlen);
}

static int group_valid(const char *group, char *err, size_t errlen)
{
    if (!group || !*group || strlen(group) > LOCAL_GROUP_MAX) {
        snprintf(err, errlen, "bad consumer group name (1-%d bytes)", LOCAL_GROUP_MAX);
        return 0;
    }
    return 1;
}

/* groups/<name>.lock with bytes outside [A-Za-z0-9._-] as %XX, so any group
 * name is a safe single path component. */
static void group_lock_path(const struct local_env *e, const char *group, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "%s/groups/", e->dir);
    for (const unsigned char *p = (const unsigned char *)group; *p && n + 4 < len; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || (*p == '.' && p != (const unsigned char *)group))
            buf[n++] = (char)*p;
        else
            n += (size_t)snprintf(buf + n, len - n, "%%%02X", *p);
    }
    snprintf(buf + n, len - n, ".lock");
}

static int group_lock(const struct local_env *e, const char *group, char *err, size_t errlen)
{
    char path[4096 + 3 * LOCAL_GROUP_MAX];
    group_lock_path(e, group, path, sizeof path);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int saved = errno;
        char pid[32] = "";
        ssize_t got = pread(fd, pid, sizeof pid - 1, 0);
        pid[got > 0 ? got : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        if (saved == EWOULDBLOCK)
            snprintf(err, errlen, "group %s is already consumed by another process (pid %s); "
                     "scale out with Kafka", group, *pid ? pid : "unknown");
        else
            snprintf(err, errlen, "cannot lock %s: %s", path, strerror(saved));
        close(fd);
        return -1;
    }
    /* The pid is only for the message above; the lock itself is the flock. */
    char pid[32];
    int plen = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)plen, 0) != plen)
        log_warn("local queue: cannot record pid in %s: %s", path, strerror(errno));
    return fd;
}

static void local_consumer_free(void *cimpl)
{
    struct local_consumer *c = cimpl;
    if (!c)
        return;
    if (c->lock_fd >= 0)
        close(c->lock_fd);   /* releases the flock */
    for (size_t i = 0; i < c->n_topics; i++)
        free(c->topics[i]);
    free(c->topics);
    free(c->pos);
    free(c->group);
    free(c);
}

static void *local_consumer_new(void *impl, const char *group, const char *const *topics,
                                int from_beginning, char *err, size_t errlen)
{
    struct local_bus *lb = impl;
    struct local_env *e = lb->e;
    MDB_txn *txn;

    if (!group_valid(group, err, errlen))
        return NULL;
    for (const char *const *t = topics; *t; t++)
        if (!topic_valid(*t, err, errlen))
            return NULL;
    int fd = group_lock(e, group, err, errlen);
    if (fd < 0)
        return NULL;

    struct local_consumer *c = xcalloc(1, sizeof *c);
    c->lb = lb;
    c->lock_fd = fd;
    c->group = xstrdup(group);
    for (const char *const *t = topics; *t; t++)
        c->n_topics++;
    c->topics = xcalloc(c->n_topics, sizeof *c->topics);
    c->pos = xcalloc(c->n_topics, sizeof *c->pos);
    int rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        snprintf(err, errlen, "local queue %s: read: %s", e->dir, mdb_strerror(rc));
        local_consumer_free(c);
        return NULL;
    }
    for (size_t i = 0; i < c->n_topics; i++) {
        c->topics[i] = xstrdup(topics[i]);
        int64_t committed = read_committed(e, txn, group, topics[i]);
        c->pos[i] = committed >= 0 ? committed : from_beginning ? 0 : read_next_offset(e, txn, topics[i]);
    }
    mdb_txn_abort(txn);
    return c;
}

/* One pass over the topics: 1 = *out set, 0 = nothing new, <0 = error. */
static int consumer_next(struct local_consumer *c, struct bus_record **out)
{
    struct local_env *e = c->lb->e;
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        log_error("local queue %s: read: %s", e->dir, mdb_strerror(rc));
        return -EIO;
    }
    if ((rc = mdb_cursor_open(txn, e->log, &cur)) != 0) {
        mdb_txn_abort(txn);
        log_error("local queue %s: cursor: %s", e->dir, mdb_strerror(rc));
        return -EIO;
    }
    int found = 0;
    for (size_t i = 0; i < c->n_topics && !found; i++) {
        size_t t = (c->rr + i) % c->n_topics;
        MDB_val k, v;
        found = seek_topic(cur, c->topics[t], c->pos[t], &k, &v);
        if (found <= 0)
            continue;
        int64_t off = log_key_offset(&k);
        struct local_view rv;
        /* A record that does not decode is skipped, not retried forever:
         * a stuck partition is worse than one lost (already broken) record. */
        c->pos[t] = off + 1;
        c->rr = t + 1;
        if (local_decode(&v, &rv) < 0) {
            log_error("local queue %s: topic %s offset %lld does not decode; skipped", e->dir,
                      c->topics[t], (long long)off);
            found = -EBADMSG;
            break;
        }
        *out = local_build(c->topics[t], &rv, off);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return found;
}

/* Waits up to ms for a commit by this process; commits by others are seen
 * by the caller's next look, at most LOCAL_RECHECK_MS later. */
static void wait_for_data(struct local_env *e, uint64_t seen_gen, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)(ms * 1000000);
    ts.tv_sec += ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    pthread_mutex_lock(&e->mu);
    if (e->generation == seen_gen)
        pthread_cond_timedwait(&e->data, &e->mu, &ts);
    pthread_mutex_unlock(&e->mu);
}

static uint64_t generation(struct local_env *e)
{
    pthread_mutex_lock(&e->mu);
    uint64_t g = e->generation;
    pthread_mutex_unlock(&e->mu);
    return g;
}

/* Id of the last committed write transaction, by any process.  Read from
 * the meta pages without a transaction: a stale value only costs one look. */
static size_t last_txnid(struct local_env *e)
{
    MDB_envinfo info;
    mdb_env_info(e->env, &info);
    return info.me_last_txnid;
}

/* Calls look(arg) until it returns non-zero or timeout_ms (<0: forever)
 * passes.  Between looks it sleeps until this process commits or, every
 * LOCAL_RECHECK_MS, sees that another process did. */
static int wait_until(struct local_env *e, int timeout_ms, int (*look)(void *), void *arg)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        uint64_t gen = generation(e);
        size_t txnid = last_txnid(e);
        int rc = look(arg);
        if (rc != 0)
            return rc;
        do {
            int64_t left = deadline - mono_ms();
            if (timeout_ms >= 0 && left <= 0)
                return 0;
            wait_for_data(e, gen, timeout_ms < 0 || left > LOCAL_RECHECK_MS ? LOCAL_RECHECK_MS : left);
        } while (generation(e) == gen && last_txnid(e) == txnid);
    }
}

struct poll_arg {
    struct local_consumer *c;
    struct bus_record **out;
};

static int poll_look(void *arg)
{
    struct poll_arg *a = arg;
    return consumer_next(a->c, a->out);
}

static int local_poll(void *cimpl, struct bus_record **out, int timeout_ms)
{
    struct local_consumer *c = cimpl;
    struct poll_arg a = { c, out };
    return wait_until(c->lb->e, timeout_ms, poll_look, &a);
}

static ssize_t consumer_topic(const struct local_consumer *c, const struct bus_record *r)
{
    for (size_t i = 0; r && r->topic && i < c->n_topics; i++)
        if (strcmp(c->topics[i], r->topic) == 0)
            return (ssize_t)i;
    return -1;
}

static int local_commit(void *cimpl, const struct bus_record *r)
{
    struct local_consumer *c = cimpl;
    char err[256];
    if (consumer_topic(c, r) < 0)
        return -EINVAL;
    struct local_offset off = { r->topic, r->offset + 1 };
    struct local_write w = { .lb = c->lb, .group = c->group, .offs = &off, .n_offs = 1 };
    int rc = local_submit(c->lb->e, &w, err, sizeof err);
    if (rc < 0)
        log_error("%s", err);
    return rc;
}

static int local_seek(void *cimpl, const struct bus_record *r)
{
    struct local_consumer *c = cimpl;
    ssize_t t = consumer_topic(c, r);
    if (t < 0)
        return -EINVAL;
    c->pos[t] = r->offset;
    return 0;
}

/* Locally the outputs and the inputs' offsets share one transaction, so this
 * is atomic here even where Kafka would be at_least_once.  Each topic's
 * offset moves past the highest input of that topic. */
static int local_produce_and_commit(void *cimpl, const struct bus_record *const *ins, size_t n_in,
                                    const struct bus_record *outs, size_t n, char *err, size_t errlen)
{
    struct local_consumer *c = cimpl;
    for (size_t i = 0; i < n_in; i++)
        if (consumer_topic(c, ins[i]) < 0) {
            snprintf(err, errlen, "record's topic %s is not one this consumer reads", ins[i]->topic);
            return -EINVAL;
        }
    if (!records_valid(outs, n, err, errlen))
        return -EINVAL;
    struct local_offset *offs = xcalloc(c->n_topics, sizeof *offs);
    size_t n_offs = 0;
    for (size_t t = 0; t < c->n_topics; t++) {
        int64_t next = -1;
        for (size_t i = 0; i < n_in; i++)
            if (strcmp(ins[i]->topic, c->topics[t]) == 0 && ins[i]->offset + 1 > next)
                next = ins[i]->offset + 1;
        if (next >= 0)
            offs[n_offs++] = (struct local_offset){ c->topics[t], next };
    }
    struct local_write w = { .lb = c->lb, .recs = outs, .n = n, .group = c->group,
                             .offs = offs, .n_offs = n_offs };
    int rc = local_submit(c->lb->e, &w, err, errlen);
    free(offs);
    return rc;
}

static int local_topic_stats(void *impl, const char *topic, const char *group,
                             struct bus_partition_stats *out, int max, char *err, size_t errlen)
{
    struct local_bus *lb = impl;
    struct local_env *e = lb->e;
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;

    if (!topic_valid(topic, err, errlen) || (group && !group_valid(group, err, errlen)))
        return -EINVAL;
    if (max < 1)
        return 0;
    int rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0 && (rc = mdb_cursor_open(txn, e->log, &cur)) != 0)
        mdb_txn_abort(txn);
    if (rc != 0) {
        snprintf(err, errlen, "local queue %s: read: %s", e->dir, mdb_strerror(rc));
        return -EIO;
    }
    out->partition = 0;
    out->high = read_next_offset(e, txn, topic);
    out->low = seek_topic(cur, topic, 0, &k, &v) == 1 ? log_key_offset(&k) : out->high;
    out->committed = group ? read_committed(e, txn, group, topic) : -1;
    /* The oldest record the group still has to process: at its committed
     * offset, or at the start of the log when it never committed. */
    out->committed_ts_ms = -1;
    struct local_view rv;
    if (seek_topic(cur, topic, out->committed >= 0 ? out->committed : 0, &k, &v) == 1 &&
        local_decode(&v, &rv) == 0)
        out->committed_ts_ms = rv.ts;
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return 1;
}

static int local_group_set_offset(void *impl, const char *group, const char *topic, int32_t partition,
                                  int64_t offset, char *err, size_t errlen)
{
    struct local_bus *lb = impl;
    if (!group_valid(group, err, errlen) || !topic_valid(topic, err, errlen))
        return -EINVAL;
    if (partition != 0) {
        snprintf(err, errlen, "topic %s: partition %d does not exist (local topics have only 0)",
                 topic, (int)partition);
        return -EINVAL;
    }
    struct local_offset off = { topic, offset };
    struct local_write w = { .lb = lb, .group = group, .offs = &off, .n_offs = 1 };
    return local_submit(lb->e, &w, err, errlen);
}

struct read_arg {
    struct local_env *e;
    const char *topic;
    int64_t offset;
    struct bus_record **out;
};

/* 1 found, -ENOENT gone (below the next offset), 0 not written yet. */
static int read_look(void *arg)
{
    struct read_arg *a = arg;
    unsigned char buf[LOCAL_TOPIC_MAX + 9];
    MDB_txn *txn;
    MDB_val k = log_key(buf, a->topic, a->offset), v;
    struct local_view rv;

    int rc = mdb_txn_begin(a->e->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return -EIO;
    rc = mdb_get(txn, a->e->log, &k, &v);
    if (rc == 0) {
        rc = local_decode(&v, &rv) == 0 ? 1 : -EBADMSG;
        if (rc == 1)
            *a->out = local_build(a->topic, &rv, a->offset);
    } else if (rc == MDB_NOTFOUND) {
        rc = a->offset < read_next_offset(a->e, txn, a->topic) ? -ENOENT : 0;
    } else {
        rc = -EIO;
    }
    mdb_txn_abort(txn);
    return rc;
}

static int local_read_at(void *impl, const char *topic, int32_t partition, int64_t offset,
                         struct bus_record **out, int timeout_ms)
{
    struct local_bus *lb = impl;
    char err[128];
    if (partition != 0 || offset < 0 || !topic_valid(topic, err, sizeof err))
        return -EINVAL;
    struct read_arg a = { lb->e, topic, offset, out };
    int rc = wait_until(lb->e, timeout_ms, read_look, &a);
    return rc == -ENOENT ? 0 : rc;
}

const struct bus_ops bus_local_ops = {
    .name = "local",
    .open = local_open,
    .close = local_close,
    .produce = local_produce,
    .consumer_new = local_consumer_new,
    .poll = local_poll,
    .commit = local_commit,
    .seek = local_seek,
    .consumer_free = local_consumer_free,
    .produce_and_commit = local_produce_and_commit,
    .topic_stats = local_topic_stats,
    .group_set_offset = local_group_set_offset,
    .read_at = local_read_at,
};
