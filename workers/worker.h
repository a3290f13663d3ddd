/* worker — what every worker exposes to the mailfleet binary.
 *
 * A worker runs until *stop becomes non-zero, then drains and returns 0
 * (or non-zero on a fatal error).  In `mailfleet run` all workers share one
 * process, one config and one HTTP server; alone, each has its own HTTP
 * server on its section's metrics_listen. */
#ifndef MF_WORKER_H
#define MF_WORKER_H
#include "stop.h"   /* stop_flag_t */
#include "config.h"

struct http_server;

struct worker_env {
    const struct config *cfg;
    struct http_server *http;          /* /metrics, /healthz, /readyz + routes */
    struct http_server *public_http;   /* links, unsubscribe, API (if public_http) */
    stop_flag_t *stop;                 /* set on SIGTERM/SIGINT or a worker failure */
    int all_in_one;                    /* 1 under `mailfleet run` */
    atomic_int *started;               /* workers that called worker_started() */
};

/* A worker calls this once its routes, readiness checks and consumers are in
 * place: /readyz answers 503 until every worker of the process has. */
void worker_started(struct worker_env *env);

struct worker_def {
    const char *name;                              /* "ingest" */
    const struct config_key *keys;                 /* its config table */
    int (*run)(struct worker_env *env);
    int public_http;   /* 1: needs the public server ([mailfleet] public_listen
                          under `run`, [<worker>] public_listen alone) */
};

#endif
