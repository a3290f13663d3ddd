/* ratelimit — token bucket.  Refill is computed lazily from the elapsed time
 * on every call, so there is no timer thread; a mutex is enough because a
 * take is a few arithmetic operations next to a network round trip. */
#include "ratelimit.h"
#include "strbuf.h"

#include <pthread.h>
#include <stdlib.h>

struct ratelimit {
    pthread_mutex_t mu;
    double rate, burst;
    double tokens;
    int64_t last_us;     /* time of the last refill; -1 = never */
};

struct ratelimit *ratelimit_new(double rate, double burst)
{
    struct ratelimit *rl = xcalloc(1, sizeof(*rl));
    pthread_mutex_init(&rl->mu, NULL);
    rl->rate = rate;
    rl->burst = burst < 1 ? 1 : burst;
    rl->tokens = rl->burst;
    rl->last_us = -1;
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}

static void refill(struct ratelimit *rl, int64_t now_us)
{
    if (rl->last_us >= 0 && now_us > rl->last_us) {
        rl->tokens += (double)(now_us - rl->last_us) * rl->rate / 1e6;
        if (rl->tokens > rl->burst)
            rl->tokens = rl->burst;
    }
    if (rl->last_us < 0 || now_us > rl->last_us)
        rl->last_us = now_us;
}

int64_t ratelimit_take(struct ratelimit *rl, int64_t now_us)
{
    if (!rl || rl->rate <= 0)
        return 0;
    pthread_mutex_lock(&rl->mu);
    refill(rl, now_us);
    int64_t wait = 0;
    if (rl->tokens >= 1) {
        rl->tokens -= 1;
    } else {
        wait = (int64_t)((1 - rl->tokens) * 1e6 / rl->rate) + 1;
    }
    pthread_mutex_unlock(&rl->mu);
    return wait;
}

double ratelimit_tokens(struct ratelimit *rl, int64_t now_us)
{
    if (!rl || rl->rate <= 0)
        return 0;
    pthread_mutex_lock(&rl->mu);
    refill(rl, now_us);
    double t = rl->tokens;
    pthread_mutex_unlock(&rl->mu);
    return t;
}

double ratelimit_rate(const struct ratelimit *rl) { return rl ? rl->rate : 0; }
double ratelimit_burst(const struct ratelimit *rl) { return rl ? rl->burst : 0; }
