/* transport — dispatch by URI scheme, and the curl multi scheduler.
 *
 * The scheduler keeps one CURLM per transport (so connections survive from
 * batch to batch: an SMTP relay sees a few long sessions, not a connect per
 * message) and starts jobs in order, skipping over a job whose recipient
 * domain is at its concurrency cap so one slow domain does not hold the
 * others back. */
#include "transport_impl.h"
#include "address.h"
#include "log.h"
#include "ratelimit.h"
#include "strbuf.h"
#include "timeutil.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct transport {
    const struct transport_ops *ops;
    void *impl;
};

static const struct transport_ops *const backends[] = {
    &transport_outbox_ops, &transport_smtp_ops, &transport_ses_ops, NULL
};

const char *const transport_hold_reasons[] = {
    "sending_paused", "account_suspended", "quota", "throttled", "sender_not_verified",
    "identity_not_verified", "mail_from_not_verified", "configuration", "access_denied", "credentials", NULL
};

struct transport *transport_open(const char *uri, const struct transport_config *tc, char *err,
                                 size_t errlen)
{
    for (size_t i = 0; backends[i]; i++) {
        size_t n = strlen(backends[i]->scheme);
        if (strncmp(uri, backends[i]->scheme, n) == 0 && (uri[n] == ':' || uri[n] == 's')) {
            void *impl = backends[i]->open(uri, tc, err, errlen);
            if (!impl)
                return NULL;
            struct transport *t = xcalloc(1, sizeof(*t));
            t->ops = backends[i];
            t->impl = impl;
            return t;
        }
    }
    snprintf(err, errlen, "transport %s: expected outbox:<dir>, smtp://host:port, smtps://host:port "
             "or ses:<region>", uri);
    return NULL;
}

void transport_free(struct transport *t)
{
    if (!t)
        return;
    t->ops->free(t->impl);
    free(t);
}

const char *transport_name(const struct transport *t) { return t->ops->scheme; }
const char *transport_peer(const struct transport *t) { return t->ops->peer(t->impl); }

int transport_send(struct transport *t, struct transport_job *jobs, size_t n, struct ratelimit *rl,
                   transport_done_cb done, stop_flag_t *stop)
{
    for (size_t i = 0; i < n; i++) {
        jobs[i].result = TRANSPORT_NOT_RUN;
        jobs[i].code = 0;
        jobs[i].status[0] = jobs[i].response[0] = '\0';
        jobs[i].hold_reason = NULL;
        jobs[i].elapsed_us = 0;
    }
    struct transport_run run = { rl, done, stop };
    return t->ops->send(t->impl, jobs, n, &run);
}

void transport_parse_reply(const char *line, int *code, char status[16])
{
    int c = 0;
    size_t i = 0;
    while (i < 3 && isdigit((unsigned char)line[i]))
        c = c * 10 + (line[i++] - '0');
    if (i != 3)
        c = 0;
    *code = c;
    /* Enhanced status (RFC 3463): class "." subject "." detail after the code. */
    const char *p = line + i;
    while (*p == ' ' || *p == '-')
        p++;
    size_t n = 0;
    int dots = 0, ok = (*p == '2' || *p == '4' || *p == '5') && p[1] == '.';
    while (ok && n < 15 && (isdigit((unsigned char)p[n]) || p[n] == '.')) {
        dots += p[n] == '.';
        n++;
    }
    if (ok && dots == 2 && n >= 5 && p[n - 1] != '.' && (p[n] == ' ' || p[n] == '\0' || p[n] == '\r')) {
        memcpy(status, p, n);
        status[n] = '\0';
        return;
    }
    snprintf(status, 16, "%d.0.0", c >= 200 && c < 600 ? c / 100 : 4);
}

void transport_job_result(struct transport_job *job, enum transport_result r, int code,
                          const char *status, const char *response)
{
    job->result = r;
    job->code = code;
    snprintf(job->status, sizeof(job->status), "%s", status);
    /* One line only: replies end up in events and logs. */
    size_t o = 0;
    for (const char *p = response; *p && o < sizeof(job->response) - 1; p++)
        job->response[o++] = (*p == '\r' || *p == '\n') ? ' ' : *p;
    while (o > 0 && job->response[o - 1] == ' ')
        o--;
    job->response[o] = '\0';
}

/* ---- curl multi scheduler ---- */

struct transport_curl {
    CURLM *multi;
    CURL **idle;       /* easy handles ready for reuse */
    size_t n_idle;
    int connections;
};

struct running {
    CURL *easy;
    size_t job;
    void *state;
    int64_t start_us;
};

struct transport_curl *transport_curl_new(int connections)
{
    struct transport_curl *tc = xcalloc(1, sizeof(*tc));
    tc->connections = connections < 1 ? 1 : connections;
    tc->multi = curl_multi_init();
    if (!tc->multi)
        panic("%s: curl_multi_init failed", __func__);
    curl_multi_setopt(tc->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)tc->connections);
    curl_multi_setopt(tc->multi, CURLMOPT_MAXCONNECTS, (long)tc->connections);
    tc->idle = xcalloc((size_t)tc->connections, sizeof(CURL *));
    return tc;
}

void transport_curl_free(struct transport_curl *tc)
{
    if (!tc)
        return;
    for (size_t i = 0; i < tc->n_idle; i++)
        curl_easy_cleanup(tc->idle[i]);
    free(tc->idle);
    curl_multi_cleanup(tc->multi);
    free(tc);
}

static CURL *easy_get(struct transport_curl *tc)
{
    CURL *e = tc->n_idle ? tc->idle[--tc->n_idle] : curl_easy_init();
    if (!e)
        panic("%s: curl_easy_init failed", __func__);
    curl_easy_reset(e);
    return e;
}

static void easy_put(struct transport_curl *tc, CURL *e)
{
    if (tc->n_idle < (size_t)tc->connections)
        tc->idle[tc->n_idle++] = e;
    else
        curl_easy_cleanup(e);
}

static int domain_busy(const struct running *run, size_t n_run, const struct transport_job *jobs,
                       const char *domain, int cap)
{
    int c = 0;
    for (size_t i = 0; i < n_run; i++)
        if (strcasecmp(address_domain(jobs[run[i].job].rcpt), domain) == 0)
            c++;
    return c >= cap;
}

/* One transport_curl_run call: its jobs and how far they have got. */
struct curl_batch {
    struct transport_curl *tc;
    struct transport_job *jobs;
    size_t n;
    int per_domain;
    const struct transport_curl_ops *ops;
    void *impl;
    const struct transport_run *run;
    struct running *active;     /* tc->connections slots */
    unsigned char *started;     /* per job */
    size_t n_active, first_pending, finished;
    int held;                   /* a job ended TRANSPORT_HOLD: start no more */
};

static void batch_job_done(struct curl_batch *b, struct transport_job *job, int64_t start_us)
{
    job->elapsed_us = mono_us() - start_us;
    b->finished++;
    if (b->run->done)
        b->run->done(job->opaque, job);
}

/* The first job not started whose domain is under its cap; b->n if none. */
static size_t batch_pick(const struct curl_batch *b)
{
    for (size_t j = b->first_pending; j < b->n; j++)
        if (!b->started[j] &&
            !domain_busy(b->active, b->n_active, b->jobs, address_domain(b->jobs[j].rcpt), b->per_domain))
            return j;
    return b->n;
}

/* Starts what the connection limit, domain caps and rate allow.  Returns
 * how long the rate limiter asks to wait (us), or -1. */
static int64_t batch_start(struct curl_batch *b)
{
    while (!b->held && b->n_active < (size_t)b->tc->connections && b->first_pending < b->n) {
        size_t pick = batch_pick(b);
        if (pick == b->n)
            break;
        int64_t w = ratelimit_take(b->run->rl, mono_us());
        if (w > 0)
            return w;
        b->started[pick] = 1;
        while (b->first_pending < b->n && b->started[b->first_pending])
            b->first_pending++;
        CURL *e = easy_get(b->tc);
        void *state = NULL;
        int64_t t0 = mono_us();
        if (b->ops->setup(b->impl, e, &b->jobs[pick], &state) != 0) {
            easy_put(b->tc, e);
            batch_job_done(b, &b->jobs[pick], t0);
            continue;
        }
        curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)(uintptr_t)b->n_active);
        b->active[b->n_active++] = (struct running){ e, pick, state, t0 };
        curl_multi_add_handle(b->tc->multi, e);
    }
    return -1;
}

/* Hands every finished transfer to ops->finish and frees its slot. */
static void batch_reap(struct curl_batch *b)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(b->tc->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *e = msg->easy_handle;
        CURLcode rc = msg->data.result;
        size_t k = 0;
        while (k < b->n_active && b->active[k].easy != e)
            k++;
        if (k == b->n_active)
            panic("%s: finished handle not in the active set", __func__);
        struct running r = b->active[k];
        b->active[k] = b->active[--b->n_active];
        curl_multi_remove_handle(b->tc->multi, e);
        struct transport_job *job = &b->jobs[r.job];
        b->ops->finish(b->impl, e, rc, job, r.state);
        b->held |= job->result == TRANSPORT_HOLD;
        easy_put(b->tc, e);
        batch_job_done(b, job, r.start_us);
    }
}

int transport_curl_run(struct transport_curl *tc, int per_domain, struct transport_job *jobs,
                       size_t n, const struct transport_curl_ops *ops, void *impl,
                       const struct transport_run *run)
{
    struct curl_batch b = { .tc = tc, .jobs = jobs, .n = n, .per_domain = per_domain < 1 ? 1 : per_domain,
                            .ops = ops, .impl = impl, .run = run,
                            .active = xcalloc((size_t)tc->connections, sizeof(*b.active)),
                            .started = xcalloc(n ? n : 1, 1) };

    while (b.finished < n) {
        int stopping = run->stop && *run->stop;
        int64_t wait_us = stopping ? -1 : batch_start(&b);
        if ((stopping || b.held) && b.n_active == 0) {
            /* Jobs never started stay NOT_RUN: the caller does not commit
             * them (stopping) or tries them again after the hold. */
            break;
        }
        int still = 0;
        curl_multi_perform(tc->multi, &still);
        batch_reap(&b);
        if (b.finished >= n)
            break;
        int timeout_ms = 100;
        if (wait_us >= 0 && wait_us / 1000 < timeout_ms)
            timeout_ms = (int)(wait_us / 1000) + 1;
        if (b.n_active > 0)
            curl_multi_poll(tc->multi, NULL, 0, timeout_ms, NULL);
        else if (wait_us > 0)
            usleep((useconds_t)(wait_us < 100000 ? wait_us : 100000));
        else if (b.first_pending >= n)
            break;   /* nothing running and nothing startable: cannot happen */
    }
    free(b.active);
    free(b.started);
    return 0;
}
