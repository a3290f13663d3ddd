/* metrics — a process-wide registry rendered in the Prometheus text format.
 *
 * A series is a metric family name plus a fixed label set written as text
 * ("reason=\"size\",worker=\"ingest\"", or NULL).  Getting a series twice
 * returns the same one; keep the pointer.  Names follow mailfleet_* with base
 * units, counters end in _total.  Updates are thread-safe and lock-free for
 * counters and gauges. */
#ifndef MF_METRICS_H
#define MF_METRICS_H
#include <stddef.h>

struct metric;
struct strbuf;

struct metric *metric_counter(const char *name, const char *help, const char *labels);
struct metric *metric_gauge(const char *name, const char *help, const char *labels);
/* buckets: upper bounds ascending (no +Inf); n <= 32. */
struct metric *metric_histogram(const char *name, const char *help, const char *labels,
                                const double *buckets, size_t n);

void metric_inc(struct metric *m);                 /* counter += 1 */
void metric_add(struct metric *m, double v);       /* counter/gauge += v */
void metric_set(struct metric *m, double v);       /* gauge = v */
void metric_observe(struct metric *m, double v);   /* histogram */
double metric_value(const struct metric *m);       /* counter/gauge; tests */

/* Gauges computed at scrape time: cb is called under the registry lock and
 * must only call metric_set on series it owns. */
typedef void (*metrics_collect_cb)(void *opaque);
void metrics_on_collect(metrics_collect_cb cb, void *opaque);

void metrics_render(struct strbuf *out);
/* Standard latency buckets in seconds, 0.5 ms .. 10 s. */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_buckets_n;

#endif
