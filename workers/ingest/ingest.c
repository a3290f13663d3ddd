/* ingest — the SMTP front door (DESIGN.md §4.1, §6, §9).
 *
 * Consumes: SMTP from devices and applications (plain + STARTTLS, implicit
 * TLS).  Produces: raw mail in store:incoming, mailfleet.inbound records
 * (capture rules) and mailfleet.feedback records (feedback and unsubscribe
 * rules).
 *
 * Guarantee: "250 ... queued as <id>" is written only from the after-work
 * callback, once the raw message is fsynced (or in S3) and its records are
 * committed to the local queue / acknowledged by Kafka (spool.c).  Anything
 * else is 4xx/5xx and the client keeps the message.
 *
 * Security posture: listens on the configured addresses only; relays nothing
 * (a recipient no receipt rule takes is refused at RCPT); AUTH only under TLS
 * unless allow_plaintext_auth is set (never in the shipped configs); passwords
 * are checked with crypt(3) in the thread pool and never logged; failed AUTH
 * backs off per client IP and per user name; every limit (line, header block,
 * size, recipients, connections, timeouts) answers with an enhanced status code.  The event
 * loop never blocks on disk or network: store and bus writes run in
 * uv_queue_work. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <uv.h>

#include "bus.h"
#include "common_config.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "process.h"
#include "store.h"
#include "strbuf.h"
#include "timeutil.h"
#include "worker.h"
#include "worker_loop.h"

#include "netaddr.h"
#include "rules.h"
#include "smtp_server.h"
#include "smtp_session.h"
#include "spool.h"
#include "tls.h"
#include "users.h"

static const struct config_key ingest_keys[] = {
    { "ingest", "listen", CONFIG_STR, "127.0.0.1:2525", "plain SMTP + STARTTLS (empty = off)" },
    { "ingest", "listen_tls", CONFIG_STR, "127.0.0.1:4650", "implicit TLS SMTP (empty = off)" },
    { "ingest", "listen_submission", CONFIG_STR, "",
      "submission: SMTP + STARTTLS where MAIL needs AUTH first (empty = off; e.g. 0.0.0.0:587)" },
    { "ingest", "require_auth_on", CONFIG_LIST, "submission",
      "listeners (smtp, smtps, submission) where MAIL needs AUTH first (530 5.7.0)" },
    { "ingest", "proxy_protocol", CONFIG_LIST, "",
      "listeners that expect a PROXY v1/v2 header from a load balancer before anything else" },
    { "ingest", "proxy_from", CONFIG_LIST, "",
      "addresses or CIDRs allowed to connect to those listeners (empty = any: firewall them)" },
    { "ingest", "metrics_listen", CONFIG_STR, "127.0.0.1:9101", "metrics/health when run alone" },
    { "ingest", "hostname", CONFIG_STR, NULL, "name in the banner and Received: (default: host name)" },
    { "ingest", "tls_cert", CONFIG_STR, "var/tls/cert.pem", "PEM certificate chain (reloaded on SIGHUP)" },
    { "ingest", "tls_key", CONFIG_STR, "var/tls/key.pem", "PEM private key" },
    { "ingest", "tls_watch", CONFIG_DURATION, "30s",
      "how often certificate, key and users_file are checked for a change and reloaded (0 = SIGHUP only)" },
    { "ingest", "tls_generate", CONFIG_BOOL, "false",
      "write a self-signed cert/key when missing (development only)" },
    { "ingest", "users_file", CONFIG_STR, "var/state/users",
      "AUTH users, name:crypt-hash lines (`mailfleet users add`; reloaded on SIGHUP)" },
    { "ingest", "allow_plaintext_auth", CONFIG_BOOL, "false", "offer AUTH without TLS (never do this)" },
    { "ingest", "max_message_size", CONFIG_SIZE, "40M", "SIZE limit (552 5.3.4)" },
    { "ingest", "max_line_length", CONFIG_INT, "1000", "bytes per line including CRLF" },
    { "ingest", "max_header_size", CONFIG_SIZE, "64K", "bytes of the header block" },
    { "ingest", "max_buffered", CONFIG_SIZE, NULL,
      "mail in memory, all sessions (past it DATA gets 452 4.3.1); unset: 512M or half the cgroup memory "
      "limit if less; above that half (or 0) under a limit, ingest will not start" },
    { "ingest", "max_recipients", CONFIG_INT, "100", "recipients per message (452 4.5.3)" },
    { "ingest", "min_free", CONFIG_SIZE, "64M",
      "free space kept on state_dir and file stores; below it MAIL FROM gets 452 4.3.1 and "
      "ingest is not ready (0 = no check)" },
    { "ingest", "max_connections", CONFIG_INT, "1000", "connections in all (421 4.7.0)" },
    { "ingest", "max_connections_per_ip", CONFIG_INT, "50", "connections per client address" },
    { "ingest", "max_errors", CONFIG_INT, "20", "bad commands before 421" },
    { "ingest", "max_junk_commands", CONFIG_INT, "100",
      "RSET/NOOP/VRFY/EXPN/HELP before each counts as a bad command (0 = no limit)" },
    { "ingest", "command_timeout", CONFIG_DURATION, "5m", "idle time allowed between commands" },
    { "ingest", "data_timeout", CONFIG_DURATION, "10m", "idle time allowed inside DATA" },
    { "ingest", "session_timeout", CONFIG_DURATION, "10m",
      "whole session, however busy the client keeps it (421 4.4.2; 0 = no limit)" },
    { "ingest", "min_data_rate", CONFIG_SIZE, "500", "bytes/s DATA must average over each window (0 = off)" },
    { "ingest", "data_rate_window", CONFIG_DURATION, "30s", "that window; the first is the grace" },
    { "ingest", "bare_lf", CONFIG_STR, "normalize",
      "normalize (accept LF-ended lines, store CRLF) or reject (550 5.5.2)" },
    { "ingest", "auth_delay", CONFIG_DURATION, "1s",
      "delay before 535, times failures from that IP or for that user" },
    { "ingest", "auth_delay_max", CONFIG_DURATION, "30s", "cap of that delay" },
    { "ingest", "auth_max_failures", CONFIG_INT, "10",
      "failures (per IP, per user name) after which AUTH gets 454 4.7.0" },
    { "ingest", "auth_block_time", CONFIG_DURATION, "15m", "how long that lasts after the last failure" },
    { "ingest", "dedupe_ttl", CONFIG_DURATION, "10m", "window for retried identical messages (0 = off)" },
    { "ingest", "drain_timeout", CONFIG_DURATION, "10s", "on SIGTERM, time sessions get to finish" },
    { "ingest", "spool", CONFIG_STR, "auto",
      "auto (spool under state_dir with Kafka, none with the local bus), off, or local:<dir>" },
    { "ingest", "spool_store", CONFIG_STR, NULL,
      "file:<dir> for raw mail while store_incoming fails (default <state_dir>/spool-store)" },
    { "ingest", "produce_timeout", CONFIG_DURATION, "30s", "wait for the bus before 451" },
    /* receipt rules, read by rules.c */
    { "rule.*", "recipients", CONFIG_LIST, NULL,
      "recipient patterns: alerts@iot.localhost, example.com, bounce+*@iot.localhost" },
    { "rule.*", "action", CONFIG_STR, "capture", "capture, feedback, unsubscribe or reject" },
    { "rule.*", "require_tls", CONFIG_BOOL, "false", "refuse these recipients outside TLS" },
    { "rule.*", "require_auth", CONFIG_BOOL, "false", "refuse these recipients without AUTH" },
    { "rule.*", "allowed_senders", CONFIG_LIST, NULL,
      "user:pattern items limiting MAIL FROM of authenticated users (*:pattern = any user)" },
    { "rule.*", "max_recipients", CONFIG_INT, "0", "recipients per message for this rule (0 = no limit)" },
    { "rule.*", "max_size", CONFIG_SIZE, "0", "message size for this rule (0 = the global limit)" },
        CONFIG_KEYS_END
};


/* What tells a changed file: a Kubernetes Secret volume swaps a symlink to a
 * new directory (new inode); a copy in place changes size or mtime. */
struct file_stamp {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    int missing;
};

struct ingest {
    struct worker_env *env;
    uv_loop_t loop;
    uv_timer_t tick;
    uv_signal_t hup;
    struct smtp_server *server;
    struct smtp_server_conf sconf;
    struct cidr *proxy_from;        /* [ingest] proxy_from */
    size_t n_proxy_from;
    struct spool *spool;
    struct rules *rules;
    struct users *users;
    pthread_rwlock_t users_lock;
    char hostname[256];
    int draining;
    int64_t drain_deadline;
    unsigned inflight;
    long buffered;   /* smtp_session_conf.buffered */
    long max_buffered;               /* buffer_limit() */
    _Atomic int64_t last_tick_ms;    /* on_tick's last run (mono): liveness */
    int64_t stuck_ms;                /* [mailfleet] stuck_after */
    atomic_int storage_low;          /* smtp_session_conf.storage_low */
    char storage_why[300];           /* under live_lock */
    int64_t next_storage_check;
    int64_t next_watch;              /* mono ms of the next look at watched[] */
    struct file_stamp watched[3];    /* tls_cert, tls_key, users_file as last loaded or tried */
    struct metric *m_cert_expiry;
    struct metric *m_accepted, *m_duplicate, *m_tempfail, *m_bytes, *m_latency;
};

/* Readiness and spool gauges outlive one run (the registry has no removal),
 * so they read the live ingest through this lock. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ingest *live;
static struct metric *g_backlog, *g_oldest;

static void collect_spool(void *opaque)
{
    int64_t recs = 0;
    double age = 0;
    pthread_mutex_lock(&live_lock);
    if (live && live->spool)
        spool_backlog(live->spool, &recs, &age);
    pthread_mutex_unlock(&live_lock);
    metric_set(g_backlog, (double)recs);
    metric_set(g_oldest, age);
}

static int ready_check(void *opaque, char *why, size_t whylen)
{
    int ok;
    pthread_mutex_lock(&live_lock);
    ok = live && !live->draining;
    if (live && live->spool && spool_forwarding(live->spool)) {
        int64_t recs = 0;
        double age = 0;
        spool_backlog(live->spool, &recs, &age);
        snprintf(why, whylen, "spool backlog %lld records, oldest %.1f s", (long long)recs, age);
    } else if (!live) {
        snprintf(why, whylen, "not running");
    } else if (live->draining) {
        snprintf(why, whylen, "draining");
    }
    if (live && atomic_load(&live->storage_low)) {
        ok = 0;
        snprintf(why, whylen, "%s", live->storage_why);
    }
    pthread_mutex_unlock(&live_lock);
    return ok;
}

/* Alive while the event loop ticks (on_tick, every 100 ms) and the spool
 * forwarder is not stuck in one batch; a peer that is down is readiness. */
static int live_check(void *opaque, char *why, size_t whylen)
{
    int ok = 1;
    pthread_mutex_lock(&live_lock);
    if (live) {
        int64_t quiet = mono_ms() - atomic_load(&live->last_tick_ms);
        if (quiet > live->stuck_ms) {
            snprintf(why, whylen, "the SMTP event loop has not run for %lld s", (long long)(quiet / 1000));
            ok = 0;
        } else if (live->spool) {
            ok = spool_alive(live->spool, why, whylen);
        }
    }
    pthread_mutex_unlock(&live_lock);
    return ok;
}

static void register_observers(struct http_server *http)
{
    static int once;
    if (!once) {
        once = 1;
        g_backlog = metric_gauge("mailfleet_spool_backlog_records", "records in ingest's spool not yet forwarded",
                                 NULL);
        g_oldest = metric_gauge("mailfleet_spool_oldest_age_seconds", "age of the oldest record waiting in the spool",
                                NULL);
        metrics_on_collect(collect_spool, NULL);
    }
    if (http) {
        http_ready_add(http, "ingest", ready_check, NULL);
        http_live_add(http, "ingest", live_check, NULL);
    }
}

/* ---- message hand-off ------------------------------------------------------------ */

struct submit_work {
    uv_work_t req;
    struct ingest *in;
    struct smtp_conn *conn;
    struct smtp_message *msg;
    struct spool_result res;
    int64_t t0_us;
};

static void submit_work(uv_work_t *req)
{
    struct submit_work *w = req->data;
    spool_put(w->in->spool, w->msg, w->in->rules, &w->res);
}

static void submit_after(uv_work_t *req, int status)
{
    struct submit_work *w = req->data;
    struct ingest *in = w->in;
    if (status != 0) {
        w->res.code = 451;
        snprintf(w->res.text, sizeof(w->res.text), "4.3.0 Error: try again later");
    }
    if (w->res.code == 250) {
        metric_inc(w->res.duplicate ? in->m_duplicate : in->m_accepted);
        if (!w->res.duplicate)
            metric_add(in->m_bytes, (double)w->msg->data.len);
        metric_observe(in->m_latency, (double)(mono_us() - w->t0_us) / 1e6);
        char nr[16];
        snprintf(nr, sizeof(nr), "%zu", w->msg->n_rcpts);
        log_kv(LOG_INFO, w->res.duplicate ? "duplicate acknowledged" : "message queued", "id", w->res.id, "client",
               w->msg->client_ip, "rcpts", nr, NULL);
    } else {
        metric_inc(in->m_tempfail);
    }
    /* The message belongs to the session again from here. */
    smtp_server_submit_done(w->conn, w->res.code, w->res.text);
    in->inflight--;
    free(w);
}

static void hook_submit(void *opaque, struct smtp_conn *conn, struct smtp_message *m)
{
    struct ingest *in = opaque;
    struct submit_work *w = xcalloc(1, sizeof(*w));
    w->req.data = w;
    w->in = in;
    w->conn = conn;
    w->msg = m;
    w->t0_us = mono_us();
    in->inflight++;
    if (uv_queue_work(&in->loop, &w->req, submit_work, submit_after) != 0)
        submit_after(&w->req, -1);
}

static int hook_auth_verify(void *opaque, const char *user, const char *pass)
{
    struct ingest *in = opaque;
    pthread_rwlock_rdlock(&in->users_lock);
    int ok = users_verify(in->users, user, pass);
    pthread_rwlock_unlock(&in->users_lock);
    return ok;
}

/* ---- TLS and users, loaded at start, on SIGHUP and when their files change ---------- */

static struct file_stamp stamp_of(const char *path)
{
    struct stat st;
    struct file_stamp f = { 0 };
    if (stat(path, &st) != 0) {
        f.missing = 1;
        return f;
    }
    f.dev = st.st_dev;
    f.ino = st.st_ino;
    f.size = st.st_size;
    f.mtime = st.st_mtim;
    return f;
}

static int stamp_differs(const struct file_stamp *a, const struct file_stamp *b)
{
    return a->missing != b->missing || a->dev != b->dev || a->ino != b->ino || a->size != b->size ||
           a->mtime.tv_sec != b->mtime.tv_sec || a->mtime.tv_nsec != b->mtime.tv_nsec;
}

static const char *const watched_keys[] = { "tls_cert", "tls_key", "users_file" };

static void watch_stamp(struct ingest *in)
{
    for (size_t i = 0; i < sizeof(watched_keys) / sizeof(watched_keys[0]); i++)
        in->watched[i] = stamp_of(config_str(in->env->cfg, "ingest", watched_keys[i]));
}

static int load_tls(struct ingest *in, char *err, size_t errlen)
{
    const struct config *cfg = in->env->cfg;
    const char *cert = config_str(cfg, "ingest", "tls_cert");
    const char *key = config_str(cfg, "ingest", "tls_key");
    if (config_bool(cfg, "ingest", "tls_generate") &&
        tls_generate_self_signed(cert, key, in->hostname, err, errlen) != 0)
        return -1;
    struct tls_ctx *ctx = tls_ctx_new(cert, key, err, errlen);
    if (!ctx)
        return -1;
    int64_t not_after = tls_ctx_not_after(ctx);
    if (!in->m_cert_expiry)
        in->m_cert_expiry = metric_gauge("mailfleet_tls_certificate_expiry_timestamp_seconds",
                                         "notAfter of the SMTP certificate being served (Unix time)", NULL);
    metric_set(in->m_cert_expiry, (double)not_after);
    smtp_server_set_tls(in->server, ctx);
    return 0;
}

static int load_users(struct ingest *in, char *err, size_t errlen)
{
    struct users *u = users_load(config_str(in->env->cfg, "ingest", "users_file"), err, errlen);
    if (!u)
        return -1;
    pthread_rwlock_wrlock(&in->users_lock);
    struct users *old = in->users;
    in->users = u;
    pthread_rwlock_unlock(&in->users_lock);
    users_free(old);
    return 0;
}

static void reload(struct ingest *in, int tls, int users, const char *why)
{
    char err[512];
    if (tls && load_tls(in, err, sizeof(err)) != 0)
        log_kv(LOG_ERROR, "TLS reload failed; keeping the old certificate", "error", err, "cause", why, NULL);
    else if (tls)
        log_kv(LOG_INFO, "TLS certificate reloaded", "cause", why, NULL);
    if (users && load_users(in, err, sizeof(err)) != 0)
        log_kv(LOG_ERROR, "users reload failed; keeping the old ones", "error", err, "cause", why, NULL);
    else if (users)
        log_kv(LOG_INFO, "users reloaded", "cause", why, NULL);
}

static void on_hup(uv_signal_t *h, int sig)
{
    struct ingest *in = h->data;
    watch_stamp(in);
    reload(in, 1, 1, "SIGHUP");
}

/* Certificates renewed by cert-manager (or a copy in place) and a changed
 * users Secret take effect without a restart or a signal.  A file caught
 * half-written fails to load and is tried again when it changes again. */
static void check_watched(struct ingest *in)
{
    int64_t every = config_duration_ms(in->env->cfg, "ingest", "tls_watch");
    if (every <= 0 || mono_ms() < in->next_watch)
        return;
    in->next_watch = mono_ms() + every;
    struct file_stamp now[3];
    int changed[3];
    for (size_t i = 0; i < sizeof(watched_keys) / sizeof(watched_keys[0]); i++) {
        now[i] = stamp_of(config_str(in->env->cfg, "ingest", watched_keys[i]));
        changed[i] = stamp_differs(&now[i], &in->watched[i]);
        in->watched[i] = now[i];
    }
    if (changed[0] || changed[1] || changed[2])
        reload(in, changed[0] || changed[1], changed[2], "file changed");
}

/* ---- drain -------------------------------------------------------------------------- */

/* Free space on a file-system path against [ingest] min_free; 1 = low (why
 * filled), 0 = fine or not a local path. */
static int storage_low_at(const char *path, uint64_t min_free, char *why, size_t len)
{
    struct statvfs v;
    if (!path || !*path || statvfs(path, &v) != 0)
        return 0;
    uint64_t avail = (uint64_t)v.f_bavail * v.f_frsize;
    if (avail >= min_free)
        return 0;
    snprintf(why, len, "%llu bytes free on %s, below [ingest] min_free (%llu)",
             (unsigned long long)avail, path, (unsigned long long)min_free);
    return 1;
}

/* Once a second: the state dir (spool, dedupe) and a file store for raw mail. */
static void check_storage(struct ingest *in)
{
    const struct config *cfg = in->env->cfg;
    uint64_t min_free = config_size(cfg, "ingest", "min_free");
    if (min_free == 0 || mono_ms() < in->next_storage_check)
        return;
    in->next_storage_check = mono_ms() + 1000;
    const char *paths[] = { config_str(cfg, "mailfleet", "state_dir"),
                            config_str(cfg, "mailfleet", "store_incoming"), NULL };
    char why[300] = "";
    int low = 0;
    for (int i = 0; paths[i] && !low; i++) {
        const char *p = paths[i];
        if (i > 0 && strncmp(p, "file:", 5) != 0)
            continue;
        low = storage_low_at(i > 0 ? p + 5 : p, min_free, why, sizeof why);
    }
    if (low != atomic_load(&in->storage_low))
        log_kv(low ? LOG_WARN : LOG_INFO, low ? "storage low: MAIL FROM answers 452 4.3.1"
                                              : "storage back above min_free",
               "why", why, NULL);
    pthread_mutex_lock(&live_lock);
    snprintf(in->storage_why, sizeof in->storage_why, "%s", why);
    pthread_mutex_unlock(&live_lock);
    atomic_store(&in->storage_low, low);
}

static void on_tick(uv_timer_t *t)
{
    struct ingest *in = t->data;
    atomic_store(&in->last_tick_ms, mono_ms());
    check_storage(in);
    if (!in->draining)
        check_watched(in);
    if (!in->draining && *in->env->stop) {
        pthread_mutex_lock(&live_lock);   /* ready_check reads it from an HTTP thread */
        in->draining = 1;
        pthread_mutex_unlock(&live_lock);
        in->drain_deadline = mono_ms() + config_duration_ms(in->env->cfg, "ingest", "drain_timeout");
        smtp_server_drain(in->server);
        uv_signal_stop(&in->hup);
        char n[16];
        snprintf(n, sizeof(n), "%zu", smtp_server_sessions(in->server));
        log_kv(LOG_INFO, "draining: new connections get 421", "sessions", n, NULL);
    }
    if (!in->draining)
        return;
    if (mono_ms() >= in->drain_deadline)
        smtp_server_shutdown_sessions(in->server);   /* sessions mid-queue get their answer first */
    if (smtp_server_sessions(in->server) == 0 && in->inflight == 0) {
        uv_timer_stop(&in->tick);
        uv_close((uv_handle_t *)&in->tick, NULL);
        uv_close((uv_handle_t *)&in->hup, NULL);
        smtp_server_close(in->server);
    }
}

/* ---- run ------------------------------------------------------------------------------ */

static void session_conf(struct ingest *in, struct smtp_session_conf *sc)
{
    const struct config *cfg = in->env->cfg;
    sc->hostname = in->hostname;
    sc->max_size = config_size(cfg, "ingest", "max_message_size");
    sc->max_line = (size_t)config_int(cfg, "ingest", "max_line_length");
    sc->max_header = config_size(cfg, "ingest", "max_header_size");
    sc->max_rcpt = (unsigned)config_int(cfg, "ingest", "max_recipients");
    sc->bare_lf_reject = strcmp(config_str(cfg, "ingest", "bare_lf"), "reject") == 0;
    sc->allow_plaintext_auth = config_bool(cfg, "ingest", "allow_plaintext_auth");
    sc->max_errors = (unsigned)config_int(cfg, "ingest", "max_errors");
    sc->max_junk = (unsigned)config_int(cfg, "ingest", "max_junk_commands");
    sc->rules = in->rules;
    sc->buffered = &in->buffered;
    sc->max_buffered = in->max_buffered;
    sc->storage_low = &in->storage_low;
}


#define MAX_BUFFERED_DEFAULT (512ULL << 20)

/* How much mail all sessions may hold in memory together.  In a container
 * the buffers must fit the memory limit with the process's own needs
 * beside them, or the kernel kills ingest before its 452 back-pressure
 * starts: at most half the cgroup limit.  An explicit max_buffered above
 * that half is refused; an unset one becomes the smaller of its default
 * and that half.  0, or -1 with err. */
static int buffer_limit(const struct config *cfg, long *out, char *err, size_t errlen)
{
    uint64_t limit = process_memory_limit(NULL), half = limit / 2;
    int given = config_isset(cfg, "ingest", "max_buffered");
    uint64_t want = given ? config_size(cfg, "ingest", "max_buffered") : MAX_BUFFERED_DEFAULT;
    char a[32], b[32];
    if (limit && (want > half || want == 0)) {
        if (given) {
            snprintf(err, errlen,
                     "[ingest] max_buffered = %llu bytes%s under a memory limit of %llu bytes (cgroup): mail "
                     "in memory would get ingest killed before it answers 452; set at most %llu or raise the "
                     "limit",
                     (unsigned long long)want, want ? " is more than half of what fits" : " (no bound)",
                     (unsigned long long)limit, (unsigned long long)half);
            return -1;
        }
        want = half;
        snprintf(a, sizeof(a), "%llu", (unsigned long long)want);
        snprintf(b, sizeof(b), "%llu", (unsigned long long)limit);
        log_kv(LOG_INFO, "max_buffered set to half the memory limit", "max_buffered", a, "memory_limit", b, NULL);
    }
    uint64_t msg = config_size(cfg, "ingest", "max_message_size");
    if (want && msg > want) {
        snprintf(a, sizeof(a), "%llu", (unsigned long long)want);
        snprintf(b, sizeof(b), "%llu", (unsigned long long)msg);
        log_kv(LOG_WARN, "max_buffered is below max_message_size: larger mails get 452 4.3.1", "max_buffered", a,
               "max_message_size", b, NULL);
    }
    *out = (long)want;
    return 0;
}

static int check_config(const struct config *cfg, char *err, size_t errlen)
{
    const char *blf = config_str(cfg, "ingest", "bare_lf");
    if (strcmp(blf, "normalize") != 0 && strcmp(blf, "reject") != 0) {
        snprintf(err, errlen, "[ingest] bare_lf: '%s' is not normalize or reject", blf);
        return -1;
    }
    if (config_int(cfg, "ingest", "max_line_length") < 80 || config_int(cfg, "ingest", "max_recipients") < 1 ||
        config_int(cfg, "ingest", "max_connections") < 1 || config_int(cfg, "ingest", "max_connections_per_ip") < 1) {
        snprintf(err, errlen, "[ingest] max_line_length >= 80, max_recipients, max_connections and "
                              "max_connections_per_ip >= 1");
        return -1;
    }
    if (config_int(cfg, "ingest", "max_junk_commands") < 0) {
        snprintf(err, errlen, "[ingest] max_junk_commands >= 0");
        return -1;
    }
    return 0;
}

/* The spool: straight to the bus, or through the local queue and its
 * forwarder (spool = auto with Kafka, or a queue URI).  spool_uri gets the
 * queue's URI ("" when there is none).  0, or -1 with err set. */
static int open_spool(struct ingest *in, char *spool_uri, size_t urilen, char *err, size_t errlen)
{
    const struct config *cfg = in->env->cfg;
    const char *bus_uri = config_str(cfg, "mailfleet", "bus");
    const char *state_dir = config_str(cfg, "mailfleet", "state_dir");
    const char *spool_opt = config_str(cfg, "ingest", "spool");
    char spool_store[4096];
    if (strcmp(spool_opt, "auto") == 0) {
        if (strncmp(bus_uri, "kafka:", 6) == 0)
            snprintf(spool_uri, urilen, "local:%s/spool", state_dir);
    } else if (strcmp(spool_opt, "off") != 0) {
        snprintf(spool_uri, urilen, "%s", spool_opt);
    }
    if (config_isset(cfg, "ingest", "spool_store"))
        snprintf(spool_store, sizeof(spool_store), "%s", config_str(cfg, "ingest", "spool_store"));
    else
        snprintf(spool_store, sizeof(spool_store), "file:%s/spool-store", state_dir);
    const char **kconf = common_kafka_conf(cfg);
    struct bus_options bopt = { .client_id = "mailfleet-ingest", .kafka_conf = kconf };
    struct spool_conf spc = {
        .bus_uri = bus_uri,
        .spool_uri = spool_uri,
        .state_dir = state_dir,
        .dedupe_ttl_ms = config_duration_ms(cfg, "ingest", "dedupe_ttl"),
        .produce_timeout_ms = (int)config_duration_ms(cfg, "ingest", "produce_timeout"),
        .batch_max = worker_loop_batch_max(cfg, NULL),
        .stuck_ms = worker_loop_stuck_ms(cfg),
        .bus_opt = &bopt,
        .process_stop = in->env->stop,
    };
    spc.store = common_store(cfg, "store_incoming", err, errlen);
    if (spc.store && *spool_uri && !(spc.spool_store = common_store_uri(cfg, spool_store, err, errlen))) {
        store_close(spc.store);
        spc.store = NULL;
    }
    in->spool = spc.store ? spool_open(&spc, err, errlen) : NULL;
    free(kconf);
    return in->spool ? 0 : -1;
}

static int listed(const struct config *cfg, const char *key, const char *name)
{
    char **items;
    size_t n = config_list(cfg, "ingest", key, &items);
    int found = 0;
    for (size_t i = 0; i < n && !found; i++)
        found = strcmp(items[i], name) == 0;
    config_list_free(items, n);
    return found;
}

static const struct {
    const char *name, *key;
    int implicit_tls;
} listener_keys[] = {
    { "smtp", "listen", 0 }, { "smtps", "listen_tls", 1 }, { "submission", "listen_submission", 0 },
};

/* Each listener named in require_auth_on and proxy_protocol must exist and
 * be configured; proxy_from must hold addresses.  0, or -1 with err set. */
static int check_listeners(struct ingest *in, char *err, size_t errlen)
{
    const struct config *cfg = in->env->cfg;
    static const char *const lists[] = { "require_auth_on", "proxy_protocol" };
    for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++) {
        char **items;
        size_t n = config_list(cfg, "ingest", lists[k], &items);
        int bad = 0;
        for (size_t i = 0; i < n && !bad; i++) {
            size_t j = 0;
            while (j < sizeof(listener_keys) / sizeof(listener_keys[0]) && strcmp(items[i], listener_keys[j].name))
                j++;
            if (j == sizeof(listener_keys) / sizeof(listener_keys[0])) {
                snprintf(err, errlen, "[ingest] %s: '%s' is not smtp, smtps or submission", lists[k], items[i]);
                bad = 1;
            } else if (strcmp(lists[k], "proxy_protocol") == 0 && !*config_str(cfg, "ingest", listener_keys[j].key)) {
                snprintf(err, errlen, "[ingest] proxy_protocol names %s, but %s is empty", items[i],
                         listener_keys[j].key);
                bad = 1;
            }
        }
        config_list_free(items, n);
        if (bad)
            return -1;
    }
    char **from;
    size_t n = config_list(cfg, "ingest", "proxy_from", &from);
    int bad = 0;
    in->proxy_from = xcalloc(n ? n : 1, sizeof(*in->proxy_from));
    for (size_t i = 0; i < n && !bad; i++)
        if (cidr_parse(from[i], &in->proxy_from[in->n_proxy_from++]) != 0) {
            snprintf(err, errlen, "[ingest] proxy_from: '%s' is neither an address nor a CIDR", from[i]);
            bad = 1;
        }
    config_list_free(from, n);
    return bad ? -1 : 0;
}

static void server_conf(struct ingest *in)
{
    const struct config *cfg = in->env->cfg;
    struct smtp_server_conf *sc = &in->sconf;
    for (size_t i = 0; i < sizeof(listener_keys) / sizeof(listener_keys[0]); i++) {
        const char *addr = config_str(cfg, "ingest", listener_keys[i].key);
        if (!*addr)
            continue;
        sc->listeners[sc->n_listeners++] = (struct smtp_listener_conf){
            .name = listener_keys[i].name,
            .addr = addr,
            .implicit_tls = listener_keys[i].implicit_tls,
            .require_auth = listed(cfg, "require_auth_on", listener_keys[i].name),
            .proxy = listed(cfg, "proxy_protocol", listener_keys[i].name),
        };
    }
    sc->proxy_from = in->proxy_from;
    sc->n_proxy_from = in->n_proxy_from;
    sc->max_connections = (unsigned)config_int(cfg, "ingest", "max_connections");
    sc->max_per_ip = (unsigned)config_int(cfg, "ingest", "max_connections_per_ip");
    sc->command_timeout_ms = config_duration_ms(cfg, "ingest", "command_timeout");
    sc->data_timeout_ms = config_duration_ms(cfg, "ingest", "data_timeout");
    sc->session_timeout_ms = config_duration_ms(cfg, "ingest", "session_timeout");
    sc->min_data_rate = config_size(cfg, "ingest", "min_data_rate");
    sc->data_rate_window_ms = config_duration_ms(cfg, "ingest", "data_rate_window");
    sc->auth_delay_ms = config_duration_ms(cfg, "ingest", "auth_delay");
    sc->auth_delay_max_ms = config_duration_ms(cfg, "ingest", "auth_delay_max");
    sc->auth_block_ms = config_duration_ms(cfg, "ingest", "auth_block_time");
    sc->auth_max_failures = (unsigned)config_int(cfg, "ingest", "auth_max_failures");
    session_conf(in, &sc->session);
}

static void metrics_init(struct ingest *in)
{
    const char *labels_ok = "result=\"accepted\",reason=\"\"";
    in->m_accepted = metric_counter("mailfleet_ingest_messages_total", "messages by result", labels_ok);
    in->m_duplicate = metric_counter("mailfleet_ingest_messages_total", "messages by result",
                                     "result=\"duplicate\",reason=\"dedupe\"");
    in->m_tempfail = metric_counter("mailfleet_ingest_messages_total", "messages by result",
                                    "result=\"tempfail\",reason=\"queue\"");
    in->m_bytes = metric_counter("mailfleet_ingest_bytes_total", "bytes of accepted messages", NULL);
    in->m_latency = metric_histogram("mailfleet_ingest_data_to_ack_seconds",
                                     "end of DATA to the 250 (store + bus durable)", NULL,
                                     metrics_latency_buckets, metrics_latency_buckets_n);
}

/* Everything ingest_run allocated before the event loop. */
static void ingest_free(struct ingest *in)
{
    spool_close(in->spool);
    rules_free(in->rules);
    free(in->proxy_from);
    users_free(in->users);
    pthread_rwlock_destroy(&in->users_lock);
    free(in);
}

static int ingest_run(struct worker_env *env)
{
    const struct config *cfg = env->cfg;
    char err[512];
    int rc = 1;
    struct ingest *in = xcalloc(1, sizeof(*in));
    in->env = env;
    in->stuck_ms = worker_loop_stuck_ms(cfg);
    pthread_rwlock_init(&in->users_lock, NULL);
    if (config_isset(cfg, "ingest", "hostname"))
        snprintf(in->hostname, sizeof(in->hostname), "%s", config_str(cfg, "ingest", "hostname"));
    else if (gethostname(in->hostname, sizeof(in->hostname) - 1) != 0)
        snprintf(in->hostname, sizeof(in->hostname), "localhost");

    if (check_config(cfg, err, sizeof(err)) != 0 || buffer_limit(cfg, &in->max_buffered, err, sizeof(err)) != 0 ||
        check_listeners(in, err, sizeof(err)) != 0)
        goto fail_early;
    in->rules = rules_from_config(cfg, err, sizeof(err));
    if (!in->rules)
        goto fail_early;
    if (rules_count(in->rules) == 0)
        log_kv(LOG_WARN, "no [rule.*] sections: every recipient will be refused", NULL);
    watch_stamp(in);   /* before loading: a change in between is seen at the next look */
    if (load_users(in, err, sizeof(err)) != 0)
        goto fail_early;

    char spool_uri[4096] = "";
    if (open_spool(in, spool_uri, sizeof(spool_uri), err, sizeof(err)) != 0)
        goto fail_early;

    uv_loop_init(&in->loop);
    server_conf(in);
    struct smtp_server_conf *sc = &in->sconf;
    struct smtp_server_hooks hooks = { in, hook_submit, hook_auth_verify };
    in->server = smtp_server_new(&in->loop, sc, &hooks, err, sizeof(err));
    if (!in->server)
        goto fail_loop;
    if (load_tls(in, err, sizeof(err)) != 0) {
        /* Without a certificate there is no STARTTLS and no AUTH: refuse to
         * start rather than run a server that cannot do what it says. */
        smtp_server_close(in->server);
        uv_run(&in->loop, UV_RUN_DEFAULT);
        smtp_server_free(in->server);
        goto fail_loop;
    }
    if (config_bool(cfg, "ingest", "tls_generate"))
        watch_stamp(in);   /* a certificate just generated is the one loaded */

    metrics_init(in);
    pthread_mutex_lock(&live_lock);
    atomic_store(&in->last_tick_ms, mono_ms());   /* the first tick is 100 ms away */
    live = in;
    pthread_mutex_unlock(&live_lock);
    register_observers(env->http);

    uv_timer_init(&in->loop, &in->tick);
    in->tick.data = in;
    uv_timer_start(&in->tick, on_tick, 100, 100);
    uv_signal_init(&in->loop, &in->hup);
    in->hup.data = in;
    uv_signal_start(&in->hup, on_hup, SIGHUP);
    worker_started(env);
    for (size_t i = 0; i < sc->n_listeners; i++)
        log_kv(LOG_INFO, "ingest listening", "listener", sc->listeners[i].name, "address", sc->listeners[i].addr,
               "auth", sc->listeners[i].require_auth ? "required" : "optional", "proxy",
               sc->listeners[i].proxy ? "on" : "off", NULL);
    log_kv(LOG_INFO, "ingest spool", "spool", spool_forwarding(in->spool) ? spool_uri : "off", NULL);

    uv_run(&in->loop, UV_RUN_DEFAULT);
    rc = spool_failed(in->spool);
    pthread_mutex_lock(&live_lock);
    live = NULL;
    pthread_mutex_unlock(&live_lock);
    smtp_server_free(in->server);
    log_kv(LOG_INFO, "ingest stopped", NULL);
fail_loop:
    if (rc != 0)
        log_kv(LOG_ERROR, "ingest cannot start", "error", err, NULL);
    uv_loop_close(&in->loop);
    ingest_free(in);
    return rc;
fail_early:
    log_kv(LOG_ERROR, "ingest cannot start", "error", err, NULL);
    ingest_free(in);
    return 1;
}

const struct worker_def ingest_worker = { "ingest", ingest_keys, ingest_run };
