/* links_events — the Download events, off the request path.
 *
 * A request queues its event and answers at once; one thread produces
 * whatever piled up in one bus_produce (one local-queue commit, one Kafka
 * batch), so no download waits for the bus and the bus sees a few large
 * writes instead of one per download.  Events are best effort (the
 * download already happened): at LINKS_EVENTS_MAX queued, newer ones are
 * dropped and counted, and a batch the bus refuses is logged, dropped and
 * counted whole (Kafka may have taken some of it).  Two queue buffers are
 * allocated once and swapped: nothing is allocated per batch.
 * Stopping produces what is queued first. */
#ifndef MF_LINKS_EVENTS_H
#define MF_LINKS_EVENTS_H
#include <stddef.h>

#define LINKS_EVENTS_MAX 10000

struct bus;
struct links_events;

/* threaded 0: no thread, links_events_add produces each event at once
 * (the test and fuzzing gateway, links_gateway_new). */
struct links_events *links_events_start(struct bus *bus, int threaded);
/* Takes value (malloc'd); key is copied. */
void links_events_add(struct links_events *e, const char *key, char *value, size_t len);
void links_events_stop(struct links_events *e);   /* accepts NULL */

#endif
