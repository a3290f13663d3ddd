/* stop — the flag every worker polls, and the shutdown grace.
 *
 * The flag is set once to ask the process to drain and stop (by main on
 * SIGTERM/SIGINT, or by a failing worker); atomic because threads share it.
 *
 * The grace ([mailfleet] shutdown_grace, default 10 s): once a stop is asked
 * for, the process must be gone within it, whatever the state of its peers
 * (a Kafka cluster that is down).  Blocking calls at shutdown (flush,
 * consumer close) take what is left of it; calls a worker may be in when the
 * stop comes (broker metadata, offsets) take at most half of it.  Main sets
 * it before threads start and starts the countdown when the stop comes. */
#ifndef MF_STOP_H
#define MF_STOP_H
#include <stdatomic.h>
#include <stdint.h>

typedef atomic_int stop_flag_t;

#define STOP_DEFAULT_GRACE_MS 10000
void stop_set_grace_ms(int64_t ms);    /* <= 0: the default */
int64_t stop_grace_ms(void);
void stop_grace_begin(void);           /* the stop was asked for: the countdown starts */
/* Milliseconds left of the grace since the stop (the whole grace before). */
int64_t stop_grace_left_ms(void);
/* 1 once the stop was asked for (stop_grace_begin): calls that would wait
 * on a peer without bound (a Kafka commit) give up within the grace. */
int stop_begun(void);

#endif
