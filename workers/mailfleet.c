/* mailfleet — the multi-call binary.
 *
 *   mailfleet <worker> -c FILE     run one worker (ingest, transform, send, ...)
 *   mailfleet run -c FILE          every worker in one process (embedded default)
 *   mailfleet config check -c FILE validate a config without starting anything
 *   mailfleet config example       print every key with its default
 *   mailfleet version
 * and the admin verbs each worker adds (suppression, links, dlq, alarms, users).
 *
 * Process-wide set-up (libraries, signals) happens here, once, before any
 * thread starts, and is undone after every thread has been joined (see
 * common/process.h).  Workers always run in threads of their own; the main
 * thread receives SIGTERM/SIGINT, sets the stop flag each worker polls, and
 * joins them as they drain. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common_config.h"
#include "dev_secrets.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "process.h"
#include "strbuf.h"
#include "worker.h"
#include "admin.h"
#include "monitor/monitor.h"
#include "feedback/feedback.h"
#include "ingest/users.h"

extern const struct worker_def ingest_worker;
#include "transform/transform_worker.h"
#include "links/links.h"
#include "send/send.h"

#ifndef MAILFLEET_VERSION
#define MAILFLEET_VERSION "0.1.0"
#endif

/* Workers, in start order for `mailfleet run` (consumers before producers is
 * not needed: topics are durable). */
static const struct worker_def *const workers[] = {
    &feedback_worker,
    &monitor_worker,
    &ingest_worker,
    &transform_worker,
    &links_worker,
    &send_worker,
    NULL
};

/* Admin verbs: `mailfleet <verb> ...`. */
static const struct admin_verb *const verbs[] = {
    &alarms_verb,
    &suppression_verb,
    &retention_verb,
    &users_verb,
    &dlq_verb,
    &links_verb,
    &send_admin_verb,
    NULL
};

static stop_flag_t stop_flag;
static atomic_int started_count;
static int expected_count;

void worker_started(struct worker_env *env)
{
    atomic_fetch_add(env->started, 1);
}

static int all_started(void *opaque, char *why, size_t len)
{
    int n = atomic_load(&started_count);
    if (n < expected_count) {
        snprintf(why, len, "%d of %d workers started", n, expected_count);
        return 0;
    }
    return 1;
}

/* NULL-terminated list of every config table (common + each worker + verbs). */
static const struct config_key **all_tables(void)
{
    static const struct config_key *t[64];
    size_t n = 0;
    t[n++] = common_config_keys;
    for (size_t i = 0; workers[i]; i++)
        if (workers[i]->keys)
            t[n++] = workers[i]->keys;
    for (size_t i = 0; verbs[i]; i++)
        if (verbs[i]->keys)
            t[n++] = verbs[i]->keys;
    t[n] = NULL;
    return t;
}

static const char *config_arg(int argc, char **argv)
{
    for (int i = 1; i < argc - 1; i++)
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0)
            return argv[i + 1];
    return getenv("MAILFLEET_CONFIG");
}

struct config *mailfleet_load_config(int argc, char **argv)
{
    char err[512];
    const char *path = config_arg(argc, argv);
    struct config *cfg = config_load(path, (const struct config_key *const *)all_tables(), err,
                                     sizeof(err));
    if (!cfg) {
        fprintf(stderr, "mailfleet: config: %s\n", err);
        return NULL;
    }
    enum log_level lvl = log_level_parse(config_str(cfg, "mailfleet", "log_level"));
    log_init(NULL, (int)lvl < 0 ? LOG_INFO : lvl);
    return cfg;
}

/* mailfleet_load_config for a process that serves: also refuses the published
 * development secrets on a listener beyond loopback (dev_secrets.h). */
static struct config *load_serving_config(int argc, char **argv)
{
    struct config *cfg = mailfleet_load_config(argc, argv);
    char err[512];
    if (cfg && dev_secrets_check(cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "mailfleet: refusing to start: %s\n", err);
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

struct run_thread {
    pthread_t tid;
    const struct worker_def *def;
    struct worker_env env;
    int rc;
};

static void *run_thread_main(void *arg)
{
    struct run_thread *t = arg;
    log_set_worker(t->def->name);
    t->rc = t->def->run(&t->env);
    if (t->rc != 0) {
        log_kv(LOG_ERROR, "worker stopped with an error; stopping the process", NULL);
        atomic_store(&stop_flag, 1);
    }
    return NULL;
}

/* The metrics server (workers > 0) answers /readyz 503 until that many
 * workers have called worker_started(): the check is in place before the
 * server listens, so no request ever sees a /readyz without it. */
static struct http_server *start_http(const char *listen, enum http_exposure exposure, int workers)
{
    char err[256];
    const char *what = exposure == HTTP_PUBLIC ? "public" : "metrics";
    struct http_server *h = http_server_new(listen, exposure, 1 << 20, err, sizeof(err));
    if (h && workers) {
        expected_count = workers;
        http_ready_add(h, "workers", all_started, NULL);
    }
    if (!h || http_server_start(h, err, sizeof(err)) != 0) {
        log_kv(LOG_ERROR, "cannot start an HTTP server", "server", what, "error", err, NULL);
        http_server_free(h);
        return NULL;
    }
    return h;
}

/* Runs defs[0..n) in threads until SIGTERM/SIGINT or a worker fails, then
 * joins them.  Returns the OR of their exit codes. */
static int run_workers(const struct worker_def *const *defs, size_t n, const struct config *cfg,
                       struct http_server *http, struct http_server *pub, int all_in_one)
{
    struct run_thread *threads = xcalloc(n ? n : 1, sizeof(*threads));
    size_t started = 0;
    for (; started < n; started++) {
        struct run_thread *t = &threads[started];
        t->def = defs[started];
        t->env = (struct worker_env){ cfg, http, pub, &stop_flag, all_in_one, &started_count };
        if (pthread_create(&t->tid, NULL, run_thread_main, t) != 0) {
            log_kv(LOG_ERROR, "cannot start a worker thread", "worker", t->def->name, NULL);
            atomic_store(&stop_flag, 1);
            break;
        }
    }
    process_wait_stop(&stop_flag);
    /* Each worker drains within the grace; one that does not (a call
     * without a bound we missed) must not keep the process alive until
     * someone sends SIGKILL: say which, and leave. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    int64_t left = stop_grace_left_ms();
    deadline.tv_sec += left / 1000;
    deadline.tv_nsec += (left % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    int rc = started < n;
    for (size_t i = 0; i < started; i++) {
        if (pthread_timedjoin_np(threads[i].tid, NULL, &deadline) != 0) {
            log_kv(LOG_ERROR, "worker did not stop within [mailfleet] shutdown_grace; exiting without it",
                   "worker", threads[i].def->name, NULL);
            _exit(1);
        }
        rc |= threads[i].rc;
    }
    free(threads);
    return rc;
}

static int cmd_run_all(int argc, char **argv)
{
    struct config *cfg = load_serving_config(argc, argv);
    if (!cfg)
        return 2;
    log_init("mailfleet", log_level_parse(config_str(cfg, "mailfleet", "log_level")));
    stop_set_grace_ms(config_duration_ms(cfg, "mailfleet", "shutdown_grace"));
    int want_public = 0;
    size_t n = 0;
    for (; workers[n]; n++)
        want_public |= workers[n]->public_http;
    struct http_server *http = start_http(config_str(cfg, "mailfleet", "http_listen"), HTTP_INTERNAL, (int)n);
    struct http_server *pub = want_public && http
        ? start_http(config_str(cfg, "mailfleet", "public_listen"), HTTP_PUBLIC, 0) : NULL;
    if (!http || (want_public && !pub)) {
        http_server_free(http);
        config_free(cfg);
        return 1;
    }
    log_kv(LOG_INFO, "mailfleet running", "version", MAILFLEET_VERSION, "http",
           config_str(cfg, "mailfleet", "http_listen"), NULL);
    int rc = run_workers(workers, n, cfg, http, pub, 1);
    log_kv(LOG_INFO, "mailfleet stopped", NULL);
    http_server_free(pub);
    http_server_free(http);
    config_free(cfg);
    return rc ? 1 : 0;
}

static int cmd_worker(const struct worker_def *def, int argc, char **argv)
{
    struct config *cfg = load_serving_config(argc, argv);
    if (!cfg)
        return 2;
    log_init(def->name, log_level_parse(config_str(cfg, "mailfleet", "log_level")));
    stop_set_grace_ms(config_duration_ms(cfg, "mailfleet", "shutdown_grace"));
    struct http_server *http = start_http(config_str(cfg, def->name, "metrics_listen"), HTTP_INTERNAL, 1);
    struct http_server *pub = def->public_http && http
        ? start_http(config_str(cfg, def->name, "public_listen"), HTTP_PUBLIC, 0) : NULL;
    if (!http || (def->public_http && !pub)) {
        http_server_free(http);
        config_free(cfg);
        return 1;
    }
    const struct worker_def *one[] = { def, NULL };
    int rc = run_workers(one, 1, cfg, http, pub, 0);
    http_server_free(pub);
    http_server_free(http);
    config_free(cfg);
    return rc;
}

static int cmd_config(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "example") == 0) {
        config_write_example((const struct config_key *const *)all_tables(), stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "check") == 0) {
        struct config *cfg = mailfleet_load_config(argc - 1, argv + 1);
        if (!cfg)
            return 2;
        printf("%s: ok\n", config_path(cfg) ? config_path(cfg) : "(defaults)");
        config_free(cfg);
        return 0;
    }
    fprintf(stderr, "usage: mailfleet config check -c FILE | config example\n");
    return 2;
}

static void usage(void)
{
    fprintf(stderr, "usage: mailfleet <command> [-c FILE] ...\n\nworkers:\n");
    for (size_t i = 0; workers[i]; i++)
        fprintf(stderr, "  %-12s run the %s worker\n", workers[i]->name, workers[i]->name);
    fprintf(stderr, "  %-12s every worker in one process\n\nadmin:\n", "run");
    for (size_t i = 0; verbs[i]; i++)
        fprintf(stderr, "  %-12s %s\n", verbs[i]->name, verbs[i]->help);
    fprintf(stderr, "  %-12s %s\n  %-12s %s\n", "config", "check -c FILE | example", "version",
            "print the version");
}

/* What argv asks for: a worker, `run`, or anything else (verbs, config). */
static const struct worker_def *worker_named(const char *cmd, int argc, char **argv)
{
    /* `mailfleet <worker> <subcommand>` (e.g. `send pause`) goes to the admin
     * verb of the same name when there is one; options (-c FILE) mean
     * running the worker. */
    int subcommand = argc > 2 && argv[2][0] != '-';
    for (size_t i = 0; subcommand && verbs[i]; i++)
        if (strcmp(cmd, verbs[i]->name) == 0)
            return NULL;
    for (size_t i = 0; workers[i]; i++)
        if (strcmp(cmd, workers[i]->name) == 0)
            return workers[i];
    return NULL;
}

static int dispatch(const char *cmd, const struct worker_def *w, int argc, char **argv)
{
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("mailfleet %s\n", MAILFLEET_VERSION);
        return 0;
    }
    if (strcmp(cmd, "config") == 0)
        return cmd_config(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return cmd_run_all(argc - 1, argv + 1);
    if (w)
        return cmd_worker(w, argc - 1, argv + 1);
    for (size_t i = 0; verbs[i]; i++)
        if (strcmp(cmd, verbs[i]->name) == 0)
            return verbs[i]->main(argc - 1, argv + 1);
    usage();
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    const char *cmd = argv[1];
    const struct worker_def *w = worker_named(cmd, argc, argv);
    /* Admin verbs keep SIGTERM's default action: they have no loop to drain. */
    process_init(w || strcmp(cmd, "run") == 0 ? PROCESS_STOP_SIGNALS : 0);
    int rc = dispatch(cmd, w, argc, argv);
    process_shutdown();
    return rc;
}
