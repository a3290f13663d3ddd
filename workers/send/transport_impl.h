/* transport_impl — the backend interface behind transport.h, and the curl
 * multi scheduler the smtp and ses backends share.  Only transport*.c
 * include this. */
#ifndef MF_SEND_TRANSPORT_IMPL_H
#define MF_SEND_TRANSPORT_IMPL_H
#include "transport.h"
#include <curl/curl.h>

struct transport_run {
    struct ratelimit *rl;
    transport_done_cb done;
    stop_flag_t *stop;
};

struct transport_ops {
    const char *scheme;           /* "outbox", "smtp", "ses" */
    void *(*open)(const char *uri, const struct transport_config *tc, char *err, size_t errlen);
    void (*free)(void *impl);
    const char *(*peer)(void *impl);
    int (*send)(void *impl, struct transport_job *jobs, size_t n, const struct transport_run *run);
};

extern const struct transport_ops transport_outbox_ops;
extern const struct transport_ops transport_smtp_ops;
extern const struct transport_ops transport_ses_ops;

/* A curl multi handle with its connection cache and reusable easy handles. */
struct transport_curl;

struct transport_curl_ops {
    /* Sets up e (already reset) for job; *state is the backend's per-job
     * data.  Returns 0, or <0 after filling job's result (not started). */
    int (*setup)(void *impl, CURL *e, struct transport_job *job, void **state);
    /* Fills job's result from the finished transfer and frees state. */
    void (*finish)(void *impl, CURL *e, CURLcode rc, struct transport_job *job, void *state);
};

struct transport_curl *transport_curl_new(int connections);
void transport_curl_free(struct transport_curl *tc);
/* Runs jobs with at most `connections` in flight and per_domain per
 * recipient domain, asking run->rl before each start. */
int transport_curl_run(struct transport_curl *tc, int per_domain, struct transport_job *jobs,
                       size_t n, const struct transport_curl_ops *ops, void *impl,
                       const struct transport_run *run);

/* Shared result helpers. */
void transport_job_result(struct transport_job *job, enum transport_result r, int code,
                          const char *status, const char *response);

#endif
