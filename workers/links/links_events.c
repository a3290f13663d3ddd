/* links_events — see links_events.h. */
#include "links_events.h"
#include "bus.h"
#include "log.h"
#include "metrics.h"
#include "strbuf.h"
#include "topics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRODUCE_TIMEOUT_MS 5000

struct queued {
    char *key, *value;
    size_t len;
};

struct links_events {
    struct bus *bus;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t more;
    struct queued *q, *spare;      /* the queue, and the buffer of the batch being produced */
    size_t n;
    int stop, threaded;
    struct metric *m_dropped, *m_failed;
};

/* Produces and frees batch[0..n). */
static void publish(struct links_events *e, struct queued *batch, size_t n)
{
    struct bus_record *r = xcalloc(n, sizeof(*r));
    for (size_t i = 0; i < n; i++)
        r[i] = (struct bus_record){ .topic = TOPIC_EVENTS, .key = batch[i].key, .key_len = strlen(batch[i].key),
                                    .value = batch[i].value, .value_len = batch[i].len, .partition = -1 };
    char err[256];
    if (bus_produce(e->bus, r, n, PRODUCE_TIMEOUT_MS, err, sizeof(err)) != 0) {
        char nb[24];
        snprintf(nb, sizeof(nb), "%zu", n);
        metric_add(e->m_failed, (double)n);
        log_kv(LOG_WARN, "cannot publish download events; dropped", "events", nb, "error", err, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        free(batch[i].key);
        free(batch[i].value);
    }
    free(r);
}

static void *publisher(void *arg)
{
    struct links_events *e = arg;
    log_set_worker("links");
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (e->n == 0 && !e->stop)
            pthread_cond_wait(&e->more, &e->mu);
        if (e->n == 0)
            break;   /* stopping, nothing left */
        struct queued *batch = e->q;
        size_t n = e->n;
        e->q = e->spare;
        e->spare = batch;   /* the publisher's alone until the next swap */
        e->n = 0;
        pthread_mutex_unlock(&e->mu);
        publish(e, batch, n);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

struct links_events *links_events_start(struct bus *bus, int threaded)
{
    struct links_events *e = xcalloc(1, sizeof(*e));
    e->bus = bus;
    e->threaded = threaded;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->more, NULL);
    e->m_dropped = metric_counter("mailfleet_links_events_dropped_total",
                                  "Download events not published", "why=\"queue_full\"");
    e->m_failed = metric_counter("mailfleet_links_events_dropped_total", "Download events not published",
                                 "why=\"bus\"");
    if (!threaded)
        return e;
    e->q = xcalloc(LINKS_EVENTS_MAX, sizeof(*e->q));
    e->spare = xcalloc(LINKS_EVENTS_MAX, sizeof(*e->spare));
    if (pthread_create(&e->tid, NULL, publisher, e) != 0)
        panic("%s: pthread_create", __func__);
    return e;
}

void links_events_add(struct links_events *e, const char *key, char *value, size_t len)
{
    if (!e->threaded) {
        struct queued one = { xstrdup(key), value, len };
        publish(e, &one, 1);
        return;
    }
    pthread_mutex_lock(&e->mu);
    if (e->n == LINKS_EVENTS_MAX) {
        pthread_mutex_unlock(&e->mu);
        metric_inc(e->m_dropped);
        free(value);
        return;
    }
    e->q[e->n++] = (struct queued){ xstrdup(key), value, len };
    pthread_cond_signal(&e->more);
    pthread_mutex_unlock(&e->mu);
}

void links_events_stop(struct links_events *e)
{
    if (!e)
        return;
    if (e->threaded) {
        pthread_mutex_lock(&e->mu);
        e->stop = 1;
        pthread_cond_signal(&e->more);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->tid, NULL);
    }
    free(e->q);
    free(e->spare);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->more);
    free(e);
}
