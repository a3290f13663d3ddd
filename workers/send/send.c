/* send — delivers what transform announced on mailfleet.outbound.
 *
 * Consumes mailfleet.outbound and the retry tiers
 * mailfleet.outbound.retry.<delay> (one thread and consumer group each, so a
 * tier waiting for its head record's not_before never holds up the others).
 * Per record and recipient: a recipient already delivered (sent marker) is
 * not sent again; a suppressed one gets a Suppressed event; the rest go
 * through the transport (outbox / SMTP relay / SES) with a VERP return path,
 * optional one-click List-Unsubscribe headers and an optional DKIM signature.
 * Produces event.v1 records on mailfleet.events, retry records on the next
 * tier, and unhandleable records to mailfleet.outbound.dlq with error headers.
 * When the transport refuses our account rather than a recipient (SES
 * sending paused, quota, sender not verified: ses_errors.h), nobody bounces:
 * every lane stops sending until a back-off ends (send_hold.h), the records
 * wait where they are, and /readyz and mailfleet_send_transport_paused say
 * why.  An SES rejection that does not show the address is bad (sandbox,
 * content, size, bad request) is a Bounce Undetermined: feedback sends it to
 * review and suppresses nobody.
 *
 * Guarantees: a sent marker is written the moment the transport reports 2xx,
 * before any output is produced or the offset committed, so a redelivered
 * record never resends to a recipient who got it (a duplicate is possible
 * only if the process dies between the relay's 250 and that marker write,
 * or the machine dies before the batch's markers were flushed: see
 * sent_marks.h).
 * Offsets are committed only after every output of the batch is durable:
 * the common worker loop (worker_loop.h) polls, commits, seeks back and
 * dead-letters; send's batch_begin delivers every recipient of a batch in
 * parallel and handle() then reports each record's outcome.
 * The suppression copy is rebuilt from the start of mailfleet.suppression at
 * startup and nothing is sent until it has caught up.
 *
 * Security: recipients and the envelope sender pass address_normalize before
 * they reach an SMTP command or a header, so data never injects CR/LF; the
 * message bytes are sent as built (bare LF lines become CRLF, curl
 * dot-stuffs).  Never logs message bodies, passwords or keys.  Writes files
 * only under the outbox directory and state_dir. */
#include "send.h"
#include "send_int.h"
#include "address.h"
#include "base64.h"
#include "bus.h"
#include "common_config.h"
#include "config.h"
#include "dkim_signer.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "send_hold.h"
#include "store.h"
#include "strbuf.h"
#include "suppression_copy.h"
#include "timeutil.h"
#include "tokens.h"
#include "topics.h"
#include "transport.h"
#include "verp.h"
#include "worker_loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


const struct config_key send_config_keys[] = {
    { "send", "metrics_listen", CONFIG_STR, "127.0.0.1:9103", "metrics/health when run alone" },
    { "send", "transport", CONFIG_STR, "outbox:var/outbox",
      "outbox:<dir>, smtp://host:port, smtps://host:port or ses:<region>" },
    { "send", "group", CONFIG_STR, GROUP_SEND, "consumer group (tiers add .retry.<delay>)" },
    { "send", "retry_tiers", CONFIG_LIST, "1m,5m,30m,2h",
      "delays of the retry topics mailfleet.outbound.retry.<delay>, in order" },
    { "send", "max_retry_age", CONFIG_DURATION, "24h", "after this a deferred recipient bounces (Transient)" },
    { "send", "hold_backoff", CONFIG_DURATION, "30s",
      "wait after the transport refuses our account (SES sending paused, quota, sender not verified); "
      "doubles while it goes on" },
    { "send", "hold_backoff_max", CONFIG_DURATION, "10m", "longest wait between tries while refused" },
    { "send", "access_denied_max", CONFIG_DURATION, "1h",
      "a record SES denies access (AccessDenied) this long goes to the DLQ instead of holding on "
      "(an IAM condition can deny single recipients)" },
    { "send", "batch_max", CONFIG_INT, NULL,
      "records handled (and recipients sent in parallel) per batch; default [mailfleet] batch_max" },
    { "send", "connections", CONFIG_INT, "4", "parallel SMTP/SES connections per consuming thread" },
    { "send", "per_domain", CONFIG_INT, "4", "max transfers in flight per recipient domain" },
    { "send", "rate", CONFIG_INT, "0", "messages per second across the worker (0 = unlimited)" },
    { "send", "burst", CONFIG_INT, "50", "token bucket size for rate" },
    { "send", "timeout", CONFIG_DURATION, "60s", "per transfer" },
    { "send", "connect_timeout", CONFIG_DURATION, "10s", "per connection" },
    { "send", "smtp_starttls", CONFIG_STR, "required", "required, optional or off (smtp:// only)" },
    { "send", "smtp_user", CONFIG_STR, NULL, "AUTH user for the relay" },
    { "send", "smtp_password", CONFIG_SECRET, NULL, "AUTH password (or smtp_password_file)" },
    { "send", "smtp_helo", CONFIG_STR, "localhost", "EHLO name" },
    { "send", "tls_ca_file", CONFIG_STR, NULL, "CA bundle for the relay / SES endpoint" },
    { "send", "tls_verify", CONFIG_BOOL, "true", "verify the peer certificate" },
    { "send", "ses_endpoint", CONFIG_STR, NULL, "override https://email.<region>.amazonaws.com" },
    { "send", "ses_access_key", CONFIG_SECRET, NULL, "default: AWS_ACCESS_KEY_ID" },
    { "send", "ses_secret_key", CONFIG_SECRET, NULL, "default: AWS_SECRET_ACCESS_KEY" },
    { "send", "ses_session_token", CONFIG_SECRET, NULL, "default: AWS_SESSION_TOKEN" },
    { "send", "bounce_domain", CONFIG_STR, "iot.localhost", "VERP return path domain" },
    { "send", "bounce_prefix", CONFIG_STR, "bounce", "VERP local part: <prefix>+<token>" },
    { "send", "list_unsubscribe", CONFIG_BOOL, "false", "add one-click List-Unsubscribe headers per recipient" },
    { "send", "unsubscribe_url", CONFIG_STR, NULL, "base URL of /u/<token> (default [mailfleet] public_base_url)" },
    { "send", "unsubscribe_domain", CONFIG_STR, "iot.localhost", "domain of unsubscribe+<token>@" },
    { "send", "unsubscribe_ttl", CONFIG_DURATION, "90d", "lifetime of unsubscribe URL tokens" },
    { "send", "dkim_key_file", CONFIG_STR, NULL, "private key; DKIM signing is on when set" },
    { "send", "dkim_selector", CONFIG_STR, "mail", "DKIM selector" },
    { "send", "dkim_domain", CONFIG_STR, NULL, "DKIM d= domain" },
    { "send", "dkim_algorithm", CONFIG_STR, "rsa-sha256", "rsa-sha256 or ed25519-sha256" },
    { "send", "sent_marker_ttl", CONFIG_DURATION, "7d", "how long sent markers are kept" },
    { "send", "pause_file", CONFIG_STR, NULL, "flag file for `send pause` (default <state_dir>/send.paused)" },
    CONFIG_KEYS_END
};

/* ---- lanes ---- */

/* Readiness lives in a static, not in the worker's (stack) state: the HTTP
 * server can outlive send_run by a moment and must not touch freed memory. */
static atomic_int send_ready;

static int paused(struct sender *w)
{
    struct stat st;
    return stat(w->pause_file, &st) == 0;
}

static int stopping(struct sender *w) { return *w->stop != 0; }

static void *lane_main(void *arg)
{
    struct lane *l = arg;
    struct sender *w = l->w;
    char err[256];
    log_set_worker("send");
    while (!stopping(w) && !suppression_copy_ready(w->supp))
        sleep_unless_stopped(50, w->stop);
    atomic_store(&send_ready, 1);
    const char *topics[] = { l->topic, NULL };
    l->c = bus_consumer_new(w->bus, l->group, topics, 1, err, sizeof(err));
    if (!l->c) {
        log_kv(LOG_ERROR, "cannot consume", "topic", l->topic, "error", err, NULL);
        l->rc = 1;
        *w->stop = 1;
        return NULL;
    }
    struct worker_loop_options lo = {
        .worker = "send", .group = l->group, .dlq_topic = TOPIC_OUTBOUND_DLQ, .batch_max = w->batch_max,
        .max_attempts = 1, .backoff_ms = 1000, .poll_timeout_ms = 200, .stop = w->stop,
        .handler = &send_batch_handler, .opaque = l, .stuck_ms = worker_loop_stuck_ms(w->cfg),
    };
    l->loop = worker_loop_new(l->c, &lo);
    if (w->http) {
        http_ready_add(w->http, "send-loop", worker_loop_ready_check, l->loop);
        http_live_add(w->http, "send-loop", worker_loop_live_check, l->loop);
    }
    int64_t next_expire = mono_ms() + 60000;
    while (!stopping(w)) {
        /* Expired sent markers are invisible to lookups but still stored:
         * sweep them now and then (one lane is enough). */
        if (l->tier < 0 && mono_ms() >= next_expire) {
            sent_marks_expire(w->marks);
            next_expire = mono_ms() + 600000;
        }
        /* Gauges updated here rather than at scrape time: the worker's state
         * may be gone while the shared HTTP server still answers. */
        metric_set(w->m.rl_tokens, ratelimit_tokens(w->rl, mono_us()));
        metric_set(w->m.paused, paused(w) ? 1 : 0);
        if (paused(w)) {
            sleep_unless_stopped(200, w->stop);
            continue;
        }
        /* Another lane met a refusal of our account: no lane sends until
         * the hold's back-off ends (the records keep their place). */
        int64_t hold = send_hold_wait(w->hold, mono_ms());
        if (hold > 0) {
            sleep_unless_stopped(hold < 200 ? hold : 200, w->stop);
            continue;
        }
        worker_loop_step(l->loop);
        if (worker_loop_failed(l->loop)) {
            l->rc = 1;
            *w->stop = 1;
            break;
        }
    }
    if (w->http) {
        http_ready_remove(w->http, "send-loop", l->loop);
        http_live_remove(w->http, "send-loop", l->loop);
    }
    worker_loop_free(l->loop);
    l->loop = NULL;
    bus_consumer_free(l->c);
    l->c = NULL;
    return NULL;
}

/* ---- setup ---- */


static int ready_check(void *opaque, char *why, size_t whylen)
{
    if (!atomic_load(&send_ready)) {
        snprintf(why, whylen, "suppression copy catching up");
        return 0;
    }
    return 1;
}


static void metrics_init(struct sender *w)
{
    const char *h = "outbound recipients by result";
    w->m.delivered = metric_counter("mailfleet_send_messages_total", h, "result=\"delivered\"");
    w->m.deferred = metric_counter("mailfleet_send_messages_total", h, "result=\"deferred\"");
    w->m.bounced_perm = metric_counter("mailfleet_send_messages_total", h, "result=\"bounced_permanent\"");
    w->m.bounced_trans = metric_counter("mailfleet_send_messages_total", h, "result=\"bounced_transient\"");
    w->m.bounced_undetermined =
        metric_counter("mailfleet_send_messages_total", h, "result=\"bounced_undetermined\"");
    w->m.suppressed_res = metric_counter("mailfleet_send_messages_total", h, "result=\"suppressed\"");
    w->m.dead = metric_counter("mailfleet_send_messages_total", h, "result=\"dead_letter\"");
    w->m.suppressed = metric_counter("mailfleet_send_suppressed_total", "recipients skipped as suppressed", NULL);
    w->m.attempt_seconds = metric_histogram("mailfleet_send_attempt_seconds", "one delivery attempt", NULL,
                                            metrics_latency_buckets, metrics_latency_buckets_n);
    w->m.rl_tokens = metric_gauge("mailfleet_send_ratelimit_tokens", "tokens in the rate limiter bucket", NULL);
    w->m.rl_rate = metric_gauge("mailfleet_send_ratelimit_rate", "rate limit, messages per second (0 = none)", NULL);
    w->m.rl_burst = metric_gauge("mailfleet_send_ratelimit_burst", "rate limiter bucket size", NULL);
    w->m.paused = metric_gauge("mailfleet_send_paused", "1 while `mailfleet send pause` is in effect", NULL);
    metric_set(w->m.rl_rate, ratelimit_rate(w->rl));
    metric_set(w->m.rl_burst, ratelimit_burst(w->rl));
}

static void sender_free(struct sender *w)
{
    suppression_copy_free(w->supp);
    sent_marks_close(w->marks);
    bus_close(w->bus);
    ratelimit_free(w->rl);
    send_hold_free(w->hold);
    dkim_signer_free(w->dkim);
    tokens_free(w->tokens);
    verp_keys_free(w->verp_keys);
    free(w->pause_file);
    free(w->transport_uri);
    free(w->smtp_password);
    free(w->ses_access);
    free(w->ses_secret);
    free(w->ses_token);
    config_list_free(w->tiers, w->n_tiers);
    free(w->tier_ms);
}

/* The VERP and unsubscribe domains end up in MAIL FROM and headers: check
 * them like data. */
static int sender_check_domains(const struct config *cfg, char *err, size_t errlen)
{
    char addr_probe[ADDRESS_BUFSZ];
    snprintf(addr_probe, sizeof(addr_probe), "%s+x@%s", config_str(cfg, "send", "bounce_prefix"),
             config_str(cfg, "send", "bounce_domain"));
    if (strchr(config_str(cfg, "send", "bounce_prefix"), '+') || address_normalize(addr_probe, addr_probe, sizeof(addr_probe)) != 0) {
        snprintf(err, errlen, "[send] bounce_prefix / bounce_domain do not make an address");
        return -EINVAL;
    }
    snprintf(addr_probe, sizeof(addr_probe), "unsubscribe+x@%s", config_str(cfg, "send", "unsubscribe_domain"));
    if (address_normalize(addr_probe, addr_probe, sizeof(addr_probe)) != 0) {
        snprintf(err, errlen, "[send] unsubscribe_domain is not a domain");
        return -EINVAL;
    }
    return 0;
}

/* [send] retry_tiers: the tier names and their delays. */
static int sender_tiers(struct sender *w, const struct config *cfg, char *err, size_t errlen)
{
    w->n_tiers = config_list(cfg, "send", "retry_tiers", &w->tiers);
    if (w->n_tiers == 0) {
        snprintf(err, errlen, "[send] retry_tiers: at least one delay is needed");
        return -EINVAL;
    }
    w->tier_ms = xcalloc(w->n_tiers, sizeof(int64_t));
    for (size_t i = 0; i < w->n_tiers; i++) {
        w->tier_ms[i] = duration_parse_ms(w->tiers[i]);
        if (w->tier_ms[i] <= 0 || strspn(w->tiers[i], "0123456789smhd") != strlen(w->tiers[i])) {
            snprintf(err, errlen, "[send] retry_tiers: %s is not a duration like 1m or 2h", w->tiers[i]);
            return -EINVAL;
        }
    }
    return 0;
}

/* What every lane's transport is opened with (the secrets stay owned by w). */
static void sender_transport_config(struct sender *w, const struct config *cfg)
{
    int64_t conns = config_int(cfg, "send", "connections"), pd = config_int(cfg, "send", "per_domain");
    w->tc = (struct transport_config){
        .connections = conns < 1 ? 1 : conns > 256 ? 256 : (int)conns,
        .per_domain = pd < 1 ? 1 : pd > 256 ? 256 : (int)pd,
        .starttls = config_str(cfg, "send", "smtp_starttls"),
        .user = config_isset(cfg, "send", "smtp_user") ? config_str(cfg, "send", "smtp_user") : NULL,
        .password = w->smtp_password,
        .helo = config_str(cfg, "send", "smtp_helo"),
        .ca_file = config_isset(cfg, "send", "tls_ca_file") ? config_str(cfg, "send", "tls_ca_file") : NULL,
        .tls_verify = config_bool(cfg, "send", "tls_verify"),
        .timeout_ms = config_duration_ms(cfg, "send", "timeout"),
        .connect_timeout_ms = config_duration_ms(cfg, "send", "connect_timeout"),
        .ses_endpoint = config_isset(cfg, "send", "ses_endpoint") ? config_str(cfg, "send", "ses_endpoint") : NULL,
        .access_key = w->ses_access, .secret_key = w->ses_secret, .session_token = w->ses_token,
    };
}

/* The bus, the sent markers and the suppression copy. */
static int sender_open_state(struct sender *w, const struct config *cfg, char *err, size_t errlen)
{
    char txn_id[320];
    common_transactional_id(cfg, "send", txn_id, sizeof txn_id);
    struct bus_options bo = { .client_id = "mailfleet-send", .transactional_id = txn_id };
    const char *compacted[] = { TOPIC_SUPPRESSION, NULL };
    bo.compacted_topics = compacted;
    w->bus = common_bus(cfg, &bo, err, errlen);
    if (!w->bus)
        return -EIO;

    struct strbuf d;
    strbuf_init(&d);
    strbuf_appendf(&d, "%s/send/sent", config_str(cfg, "mailfleet", "state_dir"));
    w->marks = sent_marks_open(d.data, config_duration_ms(cfg, "send", "sent_marker_ttl"), err, errlen);
    strbuf_reset(&d);
    strbuf_appendf(&d, "%s/send/suppression", config_str(cfg, "mailfleet", "state_dir"));
    if (w->marks)
        w->supp = suppression_copy_open(d.data, err, errlen);
    strbuf_free(&d);
    if (!w->marks || !w->supp)
        return -EIO;
    return 0;
}

static int sender_init(struct sender *w, const struct worker_env *env, char *err, size_t errlen)
{
    const struct config *cfg = env->cfg;
    w->cfg = cfg;
    w->stop = env->stop;
    w->http = env->http;
    /* [mailfleet] token_keys signs unsubscribe URLs and yields the VERP keys. */
    w->tokens = common_tokens(cfg, err, errlen);
    if (!w->tokens)
        return -EINVAL;
    w->verp_keys = verp_keys_new(w->tokens);
    if (sender_check_domains(cfg, err, errlen) != 0)
        return -EINVAL;
    if (sender_tiers(w, cfg, err, errlen) != 0)
        return -EINVAL;
    w->max_age_ms = config_duration_ms(cfg, "send", "max_retry_age");
    w->denied_max_ms = config_duration_ms(cfg, "send", "access_denied_max");
    w->unsub_ttl_ms = config_duration_ms(cfg, "send", "unsubscribe_ttl");
    w->batch_max = worker_loop_batch_max(cfg, "send");
    w->pause_file = send_pause_file(cfg);
    w->transport_uri = xstrdup(config_str(cfg, "send", "transport"));
    w->smtp_password = config_secret(cfg, "send", "smtp_password");
    w->ses_access = config_secret(cfg, "send", "ses_access_key");
    w->ses_secret = config_secret(cfg, "send", "ses_secret_key");
    w->ses_token = config_secret(cfg, "send", "ses_session_token");
    sender_transport_config(w, cfg);
    w->rl = ratelimit_new((double)config_int(cfg, "send", "rate"), (double)config_int(cfg, "send", "burst"));
    w->list_unsubscribe = config_bool(cfg, "send", "list_unsubscribe");
    if (config_isset(cfg, "send", "dkim_key_file")) {
        const char *dom = config_isset(cfg, "send", "dkim_domain") ? config_str(cfg, "send", "dkim_domain") : NULL;
        w->dkim = dkim_signer_new(config_str(cfg, "send", "dkim_algorithm"), config_str(cfg, "send", "dkim_selector"),
                                  dom, config_str(cfg, "send", "dkim_key_file"), err, errlen);
        if (!w->dkim)
            return -EINVAL;
    }
    /* Check the transport settings now: a bad URI is a startup error. */
    struct transport *probe = transport_open(w->transport_uri, &w->tc, err, errlen);
    if (!probe)
        return -EINVAL;
    w->hold = send_hold_new(transport_name(probe), config_duration_ms(cfg, "send", "hold_backoff"),
                            config_duration_ms(cfg, "send", "hold_backoff_max"));
    transport_free(probe);

    return sender_open_state(w, cfg, err, errlen);
}

static int send_run(struct worker_env *env)
{
    struct sender w = { 0 };
    char err[512];
    if (sender_init(&w, env, err, sizeof(err)) != 0) {
        log_kv(LOG_ERROR, "send cannot start", "error", err, NULL);
        sender_free(&w);
        return 1;
    }
    metrics_init(&w);
    if (env->http)
        http_ready_add(env->http, "send", ready_check, NULL);

    char host[128] = "local", group[256];
    gethostname(host, sizeof(host) - 1);
    snprintf(group, sizeof(group), "%s.suppression.%s", config_str(env->cfg, "send", "group"), host);
    if (suppression_copy_start(w.supp, w.bus, group, env->stop, err, sizeof(err)) != 0) {
        log_kv(LOG_ERROR, "send cannot start", "error", err, NULL);
        sender_free(&w);
        return 1;
    }

    if (env->http)
        http_ready_add(env->http, "send-transport", send_hold_ready_check, w.hold);
    size_t n_lanes = 1 + w.n_tiers;
    struct lane *lanes = xcalloc(n_lanes, sizeof(*lanes));
    int rc = 0;
    size_t started = 0;
    for (size_t i = 0; i < n_lanes; i++) {
        struct lane *l = &lanes[i];
        l->w = &w;
        l->tier = (int)i - 1;
        if (i == 0) {
            snprintf(l->topic, sizeof(l->topic), "%s", TOPIC_OUTBOUND);
            snprintf(l->group, sizeof(l->group), "%s", config_str(env->cfg, "send", "group"));
        } else {
            snprintf(l->topic, sizeof(l->topic), "%s%s", TOPIC_OUTBOUND_RETRY, w.tiers[i - 1]);
            snprintf(l->group, sizeof(l->group), "%s.retry.%s", config_str(env->cfg, "send", "group"),
                     w.tiers[i - 1]);
        }
        l->journal = sent_journal_open(w.marks, (int)i, err, sizeof(err));
        l->t = l->journal ? transport_open(w.transport_uri, &w.tc, err, sizeof(err)) : NULL;
        if (!l->t || pthread_create(&l->tid, NULL, lane_main, l) != 0) {
            log_kv(LOG_ERROR, "send cannot start a lane", "topic", l->topic, "error", err, NULL);
            sent_journal_close(l->journal);
            l->journal = NULL;
            transport_free(l->t);
            l->t = NULL;
            *env->stop = 1;
            rc = 1;
            break;
        }
        started++;
    }
    int bus_check = rc == 0 && env->http;
    if (rc == 0) {
        if (bus_check)
            http_ready_add(env->http, "send-bus", common_bus_ready, w.bus);
        worker_started(env);
        log_kv(LOG_INFO, "send running", "transport", transport_name(lanes[0].t), NULL);
    }
    for (size_t i = 0; i < started; i++) {
        pthread_join(lanes[i].tid, NULL);
        rc |= lanes[i].rc;
        transport_free(lanes[i].t);
        sent_journal_close(lanes[i].journal);   /* what is left goes to the db, or to the next start */
        store_close(lanes[i].store[0]);
        store_close(lanes[i].store[1]);
    }
    free(lanes);
    if (bus_check)
        http_ready_remove(env->http, "send-bus", w.bus);
    if (env->http)
        http_ready_remove(env->http, "send-transport", w.hold);
    atomic_store(&send_ready, 0);
    sender_free(&w);
    log_kv(LOG_INFO, "send stopped", NULL);
    return rc;
}

const struct worker_def send_worker = { "send", send_config_keys, send_run };
