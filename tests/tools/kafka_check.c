/* kafka_check — drives the bus API against a Kafka cluster (a real one,
 * ops/kafka/cluster.py, in tests) for tests/integration/test_bus_kafka.py.
 *
 *   kafka_check check BOOTSTRAP TOPIC TOPIC1
 *       self-checking run: produce/consume with headers and a tombstone,
 *       commit and redelivery after reopening, seek, stats, read_at,
 *       group_set_offset, concurrent producers (on a plain and on a
 *       transactional bus), produce timeout, bad config.
 *       TOPIC has several partitions, TOPIC1 exactly one; both empty.
 *   kafka_check produce BOOTSTRAP TOPIC N
 *       produces N records (key k<i>, value v<i>, headers mf.seq=<i>,
 *       mf.kind=test) in one call.
 *   kafka_check relay BOOTSTRAP GROUP IN OUT N [TXN_ID]
 *       consumes N records of IN; for each, produce_and_commit one record to
 *       OUT (value "out:" + input value); prints each input as a JSON line.
 *       Exits 3 if fewer than N came within 20 s.  With CHECK_CRASH_AT=K the
 *       K-th record's (from 0) output is produced and the process dies
 *       (_exit 9) before committing it.
 *   kafka_check txn-abort BOOTSTRAP TXN_ID GROUP IN OUT
 *       consumes one record of IN and runs a transaction whose second output
 *       is too large for the broker: the first output is written, then the
 *       transaction aborts.  Exits 0 only if produce_and_commit failed with
 *       -EMSGSIZE and a second transaction (key "retried") then commits.
 *   kafka_check fence BOOTSTRAP TXN_ID GROUP IN OUT
 *       a zombie: bus A (TXN_ID) reads one record of IN; bus B opens with
 *       the same TXN_ID, which fences A; A's produce_and_commit of that
 *       record (key "zombie") must fail (its producer replaced, -EIO) and A
 *       leaves; B relays the record (key "fencer") and commits, after at
 *       most one failed try (A's replacement fenced B in turn).
 * Exit 0 = ok; anything else prints why on stderr. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "log.h"
#include "strbuf.h"
#include "timeutil.h"

#define CHECK(cond, ...)                                                                         \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "kafka_check:%d: %s: ", __LINE__, #cond);                            \
            fprintf(stderr, __VA_ARGS__);                                                        \
            fputc('\n', stderr);                                                                 \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

static struct bus *check_open(const char *bootstrap, const char *txn_id,
                              const char *const *kafka_conf)
{
    char uri[512], err[512];
    /* A member that dies without leaving holds its partitions for the
     * session timeout: keep it at the broker's minimum (6 s) so a relay
     * after a crash resumes quickly.  CHECK_DEBUG=<librdkafka debug contexts>
     * (e.g. cgrp,eos) traces the client. */
    const char *debug = getenv("CHECK_DEBUG");
    const char *quick[] = { "session.timeout.ms", "6000", debug ? "debug" : NULL, debug, NULL };
    if (!kafka_conf)
        kafka_conf = quick;
    struct bus_options opt = { .client_id = "kafka_check", .transactional_id = txn_id,
                               .kafka_conf = kafka_conf };
    snprintf(uri, sizeof uri, "kafka:%s", bootstrap);
    struct bus *b = bus_open(uri, &opt, err, sizeof err);
    CHECK(b, "bus_open %s: %s", uri, err);
    CHECK(strcmp(bus_backend(b), "kafka") == 0, "backend %s", bus_backend(b));
    return b;
}

static struct bus_consumer *check_consumer(struct bus *b, const char *group, const char *topic)
{
    char err[512];
    const char *topics[] = { topic, NULL };
    struct bus_consumer *c = bus_consumer_new(b, group, topics, 1, err, sizeof err);
    CHECK(c, "consumer %s on %s: %s", group, topic, err);
    return c;
}

/* Polls until a record comes or timeout_ms passes. */
static struct bus_record *check_poll(struct bus_consumer *c, int timeout_ms)
{
    struct bus_record *r = NULL;
    int64_t deadline = mono_ms() + timeout_ms;
    while (mono_ms() < deadline) {
        int rc = bus_consumer_poll(c, &r, 200);
        CHECK(rc >= 0, "poll: %d", rc);
        if (rc == 1)
            return r;
    }
    return NULL;
}

static int check_header_is(const struct bus_record *r, const char *name, const void *v, size_t n)
{
    const struct bus_header *h = bus_record_header(r, name);
    return h && h->value_len == n && memcmp(h->value, v, n) == 0;
}

/* ---- check ----------------------------------------------------------- */

#define CHECK_N 20            /* records with values; one tombstone follows */
#define CHECK_TS_BASE 1700000000000LL
static const char check_bin[] = { 0x00, 0x01, (char)0xff };

struct check_seen {
    int seen;
    int32_t partition;
    int64_t offset;
    int committed;            /* committed right after consuming it */
};

static void check_produce_main(struct bus *b, const char *topic)
{
    char keys[CHECK_N][24], values[CHECK_N][24], seqs[CHECK_N][16], err[512];
    struct bus_header hdrs[CHECK_N][2];
    struct bus_record recs[CHECK_N + 1];
    for (int i = 0; i < CHECK_N; i++) {
        snprintf(keys[i], sizeof keys[i], "key-%d", i);
        snprintf(values[i], sizeof values[i], "value-%d", i);
        snprintf(seqs[i], sizeof seqs[i], "%d", i);
        hdrs[i][0] = (struct bus_header){ "mf.seq", seqs[i], strlen(seqs[i]) };
        hdrs[i][1] = (struct bus_header){ "mf.bin", check_bin, sizeof check_bin };
        recs[i] = (struct bus_record){ .topic = topic, .key = keys[i], .key_len = strlen(keys[i]),
                                       .value = values[i], .value_len = strlen(values[i]),
                                       .headers = hdrs[i], .n_headers = 2,
                                       .timestamp_ms = CHECK_TS_BASE + i, .partition = -1 };
    }
    recs[CHECK_N] = (struct bus_record){ .topic = topic, .key = "gone", .key_len = 4,
                                         .value = NULL, .partition = -1 };
    CHECK(bus_produce(b, recs, CHECK_N + 1, 15000, err, sizeof err) == 0, "produce: %s", err);
}

/* Returns the record's index (CHECK_N for the tombstone) after checking its
 * content against what check_produce_main wrote. */
static int check_record_main(const struct bus_record *r, const char *topic)
{
    char want[32];
    CHECK(strcmp(r->topic, topic) == 0, "topic %s", r->topic);
    if (r->key_len == 4 && memcmp(r->key, "gone", 4) == 0) {
        CHECK(r->value == NULL, "tombstone has a value of %zu bytes", r->value_len);
        CHECK(r->n_headers == 0, "tombstone has %zu headers", r->n_headers);
        CHECK(r->timestamp_ms > CHECK_TS_BASE, "tombstone timestamp %lld", (long long)r->timestamp_ms);
        return CHECK_N;
    }
    int i;
    CHECK(r->key_len > 4 && sscanf((const char *)r->key, "key-%d", &i) == 1 && i >= 0 && i < CHECK_N,
          "unexpected key %.*s", (int)r->key_len, (const char *)r->key);
    snprintf(want, sizeof want, "value-%d", i);
    CHECK(r->value && r->value_len == strlen(want) && memcmp(r->value, want, r->value_len) == 0,
          "value of key-%d", i);
    snprintf(want, sizeof want, "%d", i);
    CHECK(r->n_headers == 2, "key-%d has %zu headers", i, r->n_headers);
    CHECK(check_header_is(r, "mf.seq", want, strlen(want)), "mf.seq of key-%d", i);
    CHECK(check_header_is(r, "mf.bin", check_bin, sizeof check_bin), "mf.bin of key-%d", i);
    CHECK(bus_record_header(r, "mf.none") == NULL, "absent header found");
    CHECK(r->timestamp_ms == CHECK_TS_BASE + i, "timestamp of key-%d: %lld", i,
          (long long)r->timestamp_ms);
    return i;
}

/* Consume everything, commit the first half received, reopen: exactly the
 * records after each partition's committed one come again. */
static void check_redelivery(struct bus *b, const char *topic)
{
    struct check_seen seen[CHECK_N + 1] = { 0 };
    int64_t last_committed[64];
    for (int p = 0; p < 64; p++)
        last_committed[p] = -1;

    struct bus_consumer *c = check_consumer(b, "check-main", topic);
    for (int got = 0; got < CHECK_N + 1; got++) {
        struct bus_record *r = check_poll(c, 20000);
        CHECK(r, "only %d of %d records came", got, CHECK_N + 1);
        int i = check_record_main(r, topic);
        CHECK(!seen[i].seen, "record %d delivered twice", i);
        CHECK(r->partition >= 0 && r->partition < 64, "partition %d", (int)r->partition);
        seen[i] = (struct check_seen){ 1, r->partition, r->offset, 0 };
        if (got < (CHECK_N + 1) / 2) {
            CHECK(bus_consumer_commit(c, r) == 0, "commit");
            seen[i].committed = 1;
            if (r->offset > last_committed[r->partition])
                last_committed[r->partition] = r->offset;
        }
        bus_record_free(r);
    }
    struct bus_record *extra = check_poll(c, 1000);
    CHECK(!extra, "a record beyond the ones produced");
    bus_consumer_free(c);

    int expect = 0;
    for (int i = 0; i <= CHECK_N; i++)
        if (seen[i].offset > last_committed[seen[i].partition])
            expect++;
    CHECK(expect > 0 && expect < CHECK_N + 1, "bad split: %d", expect);

    c = check_consumer(b, "check-main", topic);
    for (int got = 0; got < expect; got++) {
        struct bus_record *r = check_poll(c, 20000);
        CHECK(r, "only %d of %d uncommitted records came again", got, expect);
        int i = check_record_main(r, topic);
        CHECK(r->partition == seen[i].partition && r->offset == seen[i].offset,
              "record %d moved", i);
        CHECK(r->offset > last_committed[r->partition],
              "record %d at %lld was committed past but came again", i, (long long)r->offset);
        seen[i].seen = 2;
        bus_record_free(r);
    }
    extra = check_poll(c, 1500);
    CHECK(!extra, "more records than the uncommitted ones came again");
    bus_consumer_free(c);
    for (int i = 0; i <= CHECK_N; i++)
        CHECK((seen[i].seen == 2) == (seen[i].offset > last_committed[seen[i].partition]),
              "record %d redelivery", i);

    /* What the monitor sees: per partition, the log's bounds, the group's
     * committed offset and the timestamp of the first record waiting. */
    struct bus_partition_stats st[64];
    char err[512];
    int n = bus_topic_stats(b, topic, "check-main", st, 64, err, sizeof err);
    CHECK(n >= 2, "stats of %s: %d %s", topic, n, err);
    for (int p = 0; p < n; p++) {
        int64_t count = 0, want = last_committed[p] >= 0 ? last_committed[p] + 1 : -1;
        /* a group that never committed waits from the first record (as local) */
        int64_t first = want >= 0 ? want : 0;
        int waiting = -1;
        for (int i = 0; i <= CHECK_N; i++) {
            if (seen[i].partition != p)
                continue;
            count++;
            if (seen[i].offset == first)
                waiting = i;
        }
        CHECK(st[p].partition == p && st[p].low == 0 && st[p].high == count,
              "partition %d: %lld..%lld, want 0..%lld", p, (long long)st[p].low,
              (long long)st[p].high, (long long)count);
        CHECK(st[p].committed == want, "partition %d committed %lld, want %lld", p,
              (long long)st[p].committed, (long long)want);
        if (waiting < 0)
            CHECK(st[p].committed_ts_ms == -1, "partition %d: ts with nothing waiting", p);
        else if (waiting < CHECK_N)
            CHECK(st[p].committed_ts_ms == CHECK_TS_BASE + waiting, "partition %d: ts %lld", p,
                  (long long)st[p].committed_ts_ms);
        else
            CHECK(st[p].committed_ts_ms > CHECK_TS_BASE, "partition %d: tombstone ts", p);
    }
    n = bus_topic_stats(b, "check-no-such-topic", NULL, st, 64, err, sizeof err);
    CHECK(n == -ENOENT && strstr(err, "check-no-such-topic"), "stats of a missing topic: %d %s",
          n, err);
    n = bus_topic_stats(b, "check-no-such-topic", NULL, st, 64, err, sizeof err);
    CHECK(n == -ENOENT, "asking for stats created the topic");
    fprintf(stderr, "kafka_check: redelivery ok (%d of %d again)\n", expect, CHECK_N + 1);
}

static void check_single_partition(struct bus *b, const char *topic)
{
    char v[5][16], err[512];
    struct bus_record recs[5];
    for (int i = 0; i < 5; i++) {
        snprintf(v[i], sizeof v[i], "s%d", i);
        recs[i] = (struct bus_record){ .topic = topic, .key = "same", .key_len = 4, .value = v[i],
                                       .value_len = 2, .timestamp_ms = CHECK_TS_BASE + 100 + i,
                                       .partition = -1 };
    }
    CHECK(bus_produce(b, recs, 5, 15000, err, sizeof err) == 0, "produce: %s", err);

    struct bus_consumer *c = check_consumer(b, "check-one", topic);
    struct bus_record *r[3];
    for (int i = 0; i < 3; i++) {
        r[i] = check_poll(c, 20000);
        CHECK(r[i] && r[i]->offset == i && r[i]->partition == 0, "record %d", i);
    }
    /* RETRY: rewind to r1, which must come next, followed by r2. */
    CHECK(bus_consumer_seek(c, r[1]) == 0, "seek");
    struct bus_record *again = check_poll(c, 20000);
    CHECK(again && again->offset == 1 && again->value_len == 2 &&
          memcmp(again->value, "s1", 2) == 0, "after seek got offset %lld",
          again ? (long long)again->offset : -1LL);
    bus_record_free(again);
    again = check_poll(c, 20000);
    CHECK(again && again->offset == 2, "second after seek");
    CHECK(bus_consumer_commit(c, again) == 0, "commit");
    bus_record_free(again);
    for (int i = 0; i < 3; i++)
        bus_record_free(r[i]);

    struct bus_partition_stats st[4];
    int n = bus_topic_stats(b, topic, "check-one", st, 4, err, sizeof err);
    CHECK(n == 1, "stats: %d %s", n, err);
    CHECK(st[0].partition == 0 && st[0].low == 0 && st[0].high == 5, "watermarks %lld..%lld",
          (long long)st[0].low, (long long)st[0].high);
    CHECK(st[0].committed == 3, "committed %lld", (long long)st[0].committed);
    CHECK(st[0].committed_ts_ms == CHECK_TS_BASE + 103, "committed ts %lld",
          (long long)st[0].committed_ts_ms);
    n = bus_topic_stats(b, topic, "check-nobody", st, 4, err, sizeof err);
    /* a group that never committed has everything waiting, from the first record */
    CHECK(n == 1 && st[0].committed == -1 && st[0].committed_ts_ms == CHECK_TS_BASE + 100,
          "unknown group stats: ts %lld", (long long)st[0].committed_ts_ms);

    struct bus_record *at = NULL;
    CHECK(bus_read_at(b, topic, 0, 4, &at, 10000) == 1 && at, "read_at 4");
    CHECK(at->offset == 4 && at->value_len == 2 && memcmp(at->value, "s4", 2) == 0, "read_at value");
    bus_record_free(at);
    at = NULL;
    CHECK(bus_read_at(b, topic, 0, 5, &at, 3000) == 0 && !at, "read_at past the end");

    /* An operator moves the group back to 1 (replay): the consumer, closed
     * and reopened, starts there. */
    bus_consumer_free(c);
    CHECK(bus_group_set_offset(b, "check-one", topic, 0, 1, err, sizeof err) == 0, "set offset: %s",
          err);
    n = bus_topic_stats(b, topic, "check-one", st, 4, err, sizeof err);
    CHECK(n == 1 && st[0].committed == 1 && st[0].committed_ts_ms == CHECK_TS_BASE + 101,
          "after set offset: committed %lld", (long long)st[0].committed);
    c = check_consumer(b, "check-one", topic);
    again = check_poll(c, 20000);
    CHECK(again && again->offset == 1, "after set offset polled %lld",
          again ? (long long)again->offset : -1LL);
    bus_record_free(again);
    bus_consumer_free(c);
    fprintf(stderr, "kafka_check: seek, stats, read_at, group_set_offset ok\n");
}

#define CHECK_THREADS 4
#define CHECK_PER_THREAD 50

struct check_thread {
    struct bus *b;
    const char *topic;
    int id;
    int rc;
    char err[512];
};

static void *check_producer_thread(void *arg)
{
    struct check_thread *t = arg;
    char v[5][32];
    for (int i = 0; i < CHECK_PER_THREAD && t->rc == 0; i += 5) {
        struct bus_record recs[5];
        for (int j = 0; j < 5; j++) {
            snprintf(v[j], sizeof v[j], "t%d-%d", t->id, i + j);
            recs[j] = (struct bus_record){ .topic = t->topic, .value = v[j],
                                           .value_len = strlen(v[j]), .partition = -1 };
        }
        t->rc = bus_produce(t->b, recs, 5, 15000, t->err, sizeof t->err);
    }
    return NULL;
}

/* Plain produces go outside transactions, also on a bus with a
 * transactional id: the high watermark moves by the records alone. */
static void check_concurrent(struct bus *b, const char *topic)
{
    struct check_thread t[CHECK_THREADS];
    pthread_t th[CHECK_THREADS];
    char err[512];
    struct bus_partition_stats st[1];
    CHECK(bus_topic_stats(b, topic, NULL, st, 1, err, sizeof err) == 1, "stats: %s", err);
    int64_t before = st[0].high;
    for (int i = 0; i < CHECK_THREADS; i++) {
        t[i] = (struct check_thread){ .b = b, .topic = topic, .id = i };
        CHECK(pthread_create(&th[i], NULL, check_producer_thread, &t[i]) == 0, "thread");
    }
    for (int i = 0; i < CHECK_THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK(t[i].rc == 0, "thread %d: %s", i, t[i].err);
    }
    CHECK(bus_topic_stats(b, topic, NULL, st, 1, err, sizeof err) == 1, "stats: %s", err);
    int64_t records = CHECK_THREADS * CHECK_PER_THREAD, moved = st[0].high - before;
    CHECK(moved == records, "high moved by %lld", (long long)moved);
    fprintf(stderr, "kafka_check: %d concurrent producers ok\n", CHECK_THREADS);
}

/* Nobody listens on the bootstrap: produce must give up at its timeout,
 * not hang, and the late delivery report must not touch freed memory. */
static void check_unreachable(void)
{
    static const char *const conf[] = { "message.timeout.ms", "2500", NULL };
    char err[512];
    struct bus *b = check_open("127.0.0.1:1", NULL, conf);
    struct bus_record r = { .topic = "nowhere", .value = "x", .value_len = 1, .partition = -1 };
    int64_t t0 = mono_ms();
    int rc = bus_produce(b, &r, 1, 1000, err, sizeof err);
    int64_t took = mono_ms() - t0;
    CHECK(rc == -ETIMEDOUT, "produce to nowhere: %d %s", rc, err);
    CHECK(took >= 900 && took < 5000, "timeout took %lld ms", (long long)took);
    bus_close(b);   /* waits for the message to expire: the report frees its batch */

    static const char *const bad[] = { "no.such.property", "1", NULL };
    struct bus_options opt = { .kafka_conf = bad };
    CHECK(!bus_open("kafka:127.0.0.1:1", &opt, err, sizeof err), "bad property accepted");
    CHECK(strstr(err, "no.such.property"), "error does not name the property: %s", err);
    CHECK(!bus_open("kafka:", &opt, err, sizeof err), "empty bootstrap accepted");
    fprintf(stderr, "kafka_check: timeout and config errors ok\n");
}

static int cmd_check(const char *bootstrap, const char *topic, const char *topic1)
{
    struct bus *b = check_open(bootstrap, NULL, NULL);
    check_produce_main(b, topic);
    check_redelivery(b, topic);
    check_single_partition(b, topic1);
    check_concurrent(b, topic1);
    bus_close(b);
    b = check_open(bootstrap, "kafka-check-plain", NULL);
    check_concurrent(b, topic1);
    bus_close(b);
    check_unreachable();
    printf("ok\n");
    return 0;
}

/* ---- produce / relay / txn-abort -------------------------------------- */

static int cmd_produce(const char *bootstrap, const char *topic, int n)
{
    struct bus *b = check_open(bootstrap, NULL, NULL);
    struct bus_record *recs = xcalloc((size_t)n, sizeof *recs);
    struct bus_header *hdrs = xcalloc((size_t)n * 2, sizeof *hdrs);
    char (*buf)[3][16] = xcalloc((size_t)n, sizeof *buf);
    char err[512];
    for (int i = 0; i < n; i++) {
        snprintf(buf[i][0], 16, "k%d", i);
        snprintf(buf[i][1], 16, "v%d", i);
        snprintf(buf[i][2], 16, "%d", i);
        hdrs[2 * i] = (struct bus_header){ "mf.seq", buf[i][2], strlen(buf[i][2]) };
        hdrs[2 * i + 1] = (struct bus_header){ "mf.kind", "test", 4 };
        recs[i] = (struct bus_record){ .topic = topic, .key = buf[i][0], .key_len = strlen(buf[i][0]),
                                       .value = buf[i][1], .value_len = strlen(buf[i][1]),
                                       .headers = &hdrs[2 * i], .n_headers = 2, .partition = -1 };
    }
    int rc = bus_produce(b, recs, (size_t)n, 15000, err, sizeof err);
    CHECK(rc == 0, "produce: %s", err);
    free(buf);
    free(hdrs);
    free(recs);
    bus_close(b);
    printf("produced %d\n", n);
    return 0;
}

static void print_record(const struct bus_record *r)
{
    struct strbuf s;
    strbuf_init(&s);
    char *k = xstrndup(r->key ? r->key : "", r->key_len);
    char *v = xstrndup(r->value ? r->value : "", r->value_len);
    strbuf_appendf(&s, "{\"partition\":%d,\"offset\":%lld,\"key\":", (int)r->partition,
                   (long long)r->offset);
    strbuf_append_json_string(&s, k);
    strbuf_append(&s, ",\"value\":");
    strbuf_append_json_string(&s, v);
    strbuf_append(&s, "}\n");
    fputs(s.data, stdout);
    fflush(stdout);
    free(k);
    free(v);
    strbuf_free(&s);
}

static int cmd_relay(const char *bootstrap, const char *group, const char *in, const char *out,
                     int n, const char *txn_id)
{
    struct bus *b = check_open(bootstrap, txn_id, NULL);
    struct bus_consumer *c = check_consumer(b, group, in);
    char err[512];
    const char *crash = getenv("CHECK_CRASH_AT");
    int crash_at = crash ? atoi(crash) : -1;
    int got = 0;
    for (; got < n; got++) {
        struct bus_record *r = check_poll(c, 20000);
        if (!r)
            break;
        char *v = xmalloc(r->value_len + 4);
        memcpy(v, "out:", 4);
        memcpy(v + 4, r->value, r->value_len);
        char off[24];
        snprintf(off, sizeof off, "%lld", (long long)r->offset);
        struct bus_header h = { "mf.source.offset", off, strlen(off) };
        struct bus_record o = { .topic = out, .key = r->key, .key_len = r->key_len, .value = v,
                                .value_len = r->value_len + 4, .headers = &h, .n_headers = 1,
                                .partition = -1 };
        if (got == crash_at) {
            /* A worker dying after its output is durable, before the commit. */
            CHECK(bus_produce(b, &o, 1, 15000, err, sizeof err) == 0, "produce: %s", err);
            print_record(r);
            _exit(9);
        }
        int rc = bus_produce_and_commit(c, r, &o, 1, err, sizeof err);
        CHECK(rc == 0, "produce_and_commit: %s", err);
        print_record(r);
        free(v);
        bus_record_free(r);
    }
    bus_consumer_free(c);
    bus_close(b);
    if (got < n)
        fprintf(stderr, "kafka_check: relayed %d of %d\n", got, n);
    return got < n ? 3 : 0;
}

static int cmd_txn_abort(const char *bootstrap, const char *txn_id, const char *group,
                         const char *in, const char *out)
{
    struct bus *b = check_open(bootstrap, txn_id, NULL);
    struct bus_consumer *c = check_consumer(b, group, in);
    struct bus_record *r = check_poll(c, 20000);
    CHECK(r, "nothing to consume on %s", in);
    /* Larger than the default message.max.bytes (1000000): refused. */
    size_t big_len = 2000000;
    char *big = xcalloc(1, big_len);
    struct bus_record outs[2] = {
        { .topic = out, .key = "aborted", .key_len = 7, .value = "written-then-aborted",
          .value_len = 20, .partition = -1 },
        { .topic = out, .key = "aborted", .key_len = 7, .value = big, .value_len = big_len,
          .partition = -1 },
    };
    char err[512];
    int rc = bus_produce_and_commit(c, r, outs, 2, err, sizeof err);
    free(big);
    CHECK(rc == -EMSGSIZE, "produce_and_commit returned %d (%s)", rc, rc ? err : "ok");
    printf("aborted: %s\n", err);
    fflush(stdout);
    /* The producer stays usable: the retry of the same input commits. */
    struct bus_record ok = { .topic = out, .key = "retried", .key_len = 7,
                             .value = "committed-after-abort", .value_len = 21, .partition = -1 };
    rc = bus_produce_and_commit(c, r, &ok, 1, err, sizeof err);
    CHECK(rc == 0, "produce_and_commit after the abort: %s", err);
    printf("committed after abort\n");
    bus_record_free(r);
    bus_consumer_free(c);
    bus_close(b);
    return 0;
}

static int cmd_fence(const char *bootstrap, const char *txn_id, const char *group, const char *in,
                     const char *out)
{
    char err[512];
    struct bus *zombie = check_open(bootstrap, txn_id, NULL);
    struct bus_consumer *c = check_consumer(zombie, group, in);
    struct bus_record *r = check_poll(c, 20000);
    CHECK(r, "nothing to consume on %s", in);
    struct bus *fencer = check_open(bootstrap, txn_id, NULL);   /* bumps the epoch */
    struct bus_record z = { .topic = out, .key = "zombie", .key_len = 6, .value = "from-the-zombie",
                            .value_len = 15, .partition = -1 };
    int rc = bus_produce_and_commit(c, r, &z, 1, err, sizeof err);
    CHECK(rc == -EIO && strstr(err, "fenced"), "the fenced producer's commit returned %d (%s)", rc, err);
    printf("zombie fenced: %s\n", err);
    bus_record_free(r);
    bus_consumer_free(c);   /* leaves the group: the fencer's consumer takes the partition */
    bus_close(zombie);

    c = check_consumer(fencer, group, in);
    r = check_poll(c, 30000);
    CHECK(r, "the fencer got nothing on %s", in);
    struct bus_record f = { .topic = out, .key = "fencer", .key_len = 6, .value = "from-the-fencer",
                            .value_len = 15, .partition = -1 };
    rc = bus_produce_and_commit(c, r, &f, 1, err, sizeof err);
    if (rc == -EIO && strstr(err, "fenced"))
        rc = bus_produce_and_commit(c, r, &f, 1, err, sizeof err);
    CHECK(rc == 0, "the fencer's commit: %s", err);
    printf("fencer committed offset %lld\n", (long long)r->offset);
    bus_record_free(r);
    bus_consumer_free(c);
    bus_close(fencer);
    return 0;
}

int main(int argc, char **argv)
{
    log_init("kafka_check", getenv("CHECK_DEBUG") ? LOG_DEBUG : LOG_WARN);
    if (argc == 5 && strcmp(argv[1], "check") == 0)
        return cmd_check(argv[2], argv[3], argv[4]);
    if (argc == 5 && strcmp(argv[1], "produce") == 0)
        return cmd_produce(argv[2], argv[3], atoi(argv[4]));
    if ((argc == 7 || argc == 8) && strcmp(argv[1], "relay") == 0)
        return cmd_relay(argv[2], argv[3], argv[4], argv[5], atoi(argv[6]),
                         argc == 8 ? argv[7] : NULL);
    if (argc == 7 && strcmp(argv[1], "txn-abort") == 0)
        return cmd_txn_abort(argv[2], argv[3], argv[4], argv[5], argv[6]);
    if (argc == 7 && strcmp(argv[1], "fence") == 0)
        return cmd_fence(argv[2], argv[3], argv[4], argv[5], argv[6]);
    fprintf(stderr, "usage: kafka_check check BOOTSTRAP TOPIC TOPIC1\n"
                    "       kafka_check produce BOOTSTRAP TOPIC N\n"
                    "       kafka_check relay BOOTSTRAP GROUP IN OUT N [TXN_ID]\n"
                    "       kafka_check txn-abort BOOTSTRAP TXN_ID GROUP IN OUT\n"
                    "       kafka_check fence BOOTSTRAP TXN_ID GROUP IN OUT\n");
    return 2;
}
