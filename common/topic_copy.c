/* topic_copy — consume a compacted topic into LMDB. */
#include "topic_copy.h"
#include "bus.h"
#include "kv.h"
#include "log.h"
#include "strbuf.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct topic_copy {
    struct bus_consumer *c;
    struct kv *kv;
    char *topic;
    pthread_t tid;
    atomic_int stop;
    atomic_int caught_up;
    _Atomic int64_t applied;
};

void topic_copy_apply(struct topic_copy *tc, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (!key || klen == 0)
        return;
    if (val)
        kv_put(tc->kv, key, klen, val, vlen, 0);
    else
        kv_del(tc->kv, key, klen);
}

static void *copy_main(void *arg)
{
    struct topic_copy *tc = arg;
    while (!atomic_load(&tc->stop)) {
        struct bus_record *r = NULL;
        int rc = bus_consumer_poll(tc->c, &r, 200);
        if (rc < 0) {
            log_kv(LOG_WARN, "topic copy: poll failed; retrying", "topic", tc->topic, NULL);
            continue;
        }
        if (rc == 0) {
            atomic_store(&tc->caught_up, 1);
            continue;
        }
        topic_copy_apply(tc, r->key, r->key_len, r->value, r->value_len);
        atomic_fetch_add(&tc->applied, 1);
        bus_consumer_commit(tc->c, r);
        bus_record_free(r);
    }
    return NULL;
}

struct topic_copy *topic_copy_start(struct bus *b, const char *topic, const char *group,
                                    const char *dir, const char *db, char *err, size_t errlen)
{
    struct topic_copy *tc = xcalloc(1, sizeof(*tc));
    tc->topic = xstrdup(topic);
    tc->kv = kv_open(dir, db, 0, err, errlen);
    if (!tc->kv)
        goto fail;
    const char *topics[] = { topic, NULL };
    tc->c = bus_consumer_new(b, group, topics, 1, err, errlen);
    if (!tc->c)
        goto fail;
    if (pthread_create(&tc->tid, NULL, copy_main, tc) != 0) {
        snprintf(err, errlen, "cannot start the copy thread");
        goto fail;
    }
    return tc;
fail:
    bus_consumer_free(tc->c);
    kv_close(tc->kv);
    free(tc->topic);
    free(tc);
    return NULL;
}

void topic_copy_stop(struct topic_copy *tc)
{
    if (!tc)
        return;
    atomic_store(&tc->stop, 1);
    pthread_join(tc->tid, NULL);
    bus_consumer_free(tc->c);
    kv_close(tc->kv);
    free(tc->topic);
    free(tc);
}

struct kv *topic_copy_kv(struct topic_copy *tc)
{
    return tc->kv;
}

int topic_copy_caught_up(struct topic_copy *tc)
{
    return atomic_load(&tc->caught_up);
}

int64_t topic_copy_applied(struct topic_copy *tc)
{
    return atomic_load(&tc->applied);
}
