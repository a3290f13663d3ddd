/* ratelimit — a token bucket (msgs/s with a burst), shared by every sending
 * thread of the worker.  Thread-safe. */
#ifndef MF_SEND_RATELIMIT_H
#define MF_SEND_RATELIMIT_H
#include <stdint.h>

struct ratelimit;

/* rate: tokens per second (<= 0 = unlimited); burst: bucket size (>= 1).
 * The bucket starts full. */
struct ratelimit *ratelimit_new(double rate, double burst);
void ratelimit_free(struct ratelimit *rl);   /* accepts NULL */

/* Takes one token at now_us (monotonic µs).  Returns 0 when taken, else the
 * number of µs to wait before one is available (nothing taken). */
int64_t ratelimit_take(struct ratelimit *rl, int64_t now_us);

/* Tokens in the bucket at now_us (for the gauge); rate and burst as set. */
double ratelimit_tokens(struct ratelimit *rl, int64_t now_us);
double ratelimit_rate(const struct ratelimit *rl);
double ratelimit_burst(const struct ratelimit *rl);

#endif
