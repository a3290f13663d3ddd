/* bus — topics between workers, one API over two backends.
 *
 *   bus = local:<dir>        the durable local queue (LMDB): append-only log per
 *                            topic, committed offsets per consumer group, group
 *                            commit, one consumer per group at a time.
 *   bus = kafka:<bootstrap>  librdkafka: idempotent producer (acks=all,
 *                            murmur2_random), group consumers with manual commit,
 *                            read_committed, transactions.
 *
 * Producing is synchronous from the caller's view: bus_produce() returns 0
 * only once every record is durable (LMDB commit / Kafka PERSISTED delivery
 * report).  Many threads may produce at once; the local backend commits them
 * together (group commit), the Kafka backend pipelines them.
 *
 * Consumers poll one record at a time and commit explicitly after the output
 * is durable (one record, or a batch at once); uncommitted records are
 * redelivered after a restart. */
#ifndef MF_BUS_H
#define MF_BUS_H
#include <stddef.h>
#include <stdint.h>

struct bus;
struct bus_consumer;

/* Topics that are compacted by definition (DESIGN.md §5): the local queue
 * compacts them for every producer; Kafka topics are created with
 * cleanup.policy=compact (ops/k8s).  NULL-terminated. */
extern const char *const bus_compacted_topics[];

struct bus_header {
    const char *name;
    const void *value;
    size_t value_len;
};

/* A record to produce (borrowed pointers) or a consumed one (owned by the
 * record, freed by bus_record_free). */
struct bus_record {
    const char *topic;
    const void *key;       size_t key_len;     /* key may be NULL */
    const void *value;     size_t value_len;   /* value NULL = tombstone */
    const struct bus_header *headers; size_t n_headers;
    int64_t timestamp_ms;  /* 0 on produce = now */
    int32_t partition;     /* consumed: partition; produce: -1 = partitioner */
    int64_t offset;        /* consumed: offset */
    uint32_t epoch;        /* consumed: the consumer's assignment it came with
                            * (Kafka; bumped at every rebalance), else 0 */
};

struct bus_options {
    const char *client_id;                  /* e.g. "mailfleet-ingest" */
    const char *const *kafka_conf;          /* name, value pairs, NULL-terminated */
    const char *transactional_id;           /* kafka: enables transactions */
    const char *const *compacted_topics;    /* NULL-terminated; local compacts these */
    int64_t retention_ms;                   /* local: 0 = keep forever */
    uint64_t map_size;                      /* local: LMDB map size, 0 = default 8 GiB */
};

/* Returns NULL and fills err on failure (bad URI, cannot open, ...).  A
 * Kafka bus opens without any broker answering (bus_ready says so). */
struct bus *bus_open(const char *uri, const struct bus_options *opt, char *err, size_t errlen);
/* 1 when the bus can be used now; 0 with why (Kafka: no broker has answered
 * within the last few seconds: address, TLS or SASL settings, or an outage).
 * Cheap: for readiness checks. */
int bus_ready(struct bus *b, char *why, size_t len);
void bus_close(struct bus *b);   /* flushes; accepts NULL */
const char *bus_backend(const struct bus *b);   /* "local" or "kafka" */

/* Produces n records and waits until all are durable or timeout_ms passes.
 * Returns 0, or a negative errno-style code with a message in err. */
int bus_produce(struct bus *b, const struct bus_record *recs, size_t n, int timeout_ms,
                char *err, size_t errlen);

/* Header lookup on a consumed record; NULL if absent. */
const struct bus_header *bus_record_header(const struct bus_record *r, const char *name);
/* The header's value as a new NUL-terminated string (the caller frees it;
 * a value with a NUL in it reads as cut there); NULL if absent. */
char *bus_record_header_str(const struct bus_record *r, const char *name);
void bus_record_free(struct bus_record *r);

/* Consumer in `group` over topics (NULL-terminated).  from_beginning: where a
 * group with no committed offset starts (1 = earliest, 0 = latest).
 * Local: fails (NULL, err says why) if another process holds the group. */
struct bus_consumer *bus_consumer_new(struct bus *b, const char *group, const char *const *topics,
                                      int from_beginning, char *err, size_t errlen);
/* 1 = *out holds a record (free it), 0 = nothing within timeout, <0 = error. */
int bus_consumer_poll(struct bus_consumer *c, struct bus_record **out, int timeout_ms);
/* Commits the position after r (r->offset + 1 on r's topic/partition).
 * -ESTALE: r was read before a rebalance (Kafka) and is not committed; its
 * partition restarts from the group's committed offset, wherever it went. */
int bus_consumer_commit(struct bus_consumer *c, const struct bus_record *r);
/* Rewinds so the next poll returns r again (after a RETRY).  A record read
 * before a rebalance needs no rewind (0, nothing done). */
int bus_consumer_seek(struct bus_consumer *c, const struct bus_record *r);
void bus_consumer_free(struct bus_consumer *c);   /* clean close; accepts NULL */

/* Consume-transform-produce: produce outs and commit past `in` atomically.
 * Kafka with a transactional_id: one transaction (aborted on failure, so
 * read_committed consumers see nothing).  Otherwise (local, or Kafka without
 * one) outputs are made durable first, then the input committed. */
int bus_produce_and_commit(struct bus_consumer *c, const struct bus_record *in,
                           const struct bus_record *outs, size_t n, char *err, size_t errlen);

/* The same for a batch: outputs durable and every partition's offset moved
 * past its highest record in ins, as one unit.  Local: one LMDB write
 * transaction.  Kafka with a transactional_id: one transaction (produce +
 * send_offsets_to_transaction).  Kafka without one: produce, wait until
 * durable, then commit the offsets.  On failure nothing is committed (Kafka
 * without a transaction may have produced some outputs: consumers see them
 * again when the batch is redone).  n_in = 0: a plain produce.  Records in
 * ins may come from several topics and partitions; order does not matter.
 * -ESTALE: a rebalance came after some of ins were read; nothing was
 * produced or committed, and the batch is to be dropped, not redone (its
 * partitions restart from the group's committed offsets).
 * -ENOTRECOVERABLE: the producer is fenced (a newer instance took its
 * transactional id) or failed for good; the process should exit. */
#define BUS_BATCH_TIMEOUT_MS 30000
int bus_produce_and_commit_batch(struct bus_consumer *c, const struct bus_record *const *ins,
                                 size_t n_in, const struct bus_record *outs, size_t n_out,
                                 char *err, size_t errlen);

/* Offsets for the monitor and the CLI. */
struct bus_partition_stats {
    int32_t partition;
    int64_t low, high;          /* first available offset, next offset to write */
    int64_t committed;          /* group's committed offset, -1 = none */
    int64_t committed_ts_ms;    /* timestamp of the record at committed, -1 = none waiting */
};
/* Fills up to max entries; returns count or <0. */
int bus_topic_stats(struct bus *b, const char *topic, const char *group,
                    struct bus_partition_stats *out, int max, char *err, size_t errlen);
/* For each st[i] (from bus_topic_stats): the first offset in [low, high)
 * whose record's timestamp is >= ts_ms, or high when none (records are
 * appended in time order closely enough for window measures).  0 or <0.
 * Kafka: one ListOffsets request (offsets_for_times); local: a binary
 * search with bus_read_at. */
int bus_offsets_for_time(struct bus *b, const char *topic, const struct bus_partition_stats *st,
                         int n, int64_t ts_ms, int64_t *out, char *err, size_t errlen);
/* Sets a group's committed offset on a partition (dlq ack, replay). */
int bus_group_set_offset(struct bus *b, const char *group, const char *topic, int32_t partition,
                         int64_t offset, char *err, size_t errlen);
/* Reads record at (topic, partition, offset) without a group; 1 found, 0 none, <0 error. */
int bus_read_at(struct bus *b, const char *topic, int32_t partition, int64_t offset,
                struct bus_record **out, int timeout_ms);

/* Calls cb for every record still kept in topic, partition by partition in
 * offset order, without a group (admin reads of compacted or small topics).
 * cb returns non-zero to stop.  Returns records seen, or <0 with err: a
 * record that cannot be read is an error, only an offset with no record
 * (compacted away, a transaction marker) is passed over. */
typedef int (*bus_scan_cb)(void *opaque, const struct bus_record *r);
long bus_scan(struct bus *b, const char *topic, bus_scan_cb cb, void *opaque, char *err, size_t errlen);

#endif
