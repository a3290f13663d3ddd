/* bus_impl — the backend interface behind common/bus.h.  Only bus.c,
 * bus_local.c and bus_kafka.c include this. */
#ifndef MF_BUS_IMPL_H
#define MF_BUS_IMPL_H
#include "bus.h"

struct bus_ops {
    const char *name;   /* "local" / "kafka" */
    void *(*open)(const char *where, const struct bus_options *opt, char *err, size_t errlen);
    void (*close)(void *impl);
    int (*produce)(void *impl, const struct bus_record *recs, size_t n, int timeout_ms,
                   char *err, size_t errlen);
    void *(*consumer_new)(void *impl, const char *group, const char *const *topics,
                          int from_beginning, char *err, size_t errlen);
    int (*poll)(void *cimpl, struct bus_record **out, int timeout_ms);
    int (*commit)(void *cimpl, const struct bus_record *r);
    int (*seek)(void *cimpl, const struct bus_record *r);
    void (*consumer_free)(void *cimpl);
    /* ins: n_in >= 1 consumed records; commits past the highest per partition. */
    int (*produce_and_commit)(void *cimpl, const struct bus_record *const *ins, size_t n_in,
                              const struct bus_record *outs, size_t n, char *err, size_t errlen);
    int (*topic_stats)(void *impl, const char *topic, const char *group,
                       struct bus_partition_stats *out, int max, char *err, size_t errlen);
    int (*group_set_offset)(void *impl, const char *group, const char *topic, int32_t partition,
                            int64_t offset, char *err, size_t errlen);
    int (*read_at)(void *impl, const char *topic, int32_t partition, int64_t offset,
                   struct bus_record **out, int timeout_ms);
    int (*ready)(void *impl, char *why, size_t len);   /* NULL: always ready */
    /* Optional (NULL: bus.c searches with read_at). */
    int (*offsets_for_time)(void *impl, const char *topic, const struct bus_partition_stats *st,
                            int n, int64_t ts_ms, int64_t *out, char *err, size_t errlen);
    /* Optional: bus_scan of one partition up to (not including) high in one
     * pass; returns records seen or <0.  *stopped set when cb asked to stop.
     * NULL: bus.c reads record by record with read_at. */
    long (*scan_partition)(void *impl, const char *topic, int32_t partition, int64_t from,
                           int64_t high, bus_scan_cb cb, void *opaque, int *stopped, char *err,
                           size_t errlen);
};

extern const struct bus_ops bus_local_ops;
extern const struct bus_ops bus_kafka_ops;

/* A consumed record owning its memory: one allocation holding the struct,
 * topic, key, value and headers.  Backends build records with this. */
struct bus_record *bus_record_build(const char *topic, const void *key, size_t klen,
                                    const void *value, size_t vlen,
                                    const struct bus_header *headers, size_t nh,
                                    int64_t ts_ms, int32_t partition, int64_t offset);

#endif
