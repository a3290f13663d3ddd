/* worker_loop — the one consumer loop of every consume-produce worker.
 *
 * One step = one batch: poll up to batch_max records (the first waits up to
 * poll_timeout_ms, the rest only take what is already there, so a quiet
 * system runs batches of one and a backlog runs full ones), hand each to the
 * worker's handler, then produce every output of the batch and commit its
 * offsets together (bus_produce_and_commit_batch: one LMDB transaction, or
 * one Kafka transaction when the bus has a transactional_id).
 *
 * Results (struct wl_result), decided by the handler, acted on here:
 *   WL_OK     the record's outputs (wl_output) go with the batch.
 *   WL_DEAD   its outputs are dropped; its dead-letter copy (dlq_record.h)
 *             goes to dlq_topic in the same commit; the batch goes on.
 *   WL_RETRY  cause WL_CAUSE_RECORD: the batch is cut there — the records
 *             before it commit with their outputs, this one and the rest are
 *             sought back and come again after a back-off (retry_ms, or
 *             backoff_ms doubled per attempt).  At max_attempts it becomes
 *             WL_DEAD.  Cause WL_CAUSE_ENVIRONMENT (disk full, store or broker
 *             down): the same cut, but retried for ever, never dead-lettered,
 *             and worker_loop_ready() says 0 until a batch goes through.
 * A failed commit is an environment error for the whole batch: nothing of
 * it is committed and every record comes again, so handlers' side effects
 * must be idempotent (keys derived from the input's id).  A batch read
 * across a Kafka rebalance (-ESTALE) is dropped without a back-off: its
 * partitions restart from the group's committed offsets, here or in another
 * member.  An output the broker refuses as too large (-EMSGSIZE) is traced
 * to its record by redoing the batch one record at a time; that record is
 * retried and then dead-lettered with the broker's reason.  A bus that
 * failed for good (-ENOTRECOVERABLE: a fenced Kafka
 * producer) ends the loop: worker_loop_failed() says so, and the worker
 * returns an error so the process exits and is restarted.
 *
 * Stop: a step that has polled finishes its batch and commits it; back-offs
 * end early when *stop is set; worker_loop_run returns once *stop is seen.
 *
 * Metrics (labels worker="<worker>",group="<group>"):
 *   mailfleet_loop_batch_records            histogram of batch sizes
 *   mailfleet_loop_handler_seconds          handler time per batch
 *   mailfleet_loop_commit_seconds           produce + commit time per batch
 *   mailfleet_loop_records_total{outcome}   ok, retry, dead, environment
 *   mailfleet_loop_errors_total{op}         poll, commit
 *   mailfleet_loop_rebalanced_batches_total batches dropped by a rebalance
 *   mailfleet_loop_ready                    0 while an environment error holds it
 *
 * Threads: a loop belongs to the thread that steps it. */
#ifndef MF_WORKER_LOOP_H
#define MF_WORKER_LOOP_H
#include "stop.h"
#include <stddef.h>
#include <stdint.h>
#include "bus.h"

struct config;
struct worker_loop;
struct wl_batch;   /* the outputs of the batch being handled */

enum wl_kind { WL_OK, WL_RETRY, WL_DEAD };
enum wl_cause { WL_CAUSE_RECORD, WL_CAUSE_ENVIRONMENT };

/* What a handler fills in (the loop zeroes it first: kind WL_OK). */
struct wl_result {
    enum wl_kind kind;
    enum wl_cause cause;    /* WL_RETRY only */
    int64_t retry_ms;       /* WL_RETRY: wait this long; 0 = the loop's back-off */
    int attempts;           /* WL_DEAD: mf.attempts to write; 0 = the loop's count */
    char stage[48];         /* where it failed, e.g. "transform.parse" (mf.error.stage) */
    char cls[16];           /* parse | store | bus | internal (mf.error.class) */
    char reason[512];       /* one line for logs and mf.error.message */
};

/* Sets kind, cause, stage, cls and a printf-style reason in one call. */
void wl_result_set(struct wl_result *res, enum wl_kind kind, enum wl_cause cause, const char *stage,
                   const char *cls, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

struct wl_handler {
    /* Optional: called once with every record of the batch before any
     * handle(), for work done for the batch as a whole (send delivers all
     * recipients of a batch in parallel here).  Non-zero abandons the batch:
     * nothing is committed and every record comes again (send: stopping
     * with transfers not run). */
    int (*batch_begin)(void *opaque, struct bus_record *const *recs, size_t n);
    /* Required: the result for recs[index], in order.  Outputs added with
     * wl_output count only if the result is WL_OK. */
    void (*handle)(void *opaque, const struct bus_record *r, size_t index, struct wl_batch *out,
                   struct wl_result *res);
    /* Optional: after the handlers, before the outputs and offsets of a
     * batch that commits at least one record: make what the handlers wrote
     * elsewhere durable, once per batch (transform syncs its stores here).
     * Non-zero, with err filled, is an environment error: nothing of the
     * batch is committed and all of it comes again. */
    int (*before_commit)(void *opaque, char *err, size_t errlen);
    /* Optional: after the batch is committed, cut or abandoned, with how
     * many of its lead records were committed; frees what batch_begin kept. */
    void (*batch_end)(void *opaque, size_t committed);
    /* Optional: wall-clock ms before which r must not be handled (send's
     * retry tiers).  The batch ends before such a record; a batch whose
     * first record is not due waits up to a second and then comes back
     * empty, so a long wait never outlasts Kafka's max.poll.interval.ms. */
    int64_t (*not_before)(void *opaque, const struct bus_record *r);
};

struct worker_loop_options {
    const char *worker;         /* metrics label and logs, e.g. "transform" */
    const char *group;          /* metrics label: the consumer group */
    const char *dlq_topic;      /* TOPIC_INBOUND_DLQ, ...; NULL: WL_DEAD is logged and skipped */
    size_t batch_max;           /* records per batch, >= 1 (worker_loop_batch_max) */
    int max_attempts;           /* WL_CAUSE_RECORD retries before WL_DEAD; < 1 = 1 */
    int64_t backoff_ms;         /* first back-off; doubles up to backoff_max_ms */
    int64_t backoff_max_ms;     /* 0 = 30 s */
    int poll_timeout_ms;        /* how long a step waits for its first record */
    stop_flag_t *stop;
    const struct wl_handler *handler;
    void *opaque;               /* handed to every handler call */
    /* Outputs go to this bus instead of the consumer's (ingest's spool
     * forwarder: local spool in, real bus out).  Two buses share no
     * transaction: outputs are produced and durable first, then the
     * offsets committed — at least once, never lost. */
    struct bus *output_bus;
    int output_timeout_ms;      /* output_bus only; 0 = BUS_BATCH_TIMEOUT_MS */
    int64_t stuck_ms;           /* worker_loop_live_check: a step longer than this is stuck
                                   (worker_loop_stuck_ms; 0 = 10 min) */
};

/* The loop reads c (which stays the caller's; free it after the loop). */
struct worker_loop *worker_loop_new(struct bus_consumer *c, const struct worker_loop_options *o);
void worker_loop_free(struct worker_loop *wl);   /* accepts NULL */

/* One batch.  Returns the records it committed (handled or dead-lettered),
 * 0 when there was nothing to do (or stopping, or failed), <0 after a poll
 * or commit error (it has backed off already). */
int worker_loop_step(struct worker_loop *wl);
/* Steps until *stop or a failure; 0, or -1 when worker_loop_failed(). */
int worker_loop_run(struct worker_loop *wl);
/* 1 once the bus failed for good: stop and exit non-zero. */
int worker_loop_failed(const struct worker_loop *wl);
/* 0 while an environment error holds the loop back (for /readyz). */
int worker_loop_ready(const struct worker_loop *wl);
/* The same as a readiness check (http_ready_check) on a struct worker_loop *,
 * with the error that holds it back in why. */
int worker_loop_ready_check(void *wl, char *why, size_t whylen);
/* A liveness check (http_live_add) on a struct worker_loop *: 0 while a
 * step (a batch: poll, handle, commit) has made no progress for longer than
 * stuck_ms — a handler blocked for good.  Progress: each record handled,
 * worker_loop_progress, and the loop's own sleeps (back-offs wait for a
 * peer, which is readiness, not liveness). */
int worker_loop_live_check(void *wl, char *why, size_t whylen);
/* A handler that works long inside one call (send's batch_begin delivers a
 * whole batch) says it is moving; any thread may call it. */
void worker_loop_progress(struct worker_loop *wl);
/* [mailfleet] stuck_after (10 min when 0 or less). */
int64_t worker_loop_stuck_ms(const struct config *cfg);

/* Copies r (topic, key, value, headers) into the batch's outputs; the
 * loop frees the copy after the commit. */
void wl_output(struct wl_batch *out, const struct bus_record *r);

/* The batch size for a worker: [<section>] batch_max if that section
 * defines and sets it, else [mailfleet] batch_max; clamped to 1..4096. */
size_t worker_loop_batch_max(const struct config *cfg, const char *section);

#endif
