/* process — what a process sets up once, before it starts any thread, and
 * tears down once every thread it started has been joined.
 *
 * The global initialisers of our libraries (GMime, libcurl, OpenSSL) are not
 * safe to call while other threads run, and libuv reads UV_THREADPOOL_SIZE
 * from the environment, which setenv() may not touch while threads read it.
 * So main() calls process_init() first, workers and library code never call
 * a global initialiser, and unit tests and tools call process_init() too.
 *
 * Signals: with PROCESS_STOP_SIGNALS, SIGTERM and SIGINT are blocked in the
 * calling thread and so in every thread created after it (ours, librdkafka's,
 * libuv's, GLib's); the main thread receives them in process_wait_stop().  No
 * handler runs asynchronously inside a worker.  SIGPIPE is always ignored:
 * peers hang up, and writes report EPIPE. */
#ifndef MF_PROCESS_H
#define MF_PROCESS_H
#include <stdatomic.h>
#include <stdint.h>

/* The flag every worker polls; set once to ask the process to drain and stop.
 * Atomic because threads share it (set by main or by a failing worker). */
typedef atomic_int stop_flag_t;

enum {
    PROCESS_STOP_SIGNALS = 1,   /* block SIGTERM/SIGINT: process_wait_stop() takes them */
};

/* Call from main before any thread exists.  Idempotent within one thread. */
void process_init(unsigned flags);
/* Returns once SIGTERM/SIGINT arrived (the flag is then set) or *stop was set
 * by someone else.  Needs process_init(PROCESS_STOP_SIGNALS). */
void process_wait_stop(stop_flag_t *stop);
/* Call after every thread has been joined (library state is freed). */
void process_shutdown(void);

/* The shutdown grace ([mailfleet] shutdown_grace, default 10 s): once a stop
 * is asked for, the process must be gone within it, whatever the state of
 * its peers (a Kafka cluster that is down).  Blocking calls at shutdown
 * (flush, consumer close) take what is left of it; calls a worker may be in
 * when the stop comes (broker metadata, offsets) take at most half of it.
 * Set by main before threads start. */
#define PROCESS_DEFAULT_GRACE_MS 10000
void process_set_grace_ms(int64_t ms);
int64_t process_grace_ms(void);
/* Milliseconds left of the grace since the stop (the whole grace before). */
int64_t process_grace_left_ms(void);

#endif
