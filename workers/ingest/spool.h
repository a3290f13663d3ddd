/* spool — the durable hand-off behind ingest's 250.
 *
 * spool_put() (called from thread-pool threads, many at once) stores the raw
 * message under "<yyyy-mm-dd>/<shard>/<id>.eml" in the incoming store, then
 * produces its records: one mailfleet.inbound record for the capture
 * recipients, one mailfleet.feedback record (kind dsn) for the feedback
 * recipients and one (kind unsubscribe, method mailto) per unsubscribe
 * recipient.  It returns only when both are durable.  Both are group
 * commits: the raw mails of the threads that finish at the same time
 * become durable with one syncfs (store.h), their records with one queue
 * transaction (bus_local).
 *
 * Direct mode (local bus, no spool): records go straight to the bus; a store
 * or bus failure answers 451 4.3.0.
 * Forwarding mode (a spool queue, always with Kafka): records go to the local
 * spool queue (topic ingest.spool, real topic in header mf.topic) and a
 * forwarder thread relays them with bus_produce (Kafka: PERSISTED) before it
 * commits the spool consumer.  When the incoming store fails the raw message
 * goes to the spool store and the forwarder uploads it before relaying, so a
 * broker or store outage never refuses mail; only a spool failure gives 451.
 *
 * Dedupe: SHA-256 over content and envelope, kept in a kv db for dedupe_ttl;
 * an identical retry is answered with the first id and not enqueued again. */
#ifndef MF_INGEST_SPOOL_H
#define MF_INGEST_SPOOL_H
#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "stop.h"

struct spool;
struct rules;
struct smtp_message;
struct bus_options;
struct store;

struct spool_conf {
    const char *bus_uri;
    /* The incoming store, and the store for raw mail while it fails (only
     * with spool_uri).  spool_open takes both, even when it fails. */
    struct store *store;
    struct store *spool_store;
    const char *spool_uri;         /* "local:<dir>" = forwarding mode, NULL/"" = direct */
    const char *state_dir;         /* dedupe db lives in <state_dir>/ingest */
    int64_t dedupe_ttl_ms;         /* 0 = no dedupe */
    int produce_timeout_ms;
    size_t batch_max;              /* forwarder: records per batch ([mailfleet] batch_max) */
    int64_t stuck_ms;              /* forwarder: worker_loop_stuck_ms */
    const struct bus_options *bus_opt;
    /* Set when the forwarder's bus fails for good (a Kafka producer in a
     * fatal state): the process is to exit and be restarted; the spool
     * keeps every mail for the next one. */
    stop_flag_t *process_stop;
};

struct spool_result {
    int code;                      /* 250 or 451 */
    char text[192];
    char id[ID_LEN + 1];
    int duplicate;
};

struct spool *spool_open(const struct spool_conf *conf, char *err, size_t errlen);
void spool_close(struct spool *sp);   /* stops the forwarder; accepts NULL */

/* Thread-safe.  Always fills res. */
void spool_put(struct spool *sp, const struct smtp_message *m, const struct rules *rules,
               struct spool_result *res);

int spool_forwarding(const struct spool *sp);
/* 1 once the forwarder stopped on a bus that failed for good. */
int spool_failed(const struct spool *sp);
/* Records waiting in the spool and the age of the oldest (0 when none). */
int spool_backlog(struct spool *sp, int64_t *records, double *oldest_age_s);
/* 0 while the forwarder's loop is stuck (worker_loop_live_check: no
 * progress in one batch for conf.stuck_ms; it waits up to 6 min for
 * Kafka's delivery reports after its last upload, so keep stuck_ms above). */
int spool_alive(struct spool *sp, char *why, size_t whylen);

#endif
