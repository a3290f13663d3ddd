/* worker_loop — see worker_loop.h for the contract.
 *
 * The batch's outputs are deep copies kept in one list; a handler's outputs
 * are dropped again (the list cut back to where it stood) when its record
 * ends up anything but WL_OK.  Seeking back after a cut is per partition:
 * the first uncommitted record of each partition, so Kafka batches that
 * span partitions lose nothing. */
#include "worker_loop.h"
#include "config.h"
#include "dlq_record.h"
#include "log.h"
#include "metrics.h"
#include "strbuf.h"
#include "timeutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WL_BACKOFF_MAX_MS 30000
#define WL_STUCK_MS (10 * 60 * 1000)   /* [mailfleet] stuck_after's default */
#define WL_NOT_DUE_WAIT_MS 1000

struct wl_batch {
    struct bus_record *recs;
    size_t n, cap;
};

struct worker_loop {
    struct bus_consumer *c;
    struct worker_loop_options o;
    _Atomic int64_t step_since_ms;   /* mono ms the current step began; 0 between steps */
    _Atomic int64_t progress_ms;     /* mono ms of the step's last progress (worker_loop_progress) */
    struct bus_record **recs;      /* the batch being handled */
    struct wl_batch out;
    /* Per partition: the record that asked for a retry there last and how
     * often in a row (a count per partition, so two failing records on two
     * partitions cannot reset each other's count for ever). */
    struct retry_entry {
        char *topic;
        int32_t partition;
        int64_t offset;
        int attempts;
    } *retries;
    size_t n_retries, cap_retries;
    int64_t env_backoff_ms;        /* next environment back-off; 0 = none pending */
    atomic_int ready;
    pthread_mutex_t why_lock;      /* why: read by readiness checks */
    char why[512];                 /* the error that holds the loop back */
    int failed;                    /* the bus failed for good */
    size_t isolate;                /* batches of one to run before full ones again */
    /* The record whose output the broker refused, and how often in a row
     * (its handler succeeds each time, so the retry count can't hold it). */
    struct {
        char topic[256];
        int32_t partition;
        int64_t offset;
        int attempts;
    } refused;
    struct {
        struct metric *batch, *handler, *commit;
        struct metric *ok, *retry, *dead, *env, *poll_err, *commit_err, *ready, *rebalanced;
    } m;
};

void wl_result_set(struct wl_result *res, enum wl_kind kind, enum wl_cause cause, const char *stage,
                   const char *cls, const char *fmt, ...)
{
    va_list ap;
    res->kind = kind;
    res->cause = cause;
    snprintf(res->stage, sizeof res->stage, "%s", stage ? stage : "");
    snprintf(res->cls, sizeof res->cls, "%s", cls ? cls : "");
    va_start(ap, fmt);
    vsnprintf(res->reason, sizeof res->reason, fmt, ap);
    va_end(ap);
}

/* ---- outputs ---- */

void wl_output(struct wl_batch *out, const struct bus_record *r)
{
    size_t size = strlen(r->topic) + 1 + r->key_len + 1 + r->value_len + 1;
    for (size_t i = 0; i < r->n_headers; i++)
        size += strlen(r->headers[i].name) + 1 + r->headers[i].value_len + 1;
    struct bus_header *hs = xmalloc(r->n_headers * sizeof *hs + size);
    char *p = (char *)(hs + r->n_headers);
#define WL_PLACE(dst, src, len) do { memcpy(p, (src) ? (const void *)(src) : "", (len)); \
        p[(len)] = '\0'; (dst) = p; p += (len) + 1; } while (0)
    const char *topic, *key, *value;
    WL_PLACE(topic, r->topic, strlen(r->topic));
    WL_PLACE(key, r->key, r->key ? r->key_len : 0);
    WL_PLACE(value, r->value, r->value ? r->value_len : 0);
    for (size_t i = 0; i < r->n_headers; i++) {
        WL_PLACE(hs[i].name, r->headers[i].name, strlen(r->headers[i].name));
        WL_PLACE(hs[i].value, r->headers[i].value, r->headers[i].value_len);
        hs[i].value_len = r->headers[i].value_len;
    }
#undef WL_PLACE
    if (out->n == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 16;
        out->recs = xrealloc(out->recs, out->cap * sizeof *out->recs);
    }
    /* The copy hangs off .headers: the allocation starts with the array. */
    out->recs[out->n++] = (struct bus_record){
        .topic = topic, .key = r->key ? key : NULL, .key_len = r->key ? r->key_len : 0,
        .value = r->value ? value : NULL, .value_len = r->value ? r->value_len : 0,
        .headers = hs, .n_headers = r->n_headers, .timestamp_ms = r->timestamp_ms,
        .partition = r->partition,
    };
}

static void outputs_truncate(struct wl_batch *out, size_t n)
{
    while (out->n > n)
        free((void *)out->recs[--out->n].headers);
}

/* ---- setup ---- */

static struct metric *outcome(const char *labels, const char *what)
{
    char l[512];
    snprintf(l, sizeof l, "%s,outcome=\"%s\"", labels, what);
    return metric_counter("mailfleet_loop_records_total", "Records by the handler's result", l);
}

struct worker_loop *worker_loop_new(struct bus_consumer *c, const struct worker_loop_options *o)
{
    static const double sizes[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096 };
    if (!o->handler || !o->handler->handle || !o->worker)
        panic("%s: a loop needs a worker name and a handle()", __func__);
    struct worker_loop *wl = xcalloc(1, sizeof *wl);
    wl->c = c;
    wl->o = *o;
    if (wl->o.batch_max < 1)
        wl->o.batch_max = 1;
    if (wl->o.max_attempts < 1)
        wl->o.max_attempts = 1;
    if (wl->o.backoff_ms < 1)
        wl->o.backoff_ms = 1;
    if (wl->o.backoff_max_ms < 1)
        wl->o.backoff_max_ms = WL_BACKOFF_MAX_MS;
    if (wl->o.output_timeout_ms < 1)
        wl->o.output_timeout_ms = BUS_BATCH_TIMEOUT_MS;
    if (wl->o.stuck_ms < 1)
        wl->o.stuck_ms = WL_STUCK_MS;
    if (!wl->o.group)
        wl->o.group = "";
    wl->recs = xcalloc(wl->o.batch_max, sizeof *wl->recs);
    atomic_init(&wl->ready, 1);
    pthread_mutex_init(&wl->why_lock, NULL);

    char labels[256], l2[320];
    snprintf(labels, sizeof labels, "worker=\"%s\",group=\"%s\"", o->worker, o->group ? o->group : "");
    wl->m.batch = metric_histogram("mailfleet_loop_batch_records", "Records per batch", labels, sizes,
                                   sizeof sizes / sizeof sizes[0]);
    wl->m.handler = metric_histogram("mailfleet_loop_handler_seconds", "Handler time per batch", labels,
                                     metrics_latency_buckets, metrics_latency_buckets_n);
    wl->m.commit = metric_histogram("mailfleet_loop_commit_seconds",
                                    "Produce and commit time per batch", labels,
                                    metrics_latency_buckets, metrics_latency_buckets_n);
    wl->m.ok = outcome(labels, "ok");
    wl->m.retry = outcome(labels, "retry");
    wl->m.dead = outcome(labels, "dead");
    wl->m.env = outcome(labels, "environment");
    snprintf(l2, sizeof l2, "%s,op=\"poll\"", labels);
    wl->m.poll_err = metric_counter("mailfleet_loop_errors_total", "Bus errors in the loop", l2);
    snprintf(l2, sizeof l2, "%s,op=\"commit\"", labels);
    wl->m.commit_err = metric_counter("mailfleet_loop_errors_total", "Bus errors in the loop", l2);
    wl->m.rebalanced = metric_counter("mailfleet_loop_rebalanced_batches_total",
                                      "Batches dropped because the group rebalanced meanwhile",
                                      labels);
    wl->m.ready = metric_gauge("mailfleet_loop_ready",
                               "0 while an environment error holds the loop back, else 1", labels);
    metric_set(wl->m.ready, 1);
    return wl;
}

void worker_loop_free(struct worker_loop *wl)
{
    if (!wl)
        return;
    outputs_truncate(&wl->out, 0);
    free(wl->out.recs);
    free(wl->recs);
    for (size_t i = 0; i < wl->n_retries; i++)
        free(wl->retries[i].topic);
    free(wl->retries);
    pthread_mutex_destroy(&wl->why_lock);
    free(wl);
}

int worker_loop_failed(const struct worker_loop *wl)
{
    return wl->failed;
}

int worker_loop_ready(const struct worker_loop *wl)
{
    return atomic_load(&((struct worker_loop *)wl)->ready);
}

int worker_loop_ready_check(void *opaque, char *why, size_t whylen)
{
    struct worker_loop *wl = opaque;
    if (atomic_load(&wl->ready))
        return 1;
    pthread_mutex_lock(&wl->why_lock);
    snprintf(why, whylen, "%s loop held back: %s", wl->o.worker, wl->why);
    pthread_mutex_unlock(&wl->why_lock);
    return 0;
}

int64_t worker_loop_stuck_ms(const struct config *cfg)
{
    int64_t ms = config_duration_ms(cfg, "mailfleet", "stuck_after");
    return ms > 0 ? ms : WL_STUCK_MS;
}

size_t worker_loop_batch_max(const struct config *cfg, const char *section)
{
    int64_t n = section && config_isset(cfg, section, "batch_max")
                    ? config_int(cfg, section, "batch_max")
                    : config_int(cfg, "mailfleet", "batch_max");
    return n < 1 ? 1 : n > 4096 ? 4096 : (size_t)n;
}

/* ---- a batch ---- */

static int stopping(const struct worker_loop *wl)
{
    return wl->failed || (wl->o.stop && *wl->o.stop);
}

/* Rewinds each partition to its first record in recs[from..n). */
static void seek_back(struct worker_loop *wl, size_t from, size_t n)
{
    for (size_t i = from; i < n; i++) {
        int first = 1;
        for (size_t k = from; k < i && first; k++)
            first = !(wl->recs[k]->partition == wl->recs[i]->partition &&
                      strcmp(wl->recs[k]->topic, wl->recs[i]->topic) == 0);
        if (first && bus_consumer_seek(wl->c, wl->recs[i]) != 0)
            log_kv(LOG_ERROR, "cannot seek back; records may be skipped until a restart", "group",
                   wl->o.group, "topic", wl->recs[i]->topic, NULL);
    }
}

/* The environment waits longer each time, up to WL_BACKOFF_MAX_MS, and the
 * loop is not ready meanwhile. */
static void set_ready(struct worker_loop *wl, int ready)
{
    atomic_store(&wl->ready, ready);
    metric_set(wl->m.ready, ready);
}

/* Not ready, and why (read by worker_loop_ready_check from HTTP threads). */
static void set_held_back(struct worker_loop *wl, const char *why)
{
    pthread_mutex_lock(&wl->why_lock);
    snprintf(wl->why, sizeof wl->why, "%s", why && *why ? why : "see the log");
    pthread_mutex_unlock(&wl->why_lock);
    set_ready(wl, 0);
}

/* A sleep inside a step waits for a peer or a due time, which is not being
 * stuck: it counts as progress before and after. */
static void idle_sleep(struct worker_loop *wl, int64_t ms)
{
    worker_loop_progress(wl);
    sleep_unless_stopped(ms, wl->o.stop);
    worker_loop_progress(wl);
}

static void environment_backoff(struct worker_loop *wl, int64_t ms, const char *why)
{
    set_held_back(wl, why);
    if (ms <= 0) {
        ms = wl->env_backoff_ms ? wl->env_backoff_ms : wl->o.backoff_ms;
        wl->env_backoff_ms = ms * 2 > wl->o.backoff_max_ms ? wl->o.backoff_max_ms : ms * 2;
    }
    idle_sleep(wl, ms);
}

static struct retry_entry *retry_find(struct worker_loop *wl, const struct bus_record *r)
{
    for (size_t i = 0; i < wl->n_retries; i++)
        if (wl->retries[i].partition == r->partition && strcmp(wl->retries[i].topic, r->topic) == 0)
            return &wl->retries[i];
    return NULL;
}

/* Counts consecutive retries of r at the head of its partition; returns
 * this attempt's number. */
static int note_attempt(struct worker_loop *wl, const struct bus_record *r)
{
    struct retry_entry *e = retry_find(wl, r);
    if (e && e->offset == r->offset)
        return ++e->attempts;
    if (!e) {
        if (wl->n_retries == wl->cap_retries) {
            wl->cap_retries = wl->cap_retries ? wl->cap_retries * 2 : 8;
            wl->retries = xrealloc(wl->retries, wl->cap_retries * sizeof(*wl->retries));
        }
        e = &wl->retries[wl->n_retries++];
        e->topic = xstrdup(r->topic);
        e->partition = r->partition;
    }
    e->offset = r->offset;
    return e->attempts = 1;
}

/* Attempts r has made so far (0 if it is not the one retrying). */
static int retried(struct worker_loop *wl, const struct bus_record *r)
{
    const struct retry_entry *e = retry_find(wl, r);
    return e && e->offset == r->offset ? e->attempts : 0;
}

/* r is done (handled or dead-lettered): its partition starts afresh. */
static void retry_clear(struct worker_loop *wl, const struct bus_record *r)
{
    struct retry_entry *e = retry_find(wl, r);
    if (!e || e->offset != r->offset)
        return;
    free(e->topic);
    *e = wl->retries[--wl->n_retries];
}

static void dead_letter(struct worker_loop *wl, const struct bus_record *r, const struct wl_result *res,
                        int attempts)
{
    metric_inc(wl->m.dead);
    if (!wl->o.dlq_topic) {
        log_kv(LOG_ERROR, "record dropped (this worker has no DLQ)", "group", wl->o.group, "stage",
               res->stage, "error", res->reason, NULL);
        return;
    }
    log_kv(LOG_ERROR, "record to the DLQ", "group", wl->o.group, "topic", wl->o.dlq_topic, "stage",
           res->stage, "class", res->cls, "error", res->reason, NULL);
    struct dlq_record d;
    dlq_record_init(&d, r, wl->o.dlq_topic, res->stage, res->cls, res->reason,
                    res->attempts > 0 ? res->attempts : attempts);
    wl_output(&wl->out, &d.rec);
    dlq_record_release(&d);
}

/* Polls the batch into wl->recs; returns its size (0: nothing) or <0. */
static int poll_batch(struct worker_loop *wl)
{
    const struct wl_handler *h = wl->o.handler;
    struct bus_record *r = NULL;
    int rc = bus_consumer_poll(wl->c, &r, wl->o.poll_timeout_ms);
    if (rc <= 0)
        return rc;
    if (h->not_before) {
        int64_t wait = h->not_before(wl->o.opaque, r) - now_ms();
        if (wait > 0) {
            idle_sleep(wl, wait < WL_NOT_DUE_WAIT_MS ? wait : WL_NOT_DUE_WAIT_MS);
            if (stopping(wl) || h->not_before(wl->o.opaque, r) > now_ms()) {
                bus_consumer_seek(wl->c, r);
                bus_record_free(r);
                return 0;
            }
        }
    }
    size_t n = 0, max = wl->isolate ? 1 : wl->o.batch_max;
    if (wl->isolate)
        wl->isolate--;
    wl->recs[n++] = r;
    while (n < max) {
        rc = bus_consumer_poll(wl->c, &r, 0);
        if (rc < 0) {
            metric_inc(wl->m.poll_err);
            log_kv(LOG_WARN, "poll failed mid-batch; handling what came", "group", wl->o.group, NULL);
        }
        if (rc != 1)
            break;
        /* A batch holds one assignment: a record from after a rebalance
         * starts the next batch (the ones before may be refused as stale,
         * and a stale batch is dropped without a seek). */
        if (r->epoch != wl->recs[0]->epoch ||
            (h->not_before && h->not_before(wl->o.opaque, r) > now_ms())) {
            bus_consumer_seek(wl->c, r);
            bus_record_free(r);
            break;
        }
        wl->recs[n++] = r;
    }
    return (int)n;
}

/* Handles recs[0..n); returns how many lead records are settled (handled
 * or dead-lettered): n, or the index of the record that asked for a retry,
 * whose result is left in *cut_res. */
static size_t handle_batch(struct worker_loop *wl, size_t n, struct wl_result *cut_res, int *attempt)
{
    const struct wl_handler *h = wl->o.handler;
    for (size_t i = 0; i < n; i++) {
        const struct bus_record *r = wl->recs[i];
        struct wl_result res;
        memset(&res, 0, sizeof res);
        size_t mark = wl->out.n;
        h->handle(wl->o.opaque, r, i, &wl->out, &res);
        worker_loop_progress(wl);
        if (res.kind == WL_OK) {
            metric_inc(wl->m.ok);
            retry_clear(wl, r);
            continue;
        }
        outputs_truncate(&wl->out, mark);
        if (res.kind == WL_RETRY && res.cause == WL_CAUSE_ENVIRONMENT) {
            metric_inc(wl->m.env);
            *cut_res = res;
            *attempt = 0;
            return i;
        }
        int a = res.kind == WL_RETRY ? note_attempt(wl, r) : retried(wl, r) + 1;
        if (res.kind == WL_RETRY && a < wl->o.max_attempts) {
            metric_inc(wl->m.retry);
            *cut_res = res;
            *attempt = a;
            return i;
        }
        if (res.kind == WL_RETRY) {
            size_t len = strlen(res.reason);
            snprintf(res.reason + len, sizeof res.reason - len, " (gave up after %d attempts)", a);
        }
        dead_letter(wl, r, &res, a);
        retry_clear(wl, r);
    }
    return n;
}

/* Outputs and the offsets of recs[0..upto), together. */
static int commit(struct worker_loop *wl, size_t upto, char *err, size_t errlen)
{
    const struct bus_record *const *ins = (const struct bus_record *const *)wl->recs;
    const struct wl_handler *h = wl->o.handler;
    if (upto == 0 && wl->out.n == 0)
        return 0;
    if (upto > 0 && h->before_commit && h->before_commit(wl->o.opaque, err, errlen) != 0)
        return -EIO;
    if (!wl->o.output_bus)
        return bus_produce_and_commit_batch(wl->c, ins, upto, wl->out.recs, wl->out.n, err, errlen);
    int rc = bus_produce(wl->o.output_bus, wl->out.recs, wl->out.n, wl->o.output_timeout_ms, err, errlen);
    if (rc == 0 && upto > 0)
        rc = bus_produce_and_commit_batch(wl->c, ins, upto, NULL, 0, err, errlen);
    return rc;
}

/* The broker refused an output as too large (-EMSGSIZE).  A batch is redone
 * one record at a time to find whose output it was; that record is then
 * retried like a record error and, at max_attempts, dead-lettered with the
 * broker's reason instead of its outputs.  Returns the records committed. */
static size_t refused_output(struct worker_loop *wl, size_t n, const char *why)
{
    char err[512] = "";
    if (n > 1) {
        log_kv(LOG_WARN, "an output was refused as too large; redoing the batch one by one",
               "group", wl->o.group, "error", why, NULL);
        wl->isolate = n;
        seek_back(wl, 0, n);
        return 0;
    }
    const struct bus_record *r = wl->recs[0];
    if (!wl->o.dlq_topic) {
        /* Nowhere to dead-letter it (ingest's forwarder): held, not
         * dropped, until someone raises the broker's limit. */
        log_kv(LOG_ERROR, "an output is refused as too large and there is no DLQ; holding it",
               "group", wl->o.group, "error", why, NULL);
        seek_back(wl, 0, 1);
        environment_backoff(wl, 0, why);
        return 0;
    }
    if (wl->refused.partition != r->partition || wl->refused.offset != r->offset ||
        strcmp(wl->refused.topic, r->topic) != 0) {
        snprintf(wl->refused.topic, sizeof wl->refused.topic, "%s", r->topic);
        wl->refused.partition = r->partition;
        wl->refused.offset = r->offset;
        wl->refused.attempts = 0;
    }
    int a = ++wl->refused.attempts;
    if (a < wl->o.max_attempts) {
        metric_inc(wl->m.retry);
        log_kv(LOG_WARN, "will retry", "group", wl->o.group, "stage", "bus.produce", "error", why,
               "cause", "record", NULL);
        seek_back(wl, 0, 1);
        idle_sleep(wl, wl->o.backoff_ms);
        return 0;
    }
    struct wl_result res;
    memset(&res, 0, sizeof res);
    wl_result_set(&res, WL_DEAD, WL_CAUSE_RECORD, "bus.produce", "bus", "%s (gave up after %d attempts)",
                  why, a);
    dead_letter(wl, r, &res, a);
    int rc = commit(wl, 1, err, sizeof err);
    outputs_truncate(&wl->out, 0);
    if (rc < 0) {
        metric_inc(wl->m.commit_err);
        log_kv(LOG_ERROR, "cannot commit the dead letter; it will be redone", "group", wl->o.group,
               "error", err, NULL);
        seek_back(wl, 0, 1);
        environment_backoff(wl, 0, err);
        return 0;
    }
    wl->refused.attempts = 0;
    return 1;
}

static int step(struct worker_loop *wl);

/* Marks the step (mono ms since it began, 0 between steps) for the
 * liveness check around the real work. */
int worker_loop_step(struct worker_loop *wl)
{
    int64_t now = mono_ms();
    atomic_store(&wl->progress_ms, now);
    atomic_store(&wl->step_since_ms, now);
    int rc = step(wl);
    atomic_store(&wl->step_since_ms, 0);
    return rc;
}

void worker_loop_progress(struct worker_loop *wl)
{
    atomic_store(&wl->progress_ms, mono_ms());
}

int worker_loop_live_check(void *opaque, char *why, size_t whylen)
{
    struct worker_loop *wl = opaque;
    if (!atomic_load(&wl->step_since_ms))
        return 1;   /* between steps */
    int64_t quiet = mono_ms() - atomic_load(&wl->progress_ms);
    if (quiet <= wl->o.stuck_ms)
        return 1;
    snprintf(why, whylen, "group %s: no progress in one batch for %lld s (stuck_after %lld s)", wl->o.group,
             (long long)(quiet / 1000), (long long)(wl->o.stuck_ms / 1000));
    return 0;
}

static int step(struct worker_loop *wl)
{
    const struct wl_handler *h = wl->o.handler;
    char err[512] = "";
    if (stopping(wl))
        return 0;
    int got = poll_batch(wl);
    if (got < 0) {
        metric_inc(wl->m.poll_err);
        log_kv(LOG_WARN, "poll failed", "group", wl->o.group, NULL);
        environment_backoff(wl, 0, "poll failed");
        return got;
    }
    if (got == 0)
        return 0;
    size_t n = (size_t)got;
    metric_observe(wl->m.batch, (double)n);

    int64_t t0 = mono_us();
    int rc = 0;
    size_t upto = 0;
    struct wl_result cut;
    int attempt = 0;
    if (h->batch_begin && h->batch_begin(wl->o.opaque, wl->recs, n) != 0) {
        seek_back(wl, 0, n);   /* abandoned: all of it comes again */
        goto out;
    }
    upto = handle_batch(wl, n, &cut, &attempt);
    metric_observe(wl->m.handler, (double)(mono_us() - t0) / 1e6);

    int64_t t1 = mono_us();
    rc = commit(wl, upto, err, sizeof err);
    metric_observe(wl->m.commit, (double)(mono_us() - t1) / 1e6);
    outputs_truncate(&wl->out, 0);
    if (rc == -ESTALE) {
        /* Nothing to seek: the rebalance put each partition back at its
         * committed offset, here or in another member. */
        metric_inc(wl->m.rebalanced);
        log_kv(LOG_INFO, "batch dropped: the group rebalanced while it was read", "group",
               wl->o.group, NULL);
        upto = 0;
        rc = 0;
        goto out;
    }
    if (rc == -EMSGSIZE) {
        upto = refused_output(wl, n, err);
        rc = 0;
        goto out;
    }
    if (rc == -ENOTRECOVERABLE) {
        metric_inc(wl->m.commit_err);
        log_kv(LOG_ERROR, "the bus failed for good; the worker stops", "group", wl->o.group,
               "error", err, NULL);
        set_held_back(wl, err);
        wl->failed = 1;
        upto = 0;
        goto out;
    }
    if (rc < 0) {
        metric_inc(wl->m.commit_err);
        log_kv(LOG_ERROR, "cannot commit the batch; it will be redone", "group", wl->o.group, "error",
               err, NULL);
        seek_back(wl, 0, n);
        upto = 0;
        environment_backoff(wl, 0, err);
        goto out;
    }
    if (upto == n) {
        set_ready(wl, 1);
        wl->env_backoff_ms = 0;
        goto out;
    }
    seek_back(wl, upto, n);
    log_kv(LOG_WARN, "will retry", "group", wl->o.group, "stage", cut.stage, "error", cut.reason,
           "cause", cut.cause == WL_CAUSE_ENVIRONMENT ? "environment" : "record", NULL);
    if (cut.cause == WL_CAUSE_ENVIRONMENT) {
        environment_backoff(wl, cut.retry_ms, cut.reason);
    } else {
        int64_t ms = cut.retry_ms;
        if (ms <= 0) {
            ms = wl->o.backoff_ms;
            for (int i = 1; i < attempt && ms < wl->o.backoff_max_ms; i++)
                ms *= 2;
        }
        idle_sleep(wl, ms > wl->o.backoff_max_ms ? wl->o.backoff_max_ms : ms);
    }
out:
    if (h->batch_end)
        h->batch_end(wl->o.opaque, upto);
    for (size_t i = 0; i < n; i++) {
        bus_record_free(wl->recs[i]);
        wl->recs[i] = NULL;
    }
    return rc < 0 ? rc : (int)upto;
}

int worker_loop_run(struct worker_loop *wl)
{
    while (!stopping(wl))
        worker_loop_step(wl);
    return wl->failed ? -1 : 0;
}
