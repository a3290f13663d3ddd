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

#include "stop.h"   /* stop_flag_t, the grace */

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

/* The memory limit of the process's cgroup in bytes, 0 when there is none
 * or it cannot be read: cgroup v2 <root>/memory.max ("max" = none), else v1
 * <root>/memory/memory.limit_in_bytes (a value near 2^63 = none).  root:
 * the cgroup mount, NULL = /sys/fs/cgroup (or $MAILFLEET_CGROUP_ROOT, for
 * an unusual mount and for tests). */
uint64_t process_memory_limit(const char *root);


#endif
