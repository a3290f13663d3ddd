/* suppression_copy — see the header.  Applying is idempotent and in topic
 * order (last write per key wins, a tombstone deletes), which is right
 * whether or not the broker has compacted yet. */
#include "suppression_copy.h"
#include "address.h"
#include "bus.h"
#include "kv.h"
#include "log.h"
#include "strbuf.h"
#include "suppression.h"
#include "topics.h"
#include "timeutil.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SUPPRESSION_MAX_PARTITIONS 256

struct suppression_copy {
    struct kv *kv;
    struct bus *bus;
    char *group;
    stop_flag_t *stop;
    pthread_t tid;
    int started;
    atomic_int ready;
    atomic_int quit;
};

/* Rebuilt from the topic at every start, so it needs no fsync (KV_VOLATILE)
 * and starts empty: a stale copy can never hide a suppression. */
struct suppression_copy *suppression_copy_open(const char *dir, char *err, size_t errlen)
{
    struct kv *kv = kv_open_flags(dir, "suppression", 0, KV_VOLATILE, err, errlen);
    if (!kv)
        return NULL;
    if (kv_clear(kv) != 0) {
        snprintf(err, errlen, "%s: cannot empty the suppression copy", dir);
        kv_close(kv);
        return NULL;
    }
    struct suppression_copy *s = xcalloc(1, sizeof(*s));
    s->kv = kv;
    return s;
}

void suppression_copy_free(struct suppression_copy *s)
{
    if (!s)
        return;
    if (s->started) {
        atomic_store(&s->quit, 1);
        pthread_join(s->tid, NULL);
    }
    kv_close(s->kv);
    free(s->group);
    free(s);
}

/* The key rule is common/suppression's (lower-cased address[|list]), so a
 * key written by feedback or the CLI is the key send looks up. */
static int normalize_key(const void *key, size_t klen, char *out, size_t outlen)
{
    char tmp[ADDRESS_BUFSZ + 256];
    if (klen == 0 || klen >= sizeof(tmp))
        return -EINVAL;
    memcpy(tmp, key, klen);
    tmp[klen] = '\0';
    char *bar = strchr(tmp, '|');
    if (bar)
        *bar++ = '\0';
    return suppression_key(tmp, bar, out, outlen);
}

int suppression_copy_apply(struct suppression_copy *s, const void *key, size_t klen,
                           const void *val, size_t vlen)
{
    char k[ADDRESS_BUFSZ + 256];
    if (!key || normalize_key(key, klen, k, sizeof(k)) != 0) {
        log_kv(LOG_WARN, "suppression record with an invalid key ignored", NULL);
        return 0;
    }
    if (!val)
        return kv_del(s->kv, k, strlen(k)) < 0 ? -EIO : 0;
    int rc = kv_put(s->kv, k, strlen(k), val, vlen, 0);
    return rc < 0 ? rc : 0;
}

int suppression_copy_check(struct suppression_copy *s, const char *addr, const char *list,
                           char *reason, size_t rlen, int *per_list)
{
    char k[ADDRESS_BUFSZ + 256];
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && (!list || !*list))
            break;
        if (suppression_key(addr, pass ? list : NULL, k, sizeof(k)) != 0)
            return -EINVAL;
        void *v = NULL;
        size_t vl = 0;
        int rc = kv_get(s->kv, k, strlen(k), &v, &vl);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            char perr[128];
            json_t *j = v ? suppression_record_parse(v, vl, perr, sizeof(perr)) : NULL;
            const char *r = json_string_value(json_object_get(j, "reason"));
            snprintf(reason, rlen, "%s", r ? r : "");
            json_decref(j);
            free(v);
            if (per_list)
                *per_list = pass;
            return 1;
        }
    }
    return 0;
}

/* Caught up when every partition's consumed position reaches the high
 * watermark seen when following began. */
struct progress {
    int n;
    int32_t part[SUPPRESSION_MAX_PARTITIONS];
    int64_t high[SUPPRESSION_MAX_PARTITIONS];
    int64_t next[SUPPRESSION_MAX_PARTITIONS];
};

static int caught_up(const struct progress *p)
{
    for (int i = 0; i < p->n; i++)
        if (p->next[i] < p->high[i])
            return 0;
    return 1;
}

static void *follow(void *arg)
{
    struct suppression_copy *s = arg;
    char err[256];
    const char *topics[] = { TOPIC_SUPPRESSION, NULL };
    struct bus_consumer *c = NULL;
    struct progress prog = { 0 };
    struct bus_partition_stats st[SUPPRESSION_MAX_PARTITIONS];
    int have_stats = 0;

    while (!atomic_load(&s->quit) && !*s->stop) {
        if (!c) {
            int n = bus_topic_stats(s->bus, TOPIC_SUPPRESSION, s->group, st, SUPPRESSION_MAX_PARTITIONS,
                                    err, sizeof(err));
            if (n < 0 && n != -ENOENT) {
                /* Not knowing how much there is to read, the copy must not
                 * call itself ready: an empty copy would let send deliver to
                 * suppressed addresses.  Only a missing topic means "empty". */
                log_kv(LOG_WARN, "suppression copy: cannot read the topic's offsets; retrying", "error", err, NULL);
                sleep_unless_stopped(1000, s->stop);
                continue;
            }
            have_stats = n >= 0;
            prog.n = n > 0 ? n : 0;
            for (int i = 0; i < prog.n; i++) {
                prog.part[i] = st[i].partition;
                prog.high[i] = st[i].high;
                prog.next[i] = st[i].low;
            }
            c = bus_consumer_new(s->bus, s->group, topics, 1, err, sizeof(err));
            if (!c) {
                log_kv(LOG_ERROR, "suppression copy: cannot consume", "error", err, NULL);
                sleep_unless_stopped(1000, s->stop);
                continue;
            }
            if (have_stats && caught_up(&prog))
                atomic_store(&s->ready, 1);
        }
        struct bus_record *r = NULL;
        int rc = bus_consumer_poll(c, &r, 200);
        if (rc < 0) {
            /* An error is not "nothing more": readiness waits for real records. */
            log_kv(LOG_ERROR, "suppression copy: poll failed", NULL);
            sleep_unless_stopped(1000, s->stop);
            continue;
        }
        if (rc == 0) {
            /* No stats (topic not created yet): an empty poll means caught up. */
            if (!have_stats)
                atomic_store(&s->ready, 1);
            continue;
        }
        if (suppression_copy_apply(s, r->key, r->key_len, r->value, r->value_len) != 0) {
            /* Skipping it would leave an address unsuppressed: read it again. */
            log_kv(LOG_ERROR, "suppression copy: cannot store a record; retrying", NULL);
            bus_consumer_seek(c, r);
            bus_record_free(r);
            sleep_unless_stopped(1000, s->stop);
            continue;
        }
        for (int i = 0; i < prog.n; i++)
            if (prog.part[i] == r->partition && r->offset + 1 > prog.next[i])
                prog.next[i] = r->offset + 1;
        bus_record_free(r);
        if (!atomic_load(&s->ready) && have_stats && caught_up(&prog)) {
            atomic_store(&s->ready, 1);
            log_kv(LOG_INFO, "suppression copy caught up", NULL);
        }
    }
    bus_consumer_free(c);
    return NULL;
}

int suppression_copy_start(struct suppression_copy *s, struct bus *b, const char *group,
                           stop_flag_t *stop, char *err, size_t errlen)
{
    s->bus = b;
    s->group = xstrdup(group);
    s->stop = stop;
    if (pthread_create(&s->tid, NULL, follow, s) != 0) {
        snprintf(err, errlen, "cannot start the suppression thread");
        return -EAGAIN;
    }
    s->started = 1;
    return 0;
}

int suppression_copy_ready(struct suppression_copy *s)
{
    return atomic_load(&s->ready);
}

struct kv *suppression_copy_kv(struct suppression_copy *s)
{
    return s->kv;
}
