/* send_hold — see send_hold.h.  One mutex guards the state and the gauges
 * it sets, so an answer and a refusal racing in two lanes leave the gauges
 * as the state they leave. */
#include "send_hold.h"
#include "log.h"
#include "metrics.h"
#include "strbuf.h"
#include "timeutil.h"
#include "transport.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEND_HOLD_THROTTLED_MS 1000

struct send_hold {
    pthread_mutex_t lock;
    int64_t first_ms, max_ms;
    int held;               /* from a refusal until the hold ends */
    int64_t since;          /* mono ms: when the hold began */
    int64_t until;          /* mono ms: no new transfer before this */
    int64_t last_wait;      /* the current hold's last wait */
    size_t wait_reason;     /* the reason last_wait was for */
    size_t reason;          /* index into transport_hold_reasons while held */
    size_t n_reasons;
    struct metric **paused, **refusals;
};

struct send_hold *send_hold_new(const char *transport, int64_t first_ms, int64_t max_ms)
{
    struct send_hold *h = xcalloc(1, sizeof(*h));
    pthread_mutex_init(&h->lock, NULL);
    h->first_ms = first_ms < 1 ? 1 : first_ms;
    h->max_ms = max_ms < h->first_ms ? h->first_ms : max_ms;
    while (transport_hold_reasons[h->n_reasons])
        h->n_reasons++;
    h->paused = xcalloc(h->n_reasons, sizeof(*h->paused));
    h->refusals = xcalloc(h->n_reasons, sizeof(*h->refusals));
    for (size_t i = 0; i < h->n_reasons; i++) {
        char labels[160];
        snprintf(labels, sizeof(labels), "transport=\"%s\",reason=\"%s\"", transport, transport_hold_reasons[i]);
        h->paused[i] = metric_gauge("mailfleet_send_transport_paused",
                                    "1 while the transport refuses our account for this reason "
                                    "(from the refusal until the transport takes our requests again)",
                                    labels);
        h->refusals[i] = metric_counter("mailfleet_send_transport_refusals_total",
                                        "answers that refused our account rather than a recipient", labels);
        metric_set(h->paused[i], 0);
    }
    return h;
}

void send_hold_free(struct send_hold *h)
{
    if (!h)
        return;
    pthread_mutex_destroy(&h->lock);
    free(h->paused);
    free(h->refusals);
    free(h);
}

static size_t reason_index(const struct send_hold *h, const char *reason)
{
    for (size_t i = 0; i < h->n_reasons; i++)
        if (reason && strcmp(transport_hold_reasons[i], reason) == 0)
            return i;
    panic("%s: unknown hold reason %s", __func__, reason ? reason : "(null)");
}

/* The first wait of a hold for reason r. */
static int64_t base_wait(const struct send_hold *h, size_t r)
{
    int64_t w = strcmp(transport_hold_reasons[r], "throttled") == 0 ? SEND_HOLD_THROTTLED_MS : h->first_ms;
    return w > h->max_ms ? h->max_ms : w;
}

int64_t send_hold_refused(struct send_hold *h, const char *reason, int64_t started, int64_t now)
{
    size_t r = reason_index(h, reason);
    int64_t wait = 0;
    pthread_mutex_lock(&h->lock);
    metric_inc(h->refusals[r]);
    if (h->held)
        metric_set(h->paused[h->reason], 0);
    metric_set(h->paused[r], 1);
    h->reason = r;
    if (!h->held) {
        h->held = 1;
        h->since = now;
        wait = base_wait(h, r);
    } else if (started >= h->until) {
        /* The next try was refused too: a longer wait, or a new reason's
         * own base (a second-long throttle says nothing of a pause). */
        wait = r == h->wait_reason ? h->last_wait * 2 : base_wait(h, r);
        if (wait > h->max_ms)
            wait = h->max_ms;
    }
    if (wait > 0) {
        h->last_wait = wait;
        h->wait_reason = r;
        h->until = now + wait;
    }
    pthread_mutex_unlock(&h->lock);
    return wait;
}

/* Ends the hold if there is one and cond holds; under the lock. */
static int end_if(struct send_hold *h, int cond)
{
    if (!h->held || !cond)
        return 0;
    metric_set(h->paused[h->reason], 0);
    h->held = 0;
    h->since = h->until = h->last_wait = 0;
    return 1;
}

int send_hold_answered(struct send_hold *h, int64_t started)
{
    pthread_mutex_lock(&h->lock);
    int ended = end_if(h, started >= h->since);
    pthread_mutex_unlock(&h->lock);
    return ended;
}

int send_hold_batch_done(struct send_hold *h, int64_t started)
{
    pthread_mutex_lock(&h->lock);
    int ended = end_if(h, started >= h->until);
    pthread_mutex_unlock(&h->lock);
    return ended;
}

int64_t send_hold_wait(struct send_hold *h, int64_t now)
{
    pthread_mutex_lock(&h->lock);
    int64_t w = h->held && h->until > now ? h->until - now : 0;
    pthread_mutex_unlock(&h->lock);
    return w;
}

int send_hold_ready_check(void *opaque, char *why, size_t whylen)
{
    struct send_hold *h = opaque;
    int64_t now = mono_ms();
    pthread_mutex_lock(&h->lock);
    int held = h->held;
    if (held) {
        int64_t left = h->until > now ? h->until - now : 0;
        snprintf(why, whylen, "the transport refuses our account (%s); no recipient is bounced; next try in %lld s",
                 transport_hold_reasons[h->reason], (long long)((left + 999) / 1000));
    }
    pthread_mutex_unlock(&h->lock);
    return !held;
}
