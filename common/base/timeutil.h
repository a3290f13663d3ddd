/* timeutil — wall and monotonic clocks, RFC 3339 UTC timestamps with ms,
 * durations ("250ms", "5m", "36h", "14d"). */
#ifndef MF_TIMEUTIL_H
#define MF_TIMEUTIL_H
#include "stop.h"
#include <stddef.h>
#include <stdint.h>

int64_t now_ms(void);            /* wall clock, ms since the epoch */
int64_t mono_ms(void);           /* monotonic, ms */
int64_t mono_us(void);
/* "2026-11-26T10:00:00.123Z"; buf >= 25 bytes.  Returns buf. */
char *rfc3339_ms(int64_t ms, char *buf, size_t len);
/* Parses RFC 3339 (Z or +hh:mm, optional fraction); -1 on error. */
int64_t rfc3339_parse(const char *s);
/* "90", "90s", "250ms", "5m", "2h", "14d" -> ms; plain number = seconds.  -1 on error. */
int64_t duration_parse_ms(const char *s);

/* Sleeps ms, waking every 50 ms to look at *stop (the worker's stop flag);
 * returns 1 if it returned early because *stop was set, else 0.  stop may
 * be NULL (a plain sleep).  The one way a worker waits. */
int sleep_unless_stopped(int64_t ms, stop_flag_t *stop);

#endif
