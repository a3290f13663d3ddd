/* bus — picks the backend from the URI and forwards every verb to it.
 *
 * The front end owns nothing but the pairing of a backend's ops table with
 * its handle; all queue semantics live in bus_local.c and bus_kafka.c.  The
 * consumed-record layout (one allocation, freed by bus_record_free) is here
 * because both backends build records the same way. */
#include "bus_impl.h"
#include "strbuf.h"
#include "topics.h"

#include <errno.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bus {
    const struct bus_ops *ops;
    void *impl;
};

struct bus_consumer {
    struct bus *bus;
    void *impl;
};

static const struct {
    const char *prefix;
    const struct bus_ops *ops;
} bus_backends[] = {
    { "local:", &bus_local_ops },
    { "kafka:", &bus_kafka_ops },
};

struct bus *bus_open(const char *uri, const struct bus_options *opt, char *err, size_t errlen)
{
    static const struct bus_options no_options;

    if (!opt)
        opt = &no_options;
    for (size_t i = 0; uri && i < sizeof bus_backends / sizeof bus_backends[0]; i++) {
        size_t plen = strlen(bus_backends[i].prefix);
        if (strncmp(uri, bus_backends[i].prefix, plen) != 0)
            continue;
        if (uri[plen] == '\0') {
            snprintf(err, errlen, "bus URI \"%s\" names no %s", uri,
                     bus_backends[i].ops == &bus_local_ops ? "directory" : "bootstrap servers");
            return NULL;
        }
        void *impl = bus_backends[i].ops->open(uri + plen, opt, err, errlen);
        if (!impl)
            return NULL;
        struct bus *b = xcalloc(1, sizeof *b);
        b->ops = bus_backends[i].ops;
        b->impl = impl;
        return b;
    }
    snprintf(err, errlen, "bus URI \"%s\" is neither local:<dir> nor kafka:<bootstrap>",
             uri ? uri : "(null)");
    return NULL;
}

void bus_close(struct bus *b)
{
    if (!b)
        return;
    b->ops->close(b->impl);
    free(b);
}

const char *bus_backend(const struct bus *b)
{
    return b->ops->name;
}

int bus_produce(struct bus *b, const struct bus_record *recs, size_t n, int timeout_ms,
                char *err, size_t errlen)
{
    if (n == 0)
        return 0;
    return b->ops->produce(b->impl, recs, n, timeout_ms, err, errlen);
}

struct bus_consumer *bus_consumer_new(struct bus *b, const char *group, const char *const *topics,
                                      int from_beginning, char *err, size_t errlen)
{
    if (!group || !*group || !topics || !topics[0]) {
        snprintf(err, errlen, "a consumer needs a group and at least one topic");
        return NULL;
    }
    void *impl = b->ops->consumer_new(b->impl, group, topics, from_beginning, err, errlen);
    if (!impl)
        return NULL;
    struct bus_consumer *c = xcalloc(1, sizeof *c);
    c->bus = b;
    c->impl = impl;
    return c;
}

int bus_consumer_poll(struct bus_consumer *c, struct bus_record **out, int timeout_ms)
{
    *out = NULL;
    return c->bus->ops->poll(c->impl, out, timeout_ms);
}

int bus_consumer_commit(struct bus_consumer *c, const struct bus_record *r)
{
    return c->bus->ops->commit(c->impl, r);
}

int bus_consumer_seek(struct bus_consumer *c, const struct bus_record *r)
{
    return c->bus->ops->seek(c->impl, r);
}

void bus_consumer_free(struct bus_consumer *c)
{
    if (!c)
        return;
    c->bus->ops->consumer_free(c->impl);
    free(c);
}

int bus_produce_and_commit(struct bus_consumer *c, const struct bus_record *in,
                           const struct bus_record *outs, size_t n, char *err, size_t errlen)
{
    return bus_produce_and_commit_batch(c, &in, 1, outs, n, err, errlen);
}

int bus_produce_and_commit_batch(struct bus_consumer *c, const struct bus_record *const *ins,
                                 size_t n_in, const struct bus_record *outs, size_t n_out,
                                 char *err, size_t errlen)
{
    if (n_in == 0)
        return bus_produce(c->bus, outs, n_out, BUS_BATCH_TIMEOUT_MS, err, errlen);
    return c->bus->ops->produce_and_commit(c->impl, ins, n_in, outs, n_out, err, errlen);
}

int bus_topic_stats(struct bus *b, const char *topic, const char *group,
                    struct bus_partition_stats *out, int max, char *err, size_t errlen)
{
    return b->ops->topic_stats(b->impl, topic, group, out, max, err, errlen);
}

int bus_group_set_offset(struct bus *b, const char *group, const char *topic, int32_t partition,
                         int64_t offset, char *err, size_t errlen)
{
    if (offset < 0) {
        snprintf(err, errlen, "offset %lld is negative", (long long)offset);
        return -EINVAL;
    }
    return b->ops->group_set_offset(b->impl, group, topic, partition, offset, err, errlen);
}

/* First offset in [lo, hi) whose record timestamp >= ts; hi when none. */
static int64_t offset_for_time(struct bus *b, const char *topic, int32_t part, int64_t lo,
                               int64_t hi, int64_t ts)
{
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        struct bus_record *r = NULL;
        int rc = bus_read_at(b, topic, part, mid, &r, 2000);
        if (rc <= 0) {       /* gone (retention) or unreadable: look later */
            lo = mid + 1;
            continue;
        }
        if (r->timestamp_ms >= ts)
            hi = mid;
        else
            lo = mid + 1;
        bus_record_free(r);
    }
    return lo;
}

int bus_offsets_for_time(struct bus *b, const char *topic, const struct bus_partition_stats *st,
                         int n, int64_t ts_ms, int64_t *out, char *err, size_t errlen)
{
    if (b->ops->offsets_for_time)
        return b->ops->offsets_for_time(b->impl, topic, st, n, ts_ms, out, err, errlen);
    for (int i = 0; i < n; i++)
        out[i] = offset_for_time(b, topic, st[i].partition, st[i].low, st[i].high, ts_ms);
    return 0;
}

int bus_ready(struct bus *b, char *why, size_t len)
{
    return b->ops->ready ? b->ops->ready(b->impl, why, len) : 1;
}

int bus_read_at(struct bus *b, const char *topic, int32_t partition, int64_t offset,
                struct bus_record **out, int timeout_ms)
{
    *out = NULL;
    return b->ops->read_at(b->impl, topic, partition, offset, out, timeout_ms);
}

/* Copies len bytes and a NUL to *p, moves *p past them; returns the copy. */
static char *place(char **p, const void *src, size_t len)
{
    char *dst = *p;
    if (len)
        memcpy(dst, src, len);
    dst[len] = '\0';
    *p += len + 1;
    return dst;
}

/* Layout of the single allocation:
 *   struct bus_record | struct bus_header[nh] | topic\0 | key\0 | value\0 | names\0 and values\0
 * Key and value get a trailing NUL too (not counted in their lengths) so a
 * JSON value can be handed to a parser that wants a C string.  A tombstone
 * keeps value == NULL; an empty value points at its NUL so the two differ. */
struct bus_record *bus_record_build(const char *topic, const void *key, size_t klen,
                                    const void *value, size_t vlen,
                                    const struct bus_header *headers, size_t nh,
                                    int64_t ts_ms, int32_t partition, int64_t offset)
{
    size_t tlen = strlen(topic);
    if (!key)
        klen = 0;
    if (!value)
        vlen = 0;
    size_t size = sizeof(struct bus_record) + nh * sizeof(struct bus_header);
    size += tlen + 1 + klen + 1 + vlen + 1;
    for (size_t i = 0; i < nh; i++)
        size += strlen(headers[i].name) + 1 + headers[i].value_len + 1;

    _Static_assert(sizeof(struct bus_record) % alignof(struct bus_header) == 0,
                   "headers follow the record without padding");
    struct bus_record *r = xmalloc(size);
    struct bus_header *hs = (struct bus_header *)(r + 1);
    char *p = (char *)(hs + nh);

    r->topic = place(&p, topic, tlen);
    char *k = place(&p, key, klen);
    r->key = key ? k : NULL;
    r->key_len = klen;
    char *v = place(&p, value, vlen);
    r->value = value ? v : NULL;
    r->value_len = vlen;
    for (size_t i = 0; i < nh; i++) {
        hs[i].name = place(&p, headers[i].name, strlen(headers[i].name));
        hs[i].value = place(&p, headers[i].value, headers[i].value_len);
        hs[i].value_len = headers[i].value_len;
    }
    r->headers = nh ? hs : NULL;
    r->n_headers = nh;
    r->timestamp_ms = ts_ms;
    r->partition = partition;
    r->offset = offset;
    r->epoch = 0;
    return r;
}

const struct bus_header *bus_record_header(const struct bus_record *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcmp(r->headers[i].name, name) == 0)
            return &r->headers[i];
    return NULL;
}

char *bus_record_header_str(const struct bus_record *r, const char *name)
{
    const struct bus_header *h = bus_record_header(r, name);

    if (!h)
        return NULL;
    return h->value ? xstrndup(h->value, h->value_len) : xstrdup("");
}

void bus_record_free(struct bus_record *r)
{
    free(r);
}

long bus_scan(struct bus *b, const char *topic, bus_scan_cb cb, void *opaque, char *err, size_t errlen)
{
    struct bus_partition_stats st[64];
    int n = bus_topic_stats(b, topic, NULL, st, 64, err, errlen);
    if (n < 0)
        return n;
    long seen = 0;
    for (int p = 0; p < n && b->ops->scan_partition; p++) {
        int stopped = 0;
        if (st[p].high <= st[p].low)
            continue;
        long got = b->ops->scan_partition(b->impl, topic, st[p].partition, st[p].low, st[p].high, cb,
                                          opaque, &stopped, err, errlen);
        if (got < 0)
            return got;
        seen += got;
        if (stopped)
            return seen;
    }
    for (int p = 0; p < n && !b->ops->scan_partition; p++)
        for (int64_t off = st[p].low; off < st[p].high; off++) {
            struct bus_record *r = NULL;
            int rc = bus_read_at(b, topic, st[p].partition, off, &r, 5000);
            if (rc == 0)
                continue;   /* compacted away, or a transaction marker */
            if (rc < 0) {
                /* Never skipped as if compacted: a reader would act on a
                 * list with a hole in it (a removed suppression back). */
                snprintf(err, errlen, "%s[%d] offset %lld: read failed (%s)", topic, (int)st[p].partition,
                         (long long)off, strerror(-rc));
                return rc;
            }
            seen++;
            int stop = cb(opaque, r);
            bus_record_free(r);
            if (stop)
                return seen;
        }
    return seen;
}

const char *const bus_compacted_topics[] = { TOPIC_SUPPRESSION, TOPIC_REVOCATIONS, NULL };
