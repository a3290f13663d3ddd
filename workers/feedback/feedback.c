/* feedback — turns reports about sent mail into suppression-list changes.
 *
 * Consumes: mailfleet.feedback (group "feedback": DSN and ARF mail and mailto
 * unsubscribes from ingest, SNS notifications and one-click unsubscribes from
 * our own HTTP side) and mailfleet.events (group "feedback-events": send's
 * synchronous bounces).  Produces: mailfleet.suppression (compacted) and
 * mailfleet.events (Bounce, Complaint, Unsubscribe; header mf.producer =
 * feedback so we never re-read our own), mailfleet.fallback for reports that
 * need a human.  Serves on the public HTTP server: /u/<token> (RFC 8058),
 * /sns, and the SES v2-shaped suppression API behind a bearer token.
 *
 * Guarantees: only recipients that a verified token names are suppressed — a
 * forged bounce or complaint changes nothing; duplicate and out-of-order input
 * is idempotent (suppression is last-write-wins per key; transient counts and
 * events are deduplicated on message + recipient + status).  Offsets are
 * committed after outputs are durable.
 * Security: GET /u/ never unsubscribes; SNS certificate URLs are never
 * fetched; the API compares its token in constant time. */
#include "feedback.h"
#include "feedback_int.h"

#include "bus.h"
#include "common_config.h"
#include "http.h"
#include "kv.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "strbuf.h"
#include "suppression_copy.h"
#include "timeutil.h"
#include "tokens.h"
#include "topics.h"
#include "verp.h"
#include "worker_loop.h"

#include <gmime/gmime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const struct config_key feedback_config_keys[] = {
    { "feedback", "metrics_listen", CONFIG_STR, "127.0.0.1:9104", "metrics/health when run alone" },
    { "feedback", "public_listen", CONFIG_STR, "127.0.0.1:8025", "unsubscribe, SNS and API when run alone" },
    { "feedback", "api_token", CONFIG_SECRET, NULL,
      "bearer token of the suppression API (/v2/email/suppression/...); unset = API off" },
    { "feedback", "sns_topic_arns", CONFIG_LIST, NULL, "SNS topics allowed to post to /sns; unset = none" },
    { "feedback", "sns_cert_file", CONFIG_STR, NULL,
      "PEM certificate that signs SNS messages (from the SigningCertURL, fetched by the operator)" },
    { "feedback", "sns_allow_unsigned", CONFIG_BOOL, "false",
      "accept SNS posts without checking signatures (tests only: anyone who knows the topic ARN "
      "could suppress any address)" },
    { "feedback", "sns_allow_sha1", CONFIG_BOOL, "false",
      "accept SignatureVersion 1 (SHA1withRSA); SNS signs with SHA256 (version 2) when the topic asks" },
    { "feedback", "sns_max_age", CONFIG_DURATION, "1h",
      "refuse signed SNS messages whose Timestamp is older (replays); covers SNS's delivery retries" },
    { "feedback", "transient_threshold", CONFIG_INT, "3", "suppress after this many transient bounces" },
    { "feedback", "transient_window", CONFIG_DURATION, "7d", "... within this window" },
    { "feedback", "suppress_on_complaint", CONFIG_BOOL, "true", "complaints (except not-spam) suppress" },
    CONFIG_KEYS_END
};

static int ready(void *opaque, char *why, size_t len)
{
    struct feedback *f = opaque;
    if (!bus_ready(f->bus, why, len))
        return 0;
    if ((f->floop && !worker_loop_ready_check(f->floop, why, len)) ||
        (f->eloop && !worker_loop_ready_check(f->eloop, why, len)))
        return 0;
    if (!suppression_copy_ready(f->copy)) {
        snprintf(why, len, "suppression copy is catching up");
        return 0;
    }
    return 1;
}

/* Alive while neither loop is stuck in one batch. */
static int alive(void *opaque, char *why, size_t len)
{
    struct feedback *f = opaque;
    return (!f->floop || worker_loop_live_check(f->floop, why, len)) &&
           (!f->eloop || worker_loop_live_check(f->eloop, why, len));
}

/* ---- loop ------------------------------------------------------------- */

/* Both consumers run on the common loop.  The handlers add their outputs
 * (suppressions, events, reviews) to the batch and dedupe through the
 * "seen" state, so they report only OK or "try again": store trouble is an
 * environment error, retried after half a second for as long as it lasts.
 * Malformed records are logged and skipped by the handlers themselves. */
/* Runs one handler with the batch's outputs at hand; a record it cannot
 * apply is retried, its held duplicate keys dropped with its outputs. */
static void apply(struct feedback *f, int (*fn)(struct feedback *, const struct bus_record *),
                  const struct bus_record *r, size_t index, struct wl_batch *out, struct wl_result *res,
                  const char *stage, const char *what)
{
    f->out = out;
    f->out_index = index;
    int rc = fn(f, r);
    f->out = NULL;
    if (rc != 0) {
        feedback_records_forget(f, index);
        wl_result_set(res, WL_RETRY, WL_CAUSE_ENVIRONMENT, stage, "store", "cannot apply %s (the store)", what);
        res->retry_ms = 500;
    }
}

static void on_feedback(void *opaque, const struct bus_record *r, size_t index, struct wl_batch *out,
                        struct wl_result *res)
{
    apply(opaque, feedback_records_handle, r, index, out, res, "feedback.apply", "a feedback record");
}

static void on_event(void *opaque, const struct bus_record *r, size_t index, struct wl_batch *out,
                     struct wl_result *res)
{
    apply(opaque, feedback_records_handle_event, r, index, out, res, "feedback.event", "a bounce event");
}

static void on_batch_end(void *opaque, size_t committed)
{
    feedback_records_batch_end(opaque, committed);
}

static const struct wl_handler feedback_handler = { .handle = on_feedback, .batch_end = on_batch_end };
static const struct wl_handler event_handler = { .handle = on_event, .batch_end = on_batch_end };

/* Settings and metrics: nothing here fails. */
static void feedback_configure(struct feedback *f, const struct config *cfg)
{
    f->cfg = cfg;
    f->transient_threshold = (long)config_int(cfg, "feedback", "transient_threshold");
    f->transient_window_ms = config_duration_ms(cfg, "feedback", "transient_window");
    f->api_token = config_secret(cfg, "feedback", "api_token");
    f->n_arns = config_list(cfg, "feedback", "sns_topic_arns", &f->arns);
    f->cert_file = config_str(cfg, "feedback", "sns_cert_file");
    f->m_bounce = metric_counter("mailfleet_feedback_bounces_total", "Bounces applied.", NULL);
    f->m_complaint = metric_counter("mailfleet_feedback_complaints_total", "Complaints applied.", NULL);
    f->m_unsub = metric_counter("mailfleet_feedback_unsubscribes_total", "Unsubscribes applied.", NULL);
    f->m_forged = metric_counter("mailfleet_feedback_unverified_total",
                                 "Reports or unsubscribes without a valid token (ignored).", NULL);
    f->m_review = metric_counter("mailfleet_feedback_review_total", "Reports sent to fallback for review.", NULL);
    f->m_suppressed = metric_counter("mailfleet_feedback_suppressions_total", "Suppressions published.", NULL);
    f->m_sns_rejected = metric_counter("mailfleet_feedback_sns_rejected_total", "SNS posts rejected.", NULL);
}

/* Tokens, the incoming store, the bus, the state dbs, the suppression copy
 * and both consumers.  0, or -1 after logging why; feedback_close frees
 * whatever was opened. */
static int feedback_open(struct feedback *f, struct worker_env *env)
{
    const struct config *cfg = env->cfg;
    char err[512], dir[1024];

    if (!(f->tokens = common_tokens(cfg, err, sizeof(err))) ||
        !(f->verp_keys = verp_keys_new(f->tokens)) ||
        !(f->incoming = common_store(cfg, "store_incoming", err, sizeof(err)))) {
        log_kv(LOG_ERROR, "cannot start feedback", "error", err, NULL);
        return -1;
    }
    char txn_id[320];
    common_transactional_id(cfg, "feedback", txn_id, sizeof txn_id);
    struct bus_options bo = { .client_id = "mailfleet-feedback", .transactional_id = txn_id };
    if (!(f->bus = common_bus(cfg, &bo, err, sizeof(err)))) {
        log_kv(LOG_ERROR, "cannot open the bus", "error", err, NULL);
        return -1;
    }
    snprintf(dir, sizeof(dir), "%s/feedback", config_str(cfg, "mailfleet", "state_dir"));
    if (!(f->transient = kv_open(dir, "transient", 0, err, sizeof(err))) ||
        !(f->seen = kv_open(dir, "seen", 0, err, sizeof(err)))) {
        log_kv(LOG_ERROR, "cannot open feedback state", "error", err, NULL);
        return -1;
    }
    snprintf(dir, sizeof(dir), "%s/feedback/suppression", config_str(cfg, "mailfleet", "state_dir"));
    /* the copy is rebuilt from the topic at each start: its group never
     * commits, and is per host so pods don't share one */
    char host[128] = "local", group[256];
    gethostname(host, sizeof(host) - 1);
    snprintf(group, sizeof(group), "feedback.suppression.%s", host);
    if (!(f->copy = suppression_copy_open(dir, err, sizeof(err))) ||
        suppression_copy_start(f->copy, f->bus, group, env->stop, err, sizeof(err)) != 0) {
        log_kv(LOG_ERROR, "cannot follow the suppression list", "error", err, NULL);
        return -1;
    }
    const char *ft[] = { TOPIC_FEEDBACK, NULL }, *et[] = { TOPIC_EVENTS, NULL };
    if (!(f->fc = bus_consumer_new(f->bus, GROUP_FEEDBACK, ft, 1, err, sizeof(err))) ||
        !(f->ec = bus_consumer_new(f->bus, GROUP_FEEDBACK_EVENTS, et, 1, err, sizeof(err)))) {
        log_kv(LOG_ERROR, "cannot consume", "error", err, NULL);
        return -1;
    }
    return 0;
}

/* The two loops, made before the readiness check that reads them. */
static void feedback_loops_new(struct feedback *f, struct worker_env *env)
{
    size_t batch_max = worker_loop_batch_max(env->cfg, NULL);
    struct worker_loop_options fo = {
        .worker = "feedback", .group = GROUP_FEEDBACK, .batch_max = batch_max, .backoff_ms = 500,
        .poll_timeout_ms = 0, .stop = env->stop, .handler = &feedback_handler, .opaque = f,
        .stuck_ms = worker_loop_stuck_ms(env->cfg),
    };
    struct worker_loop_options eo = fo;
    eo.group = GROUP_FEEDBACK_EVENTS;
    eo.handler = &event_handler;
    f->floop = worker_loop_new(f->fc, &fo);
    f->eloop = worker_loop_new(f->ec, &eo);
}

/* Until stopped: one thread, two topics, a batch of each in turn; the
 * dedupe and transient-count state is swept of expired keys hourly.  -1 when
 * a loop's bus failed for good. */
static int feedback_loop(struct feedback *f, struct worker_env *env)
{
    int64_t next_expire = mono_ms() + 60000;
    while (!*env->stop) {
        /* One thread, two topics: a batch of each in turn, a short nap
         * when neither had anything. */
        int busy = worker_loop_step(f->floop) != 0;
        busy |= worker_loop_step(f->eloop) != 0;
        if (worker_loop_failed(f->floop) || worker_loop_failed(f->eloop))
            return -1;
        if (mono_ms() > next_expire) {
            kv_expire(f->seen, now_ms());
            kv_expire(f->transient, now_ms());
            next_expire = mono_ms() + 3600000;
        }
        if (!busy)
            sleep_unless_stopped(20, env->stop);
    }
    return 0;
}

static void feedback_close(struct feedback *f, struct worker_env *env)
{
    /* no handler may run on f once it is freed */
    http_route_remove(env->public_http, "/u/", f);
    http_route_remove(env->public_http, "/sns", f);
    http_route_remove(env->public_http, "/v2/email/suppression/", f);
    http_ready_remove(env->http, "feedback", f);
    http_live_remove(env->http, "feedback", f);
    worker_loop_free(f->floop);
    worker_loop_free(f->eloop);
    bus_consumer_free(f->fc);
    bus_consumer_free(f->ec);
    suppression_copy_free(f->copy);
    kv_close(f->transient);
    kv_close(f->seen);
    for (size_t i = 0; i < f->n_seen; i++)
        free(f->seen_batch[i].key);
    free(f->seen_batch);
    store_close(f->incoming);
    tokens_free(f->tokens);
    verp_keys_free(f->verp_keys);
    bus_close(f->bus);
    config_list_free(f->arns, f->n_arns);
    free(f->api_token);
    free(f);
    log_kv(LOG_INFO, "feedback stopped", NULL);
}

static int feedback_run(struct worker_env *env)
{
    struct feedback *f = xcalloc(1, sizeof(*f));
    int rc = 1;

    feedback_configure(f, env->cfg);
    if (feedback_open(f, env) == 0) {
        http_route(env->public_http, "/u/", feedback_http_unsubscribe, f);
        http_route(env->public_http, "/sns", feedback_http_sns, f);
        http_route(env->public_http, "/v2/email/suppression/", feedback_api_serve, f);
        feedback_loops_new(f, env);
        http_ready_add(env->http, "feedback", ready, f);
        http_live_add(env->http, "feedback", alive, f);
        worker_started(env);
        log_kv(LOG_INFO, "feedback started", NULL);
        rc = feedback_loop(f, env) < 0;
    }
    feedback_close(f, env);
    return rc;
}

const struct worker_def feedback_worker = { "feedback", feedback_config_keys, feedback_run, 1 };
