/* The bus contract, run against whichever backend MF_BUS_URI names
 * (default: a fresh local:<tmpdir>; MF_BUS_TRANSACTIONAL=1 adds a
 * transactional_id on Kafka).  Every case uses topic and group names
 * unique to this run, so the suite also works against a shared Kafka cluster.
 * Checks are partition-agnostic where Kafka may spread records: order is
 * asserted per key (one key = one partition), offsets per partition.
 * A second group of cases runs only on the local backend (retention, physical
 * compaction, the one-consumer-per-group lock message, shared environments). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "bus.h"
#include "topics.h"
#include "timeutil.h"

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct bus *g_bus;
static char g_uri[512];
static char g_dir[256];        /* local default only: removed at the end */
static char g_run[64];         /* prefix of every topic and group name */
static char g_compacted[128];
static int g_local;

#define MAXR 512

static const char *name(char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "%s-%s", g_run, what);
    return buf;
}

/* Kafka needs seconds to join a group; local answers at once. */
static int wait_ms(void)
{
    return g_local ? 5000 : 30000;
}

static int quiet_ms(void)
{
    return g_local ? 200 : 3000;
}

static void produce(const char *topic, const char *key, const char *value, size_t vlen, int64_t ts)
{
    char err[256] = "";
    struct bus_record r = { .topic = topic, .key = key, .key_len = key ? strlen(key) : 0,
                            .value = value, .value_len = vlen, .timestamp_ms = ts, .partition = -1 };
    int rc = bus_produce(g_bus, &r, 1, 10000, err, sizeof err);
    if (rc != 0)
        fail_msg("produce to %s: %d %s", topic, rc, err);
}

static void produce_seq(const char *topic, const char *key, int from, int to, int64_t ts0)
{
    for (int i = from; i < to; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        produce(topic, key, v, strlen(v), ts0 ? ts0 + i * 1000 : 0);
    }
}

static struct bus_consumer *consumer(const char *group, const char *topic)
{
    const char *topics[] = { topic, NULL };
    char err[256] = "";
    struct bus_consumer *c = bus_consumer_new(g_bus, group, topics, 1, err, sizeof err);
    if (!c)
        fail_msg("consumer %s on %s: %s", group, topic, err);
    return c;
}

/* Polls until n records arrived or the backend's wait passed; returns count. */
static int poll_n(struct bus_consumer *c, struct bus_record **out, int n)
{
    int64_t deadline = mono_ms() + wait_ms();
    int got = 0;
    while (got < n && mono_ms() < deadline) {
        int rc = bus_consumer_poll(c, &out[got], 200);
        assert_true(rc >= 0);
        if (rc == 1)
            got++;
    }
    return got;
}

static void assert_nothing(struct bus_consumer *c)
{
    struct bus_record *r = NULL;
    int64_t deadline = mono_ms() + quiet_ms();
    while (mono_ms() < deadline) {
        int rc = bus_consumer_poll(c, &r, 100);
        if (rc == 1)
            fail_msg("unexpected record at offset %lld: %.*s", (long long)r->offset,
                     (int)r->value_len, r->value ? (const char *)r->value : "");
        assert_int_equal(rc, 0);
    }
}

static void free_all(struct bus_record **rs, int n)
{
    for (int i = 0; i < n; i++)
        bus_record_free(rs[i]);
}

static int value_is(const struct bus_record *r, const char *v)
{
    return r->value && r->value_len == strlen(v) && memcmp(r->value, v, r->value_len) == 0;
}

/* got[i] holds the decimal value first + i (as produce_seq writes them). */
static void assert_seq(struct bus_record **got, int n, int first)
{
    for (int i = 0; i < n; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", first + i);
        if (!value_is(got[i], want))
            fail_msg("record %d: \"%.*s\", want \"%s\"", i, (int)got[i]->value_len,
                     got[i]->value ? (const char *)got[i]->value : "(tombstone)", want);
    }
}

static int key_is(const struct bus_record *r, const char *k)
{
    return r->key && r->key_len == strlen(k) && memcmp(r->key, k, r->key_len) == 0;
}

/* ---- contract ---- */

static void test_round_trip(void **state)
{
    char topic[128], group[128], err[256] = "";
    name(topic, sizeof topic, "roundtrip");
    static const char bin[] = { 0, 1, 2, (char)0xff };
    struct bus_header hs[] = {
        { "mf.bin", bin, sizeof bin },
        { "mf.empty", "", 0 },
        { "mf.text", "hello", 5 },
        { "mf.bin", "second", 6 },
    };
    static const char value[] = { 'v', 0, 'a', 'l' };
    struct bus_record recs[] = {
        { .topic = topic, .key = "key-1", .key_len = 5, .value = value, .value_len = sizeof value,
          .headers = hs, .n_headers = 4, .timestamp_ms = 1700000000123, .partition = -1 },
        { .topic = topic, .key = "key-2", .key_len = 5, .value = NULL, .timestamp_ms = 1700000000456,
          .partition = -1 },
        { .topic = topic, .key = "key-3", .key_len = 5, .value = "", .value_len = 0, .partition = -1 },
    };
    int64_t before = now_ms();
    assert_int_equal(bus_produce(g_bus, recs, 3, 10000, err, sizeof err), 0);

    struct bus_consumer *c = consumer(name(group, sizeof group, "roundtrip-g"), topic);
    struct bus_record *got[3];
    assert_int_equal(poll_n(c, got, 3), 3);
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        struct bus_record *r = got[i];
        assert_string_equal(r->topic, topic);
        assert_true(r->partition >= 0);
        assert_true(r->offset >= 0);
        if (key_is(r, "key-1")) {
            seen |= 1;
            assert_int_equal(r->value_len, sizeof value);
            assert_memory_equal(r->value, value, sizeof value);
            assert_int_equal(r->timestamp_ms, 1700000000123);
            assert_int_equal(r->n_headers, 4);
            for (size_t h = 0; h < 4; h++) {
                assert_string_equal(r->headers[h].name, hs[h].name);
                assert_int_equal(r->headers[h].value_len, hs[h].value_len);
                if (hs[h].value_len)
                    assert_memory_equal(r->headers[h].value, hs[h].value, hs[h].value_len);
            }
            const struct bus_header *h = bus_record_header(r, "mf.bin");
            assert_non_null(h);
            assert_int_equal(h->value_len, sizeof bin);   /* the first of a repeated name */
            assert_memory_equal(h->value, bin, sizeof bin);
            h = bus_record_header(r, "mf.empty");
            assert_non_null(h);
            assert_int_equal(h->value_len, 0);
            assert_null(bus_record_header(r, "mf.missing"));
            /* the same headers as strings: a copy, NUL-terminated */
            static const struct { const char *name, *want; } strs[] = {
                { "mf.text", "hello" }, { "mf.empty", "" }, { "mf.missing", NULL },
            };
            for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
                char *v = bus_record_header_str(r, strs[i].name);
                if (strs[i].want)
                    assert_string_equal(v, strs[i].want);
                else
                    assert_null(v);
                free(v);
            }
        } else if (key_is(r, "key-2")) {
            seen |= 2;
            assert_null(r->value);            /* tombstone */
            assert_int_equal(r->value_len, 0);
            assert_int_equal(r->n_headers, 0);
            assert_int_equal(r->timestamp_ms, 1700000000456);
        } else if (key_is(r, "key-3")) {
            seen |= 4;
            assert_non_null(r->value);        /* empty, not a tombstone */
            assert_int_equal(r->value_len, 0);
            assert_true(r->timestamp_ms >= before - 1000 && r->timestamp_ms <= now_ms() + 1000);
        } else {
            fail_msg("unexpected key");
        }
    }
    assert_int_equal(seen, 7);
    free_all(got, 3);
    bus_consumer_free(c);
}

static void test_per_key_order(void **state)
{
    char topic[128], group[128], err[256] = "";
    name(topic, sizeof topic, "order");
    struct bus_record recs[100];
    char keys[5][16], values[100][16];
    for (int i = 0; i < 5; i++)
        snprintf(keys[i], sizeof keys[i], "k%d", i);
    for (int i = 0; i < 100; i++) {
        snprintf(values[i], sizeof values[i], "%d", i / 5);
        recs[i] = (struct bus_record){ .topic = topic, .key = keys[i % 5], .key_len = 2,
                                       .value = values[i], .value_len = strlen(values[i]),
                                       .partition = -1 };
    }
    /* Half in one call, half one by one: both paths keep order. */
    assert_int_equal(bus_produce(g_bus, recs, 50, 10000, err, sizeof err), 0);
    for (int i = 50; i < 100; i++)
        assert_int_equal(bus_produce(g_bus, &recs[i], 1, 10000, err, sizeof err), 0);

    struct bus_consumer *c = consumer(name(group, sizeof group, "order-g"), topic);
    struct bus_record *got[100];
    assert_int_equal(poll_n(c, got, 100), 100);
    int next[5] = { 0 };
    int64_t last_off[64];
    for (int p = 0; p < 64; p++)
        last_off[p] = -1;
    for (int i = 0; i < 100; i++) {
        struct bus_record *r = got[i];
        assert_int_equal(r->key_len, 2);
        int k = ((const char *)r->key)[1] - '0';
        assert_true(k >= 0 && k < 5);
        char want[16];
        snprintf(want, sizeof want, "%d", next[k]++);
        assert_true(value_is(r, want));
        assert_true(r->partition >= 0 && r->partition < 64);
        assert_true(r->offset > last_off[r->partition]);
        last_off[r->partition] = r->offset;
    }
    for (int k = 0; k < 5; k++)
        assert_int_equal(next[k], 20);
    assert_nothing(c);
    free_all(got, 100);
    bus_consumer_free(c);
}

static void test_commit_then_restart(void **state)
{
    char topic[128], group[128];
    name(topic, sizeof topic, "restart");
    name(group, sizeof group, "restart-g");
    produce_seq(topic, "same", 0, 10, 0);

    struct bus_consumer *c = consumer(group, topic);
    struct bus_record *got[10];
    assert_int_equal(poll_n(c, got, 5), 5);
    assert_true(value_is(got[4], "4"));
    assert_int_equal(bus_consumer_commit(c, got[4]), 0);
    free_all(got, 5);
    bus_consumer_free(c);

    c = consumer(group, topic);
    assert_int_equal(poll_n(c, got, 5), 5);
    assert_seq(got, 5, 5);
    free_all(got, 5);
    assert_nothing(c);
    bus_consumer_free(c);
}

static void test_uncommitted_redelivered(void **state)
{
    char topic[128], group[128];
    name(topic, sizeof topic, "redeliver");
    name(group, sizeof group, "redeliver-g");
    produce_seq(topic, "same", 0, 5, 0);

    struct bus_consumer *c = consumer(group, topic);
    struct bus_record *got[5];
    assert_int_equal(poll_n(c, got, 3), 3);
    assert_int_equal(bus_consumer_commit(c, got[0]), 0);   /* only the first */
    free_all(got, 3);
    bus_consumer_free(c);

    c = consumer(group, topic);
    assert_int_equal(poll_n(c, got, 4), 4);
    assert_seq(got, 4, 1);
    free_all(got, 4);
    bus_consumer_free(c);
}

static void test_seek(void **state)
{
    char topic[128], group[128];
    name(topic, sizeof topic, "seek");
    produce_seq(topic, "same", 0, 3, 0);

    struct bus_consumer *c = consumer(name(group, sizeof group, "seek-g"), topic);
    struct bus_record *got[3], *again[2];
    assert_int_equal(poll_n(c, got, 3), 3);
    assert_int_equal(bus_consumer_seek(c, got[1]), 0);
    assert_int_equal(poll_n(c, again, 2), 2);
    assert_seq(again, 2, 1);
    assert_int_equal(again[0]->offset, got[1]->offset);
    free_all(got, 3);
    free_all(again, 2);
    bus_consumer_free(c);
}

/* A reader of a compacted topic applies records in order: the last value per
 * key wins and a tombstone deletes.  That holds whether or not the backend
 * has compacted yet; the local one compacts at once, checked physically. */
static void test_compaction(void **state)
{
    char group[128];
    static const struct { const char *key, *value; } writes[] = {
        { "a", "1" }, { "b", "1" }, { "a", "2" }, { "c", "1" }, { "b", NULL }, { "a", "3" },
    };
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++)
        produce(g_compacted, writes[i].key, writes[i].value,
                writes[i].value ? strlen(writes[i].value) : 0, 0);

    struct bus_consumer *c = consumer(name(group, sizeof group, "compact-g"), g_compacted);
    char state_a[8] = "", state_b[8] = "", state_c[8] = "";
    char *slot[3] = { state_a, state_b, state_c };
    int have_last = 0, n = 0;
    int64_t deadline = mono_ms() + wait_ms();
    struct bus_record *r;
    /* Read until the final write arrived and then nothing more for a while. */
    while (mono_ms() < deadline) {
        int rc = bus_consumer_poll(c, &r, have_last ? quiet_ms() : 200);
        assert_true(rc >= 0);
        if (rc == 0) {
            if (have_last)
                break;
            continue;
        }
        n++;
        assert_int_equal(r->key_len, 1);
        int k = ((const char *)r->key)[0] - 'a';
        assert_true(k >= 0 && k < 3);
        if (r->value)
            snprintf(slot[k], 8, "%.*s", (int)r->value_len, (const char *)r->value);
        else
            slot[k][0] = '\0';
        if (k == 0 && value_is(r, "3"))
            have_last = 1;
        bus_record_free(r);
    }
    assert_true(have_last);
    assert_string_equal(state_a, "3");
    assert_string_equal(state_b, "");
    assert_string_equal(state_c, "1");
    assert_true(n >= 3 && n <= 6);
    bus_consumer_free(c);

    if (!g_local)
        return;
    /* Fresh topic: offsets 0..5 in write order.  Replaced records are gone. */
    assert_int_equal(n, 3);
    static const struct { int64_t off; int present; } phys[] = {
        { 0, 0 }, { 1, 0 }, { 2, 0 }, { 3, 1 }, { 5, 1 },
    };
    for (size_t i = 0; i < sizeof phys / sizeof phys[0]; i++) {
        int rc = bus_read_at(g_bus, g_compacted, 0, phys[i].off, &r, 0);
        assert_int_equal(rc, phys[i].present);
        if (rc == 1)
            bus_record_free(r);
    }
    produce(g_compacted, "c", "2", 1, 0);
    assert_int_equal(bus_read_at(g_bus, g_compacted, 0, 3, &r, 0), 0);
    assert_int_equal(bus_read_at(g_bus, g_compacted, 0, 6, &r, 0), 1);
    assert_true(value_is(r, "2"));
    bus_record_free(r);
}

/* Committed offset of group on partition (-1 if none), once it is want or
 * after 10 s.  Kafka applies a transaction's offsets to the group when the
 * coordinator writes its commit markers, just after the commit returns, so
 * a reader that does not wait for stable offsets may see the old one for a
 * moment; the local queue shows it at once. */
static int64_t committed_at(const char *topic, const char *group, int32_t partition, int64_t want)
{
    int64_t got = -1, until = mono_ms() + 10000;
    do {
        char err[256] = "";
        struct bus_partition_stats st[64];
        int np = bus_topic_stats(g_bus, topic, group, st, 64, err, sizeof err);
        assert_true(np >= 1);
        got = -1;
        for (int i = 0; i < np; i++)
            if (st[i].partition == partition)
                got = st[i].committed;
        if (got != want)
            usleep(50 * 1000);
    } while (got != want && mono_ms() < until);
    return got;
}

static void test_produce_and_commit(void **state)
{
    char in[128], out[128], group[128], group2[128], err[256] = "";
    name(in, sizeof in, "pac-in");
    name(out, sizeof out, "pac-out");
    name(group, sizeof group, "pac-g");
    produce(in, "m1", "input", 5, 0);

    struct bus_consumer *c = consumer(group, in);
    struct bus_record *r, *got[2];
    assert_int_equal(poll_n(c, &r, 1), 1);
    struct bus_record outs[] = {
        { .topic = out, .key = "m1", .key_len = 2, .value = "out-1", .value_len = 5, .partition = -1 },
        { .topic = out, .key = "m1", .key_len = 2, .value = "out-2", .value_len = 5, .partition = -1 },
    };
    assert_int_equal(bus_produce_and_commit(c, r, outs, 2, err, sizeof err), 0);
    bus_consumer_free(c);

    assert_int_equal(committed_at(in, group, r->partition, r->offset + 1), r->offset + 1);
    bus_record_free(r);

    c = consumer(group, in);
    assert_nothing(c);
    bus_consumer_free(c);

    c = consumer(name(group2, sizeof group2, "pac-out-g"), out);
    assert_int_equal(poll_n(c, got, 2), 2);
    assert_true(value_is(got[0], "out-1"));
    assert_true(value_is(got[1], "out-2"));
    free_all(got, 2);
    bus_consumer_free(c);
}

/* Batch commit: n inputs (two keys, so Kafka may use two partitions), two
 * outputs per input, one call; every partition's offset moves past its
 * highest record and every output is there. */
static void test_batch_commit(void **state)
{
    char in[128], out[128], group[128], group2[128], err[256] = "";
    enum { N = 6 };
    name(in, sizeof in, "bat-in");
    name(out, sizeof out, "bat-out");
    name(group, sizeof group, "bat-g");
    for (int i = 0; i < N; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        produce(in, i % 2 ? "ka" : "kb", v, strlen(v), 0);
    }
    struct bus_consumer *c = consumer(group, in);
    struct bus_record *rs[N];
    assert_int_equal(poll_n(c, rs, N), N);
    struct bus_record outs[2 * N];
    for (int i = 0; i < 2 * N; i++)
        outs[i] = (struct bus_record){ .topic = out, .key = "o", .key_len = 1, .value = rs[i / 2]->value,
                                       .value_len = rs[i / 2]->value_len, .partition = -1 };
    assert_int_equal(bus_produce_and_commit_batch(c, (const struct bus_record *const *)rs, N, outs, 2 * N,
                                                  err, sizeof err), 0);
    bus_consumer_free(c);
    for (int i = 0; i < N; i++) {
        int64_t want = -1;
        for (int k = 0; k < N; k++)
            if (rs[k]->partition == rs[i]->partition && rs[k]->offset + 1 > want)
                want = rs[k]->offset + 1;
        assert_int_equal(committed_at(in, group, rs[i]->partition, want), want);
    }
    free_all(rs, N);

    c = consumer(group, in);
    assert_nothing(c);
    bus_consumer_free(c);
    c = consumer(name(group2, sizeof group2, "bat-out-g"), out);
    struct bus_record *got[2 * N];
    assert_int_equal(poll_n(c, got, 2 * N), 2 * N);
    free_all(got, 2 * N);
    assert_nothing(c);
    bus_consumer_free(c);
}

/* A batch whose outputs cannot be written (no such partition) fails as a
 * whole: no offset moves, and a new consumer gets every input again. */
static void test_batch_commit_failure(void **state)
{
    char in[128], out[128], group[128], err[256] = "";
    enum { N = 3 };
    name(in, sizeof in, "batf-in");
    name(out, sizeof out, "batf-out");
    name(group, sizeof group, "batf-g");
    produce(out, "o", "exists", 6, 0);
    produce_seq(in, "k", 0, N, 0);
    struct bus_consumer *c = consumer(group, in);
    struct bus_record *rs[N];
    assert_int_equal(poll_n(c, rs, N), N);
    struct bus_record bad = { .topic = out, .key = "o", .key_len = 1, .value = "x", .value_len = 1,
                              .partition = 999 };
    assert_true(bus_produce_and_commit_batch(c, (const struct bus_record *const *)rs, N, &bad, 1, err,
                                             sizeof err) < 0);
    assert_true(err[0] != '\0');
    bus_consumer_free(c);
    assert_int_equal(committed_at(in, group, rs[0]->partition, -1), -1);
    free_all(rs, N);

    c = consumer(group, in);
    assert_int_equal(poll_n(c, rs, N), N);
    assert_seq(rs, N, 0);
    free_all(rs, N);
    bus_consumer_free(c);
}

static void test_topic_stats_lag(void **state)
{
    char topic[128], group[128], err[256] = "";
    name(topic, sizeof topic, "lag");
    name(group, sizeof group, "lag-g");
    int64_t base = now_ms() - 20000;
    produce_seq(topic, "same", 0, 10, base);

    struct bus_consumer *c = consumer(group, topic);
    struct bus_record *got[4];
    assert_int_equal(poll_n(c, got, 4), 4);
    assert_int_equal(bus_consumer_commit(c, got[3]), 0);
    int32_t part = got[3]->partition;
    int64_t off = got[3]->offset;
    free_all(got, 4);
    bus_consumer_free(c);

    struct bus_partition_stats st[64];
    int np = bus_topic_stats(g_bus, topic, group, st, 64, err, sizeof err);
    assert_true(np >= 1);
    int64_t total = 0;
    int found = 0;
    for (int i = 0; i < np; i++) {
        total += st[i].high - st[i].low;
        if (st[i].partition != part)
            continue;
        found = 1;
        assert_int_equal(st[i].committed, off + 1);
        assert_int_equal(st[i].high - st[i].committed, 6);
        assert_int_equal(st[i].committed_ts_ms, base + 4000);
    }
    assert_true(found);
    assert_int_equal(total, 10);

    np = bus_topic_stats(g_bus, topic, NULL, st, 64, err, sizeof err);
    assert_true(np >= 1);
    for (int i = 0; i < np; i++)
        assert_int_equal(st[i].committed, -1);
}

static void test_group_set_offset(void **state)
{
    char topic[128], group[128], group2[128], err[256] = "";
    name(topic, sizeof topic, "setoff");
    produce_seq(topic, "same", 0, 5, 0);

    struct bus_consumer *c = consumer(name(group, sizeof group, "setoff-g"), topic);
    struct bus_record *got[5], *r;
    assert_int_equal(poll_n(c, got, 5), 5);
    bus_consumer_free(c);

    name(group2, sizeof group2, "setoff-g2");
    assert_int_equal(bus_group_set_offset(g_bus, group2, topic, got[0]->partition, got[3]->offset,
                                          err, sizeof err), 0);
    c = consumer(group2, topic);
    assert_int_equal(poll_n(c, &r, 1), 1);
    assert_true(value_is(r, "3"));
    bus_record_free(r);
    bus_consumer_free(c);

    assert_int_equal(bus_read_at(g_bus, topic, got[1]->partition, got[1]->offset, &r, wait_ms()), 1);
    assert_true(value_is(r, "1"));
    assert_int_equal(r->offset, got[1]->offset);
    bus_record_free(r);
    free_all(got, 5);
}

static void test_second_consumer_in_group(void **state)
{
    char topic[128], group[128], err[256] = "";
    name(topic, sizeof topic, "exclusive");
    name(group, sizeof group, "exclusive-g");
    produce(topic, "k", "v", 1, 0);
    const char *topics[] = { topic, NULL };

    struct bus_consumer *a = consumer(group, topic);
    struct bus_consumer *b = bus_consumer_new(g_bus, group, topics, 1, err, sizeof err);
    if (g_local) {
        assert_null(b);
        assert_non_null(strstr(err, "already consumed by another process"));
        assert_non_null(strstr(err, "scale out with Kafka"));
        assert_non_null(strstr(err, group));
    } else {
        bus_consumer_free(b);   /* Kafka rebalances instead */
    }
    bus_consumer_free(a);
    /* Once the first is gone the group is free again. */
    b = consumer(group, topic);
    bus_consumer_free(b);
}

struct producer_arg {
    const char *topic;
    int id, n, rc;
};

static void *producer_thread(void *p)
{
    struct producer_arg *a = p;
    char key[16], err[256];
    snprintf(key, sizeof key, "t%02d", a->id);
    for (int i = 0; i < a->n && a->rc == 0; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        struct bus_record r = { .topic = a->topic, .key = key, .key_len = strlen(key), .value = v,
                                .value_len = strlen(v), .partition = -1 };
        a->rc = bus_produce(g_bus, &r, 1, 10000, err, sizeof err);
    }
    return NULL;
}

/* Many threads producing at once (the local backend group-commits them):
 * every record arrives once, in order per producer. */
static void test_concurrent_producers(void **state)
{
    enum { THREADS = 16, EACH = 25 };
    char topic[128], group[128];
    name(topic, sizeof topic, "concurrent");
    pthread_t th[THREADS];
    struct producer_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct producer_arg){ topic, i, EACH, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, producer_thread, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].rc, 0);
    }
    struct bus_consumer *c = consumer(name(group, sizeof group, "concurrent-g"), topic);
    static struct bus_record *got[THREADS * EACH];
    assert_int_equal(poll_n(c, got, THREADS * EACH), THREADS * EACH);
    int next[THREADS] = { 0 };
    for (int i = 0; i < THREADS * EACH; i++) {
        int t = atoi((const char *)got[i]->key + 1);
        assert_true(t >= 0 && t < THREADS);
        char want[16];
        snprintf(want, sizeof want, "%d", next[t]++);
        assert_true(value_is(got[i], want));
        if (g_local)
            assert_int_equal(got[i]->offset, i);   /* one log, no gaps */
    }
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(next[t], EACH);
    free_all(got, THREADS * EACH);
    assert_nothing(c);
    bus_consumer_free(c);
}

/* ---- local only ---- */

static void test_local_bad_uris(void **state)
{
    static const struct { const char *uri, *msg; } cases[] = {
        { "nosuch:/tmp/x", "neither local:<dir> nor kafka:<bootstrap>" },
        { "local:", "names no directory" },
        { "/tmp/x", "neither local:<dir> nor kafka:<bootstrap>" },
        { "local:/proc/mailfleet-nope/q", "cannot create" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        struct bus *b = bus_open(cases[i].uri, NULL, err, sizeof err);
        assert_null(b);
        if (!strstr(err, cases[i].msg))
            fail_msg("%s: \"%s\" lacks \"%s\"", cases[i].uri, err, cases[i].msg);
    }
}

static void test_local_bad_names(void **state)
{
    static const char *bad[] = { "", "a/b", "sp ace", "../x" };
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct bus_record r = { .topic = bad[i], .value = "v", .value_len = 1, .partition = -1 };
        err[0] = '\0';
        assert_int_equal(bus_produce(g_bus, &r, 1, 1000, err, sizeof err), -22);
        assert_non_null(strstr(err, "bad topic name"));
    }
    char topic[128];
    struct bus_record r = { .topic = name(topic, sizeof topic, "p1"), .value = "v", .value_len = 1,
                            .partition = 1 };
    assert_int_equal(bus_produce(g_bus, &r, 1, 1000, err, sizeof err), -22);
    assert_non_null(strstr(err, "partition 1"));
}

/* A second handle on the same directory in one process shares the
 * environment (LMDB forbids opening it twice): each sees the other's writes. */
static void test_local_second_handle(void **state)
{
    char topic[128], group[128], err[256] = "";
    name(topic, sizeof topic, "twohandles");
    struct bus *b2 = bus_open(g_uri, NULL, err, sizeof err);
    assert_non_null(b2);
    struct bus_record w = { .topic = topic, .key = "k", .key_len = 1, .value = "from-2", .value_len = 6,
                            .partition = -1 };
    assert_int_equal(bus_produce(b2, &w, 1, 1000, err, sizeof err), 0);
    struct bus_consumer *c = consumer(name(group, sizeof group, "twohandles-g"), topic);
    struct bus_record *r;
    assert_int_equal(poll_n(c, &r, 1), 1);
    assert_true(value_is(r, "from-2"));
    bus_record_free(r);
    bus_consumer_free(c);
    bus_close(b2);
    /* The first handle still works after the second closed. */
    produce(topic, "k", "again", 5, 0);
    assert_int_equal(bus_read_at(g_bus, topic, 0, 1, &r, 0), 1);
    assert_true(value_is(r, "again"));
    bus_record_free(r);
}

static void *late_producer(void *topic)
{
    usleep(100 * 1000);
    produce(topic, "k", "late", 4, 0);
    return NULL;
}

/* read_at and poll wait for a record produced while they block. */
static void test_local_blocking_reads(void **state)
{
    char topic[128], group[128];
    name(topic, sizeof topic, "blocking");
    pthread_t th;
    struct bus_record *r;
    assert_int_equal(bus_read_at(g_bus, topic, 0, 0, &r, 0), 0);
    assert_int_equal(pthread_create(&th, NULL, late_producer, topic), 0);
    int64_t t0 = mono_ms();
    assert_int_equal(bus_read_at(g_bus, topic, 0, 0, &r, 5000), 1);
    assert_true(mono_ms() - t0 < 4000);
    assert_true(value_is(r, "late"));
    bus_record_free(r);
    pthread_join(th, NULL);

    struct bus_consumer *c = consumer(name(group, sizeof group, "blocking-g"), topic);
    assert_int_equal(bus_consumer_poll(c, &r, 1000), 1);
    bus_record_free(r);
    assert_int_equal(pthread_create(&th, NULL, late_producer, topic), 0);
    t0 = mono_ms();
    assert_int_equal(bus_consumer_poll(c, &r, 5000), 1);
    assert_true(mono_ms() - t0 < 4000);
    assert_int_equal(r->offset, 1);
    bus_record_free(r);
    pthread_join(th, NULL);
    bus_consumer_free(c);
}

static int count_cb(void *opaque, const struct bus_record *r)
{
    int *n = opaque;
    return ++*n == 2;   /* stop after the second */
}

/* bus_scan: every kept record, no group; the callback can stop it. */
static void test_scan(void **state)
{
    char topic[128], err[256] = "";
    name(topic, sizeof topic, "scan");
    produce_seq(topic, "k", 0, 3, 0);
    int n = 0;
    assert_int_equal(bus_scan(g_bus, topic, count_cb, &n, err, sizeof err), 2);
    assert_int_equal(n, 2);
}

/* mailfleet.suppression is compacted even for a producer that did not say
 * so: an older value never outlives the tombstone that removed it (else
 * retention, which keeps live values of compacted topics, would bring a
 * removed suppression back). */
static void test_local_well_known_topics_compact(void **state)
{
    char err[256] = "";
    struct bus *b = bus_open(g_uri, NULL, err, sizeof err);   /* no compacted_topics */
    assert_non_null(b);
    struct bus_partition_stats st;
    int64_t base = bus_topic_stats(b, TOPIC_SUPPRESSION, NULL, &st, 1, err, sizeof err) == 1 ? st.high : 0;
    struct bus_record recs[] = {
        { .topic = TOPIC_SUPPRESSION, .key = "x@example.com", .key_len = 13, .value = "{}",
          .value_len = 2, .partition = -1 },
        { .topic = TOPIC_SUPPRESSION, .key = "x@example.com", .key_len = 13, .value = NULL,
          .partition = -1 },
    };
    assert_int_equal(bus_produce(b, recs, 2, 1000, err, sizeof err), 0);
    struct bus_record *r = NULL;
    assert_int_equal(bus_read_at(b, TOPIC_SUPPRESSION, 0, base, &r, 0), 0);   /* value gone */
    assert_int_equal(bus_read_at(b, TOPIC_SUPPRESSION, 0, base + 1, &r, 0), 1);
    assert_null(r->value);                                                     /* tombstone kept */
    bus_record_free(r);
    bus_close(b);
}

/* Keys too long for an LMDB key are indexed by hash; compaction still
 * works per key and tells different long keys apart. */
static void test_local_compaction_long_keys(void **state)
{
    char topic[128], err[256] = "", kx[600], ky[600];
    name(topic, sizeof topic, "longkeys");
    const char *compacted[] = { topic, NULL };
    struct bus_options opt = { .compacted_topics = compacted };
    struct bus *b = bus_open(g_uri, &opt, err, sizeof err);
    assert_non_null(b);
    memset(kx, 'x', sizeof kx);
    memset(ky, 'x', sizeof ky);
    ky[sizeof ky - 1] = 'y';
    struct bus_record recs[] = {
        { .topic = topic, .key = kx, .key_len = sizeof kx, .value = "1", .value_len = 1, .partition = -1 },
        { .topic = topic, .key = kx, .key_len = sizeof kx, .value = "2", .value_len = 1, .partition = -1 },
        { .topic = topic, .key = ky, .key_len = sizeof ky, .value = "3", .value_len = 1, .partition = -1 },
    };
    assert_int_equal(bus_produce(b, recs, 3, 1000, err, sizeof err), 0);
    for (int off = 0; off < 3; off++) {
        struct bus_record *r;
        int rc = bus_read_at(b, topic, 0, off, &r, 0);
        assert_int_equal(rc, off > 0);
        if (rc == 1) {
            assert_int_equal(r->key_len, sizeof kx);
            bus_record_free(r);
        }
    }
    bus_close(b);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* Retention runs on open: records older than retention_ms go, younger stay.
 * On a compacted topic live values stay however old; old tombstones go.
 * Own directory, so the old timestamps of other cases are not touched. */
static void test_local_retention(void **state)
{
    char dir[] = "/tmp/mf-bus-retention-XXXXXX", uri[64], err[256] = "";
    assert_non_null(mkdtemp(dir));
    snprintf(uri, sizeof uri, "local:%s", dir);
    const char *compacted[] = { "ret-c", NULL };
    struct bus_options opt = { .compacted_topics = compacted };
    struct bus *b = bus_open(uri, &opt, err, sizeof err);
    assert_non_null(b);
    int64_t now = now_ms(), old = now - 7200000;
    struct bus_record recs[8];
    for (int i = 0; i < 5; i++)
        recs[i] = (struct bus_record){ .topic = "ret", .key = "k", .key_len = 1, .value = "v",
                                       .value_len = 1, .partition = -1, .timestamp_ms = i < 3 ? old : now };
    recs[5] = (struct bus_record){ .topic = "ret-c", .key = "live", .key_len = 4, .value = "v",
                                   .value_len = 1, .partition = -1, .timestamp_ms = old };
    recs[6] = (struct bus_record){ .topic = "ret-c", .key = "gone", .key_len = 4, .value = NULL,
                                   .partition = -1, .timestamp_ms = old };
    recs[7] = (struct bus_record){ .topic = "ret-c", .key = "new", .key_len = 3, .value = "v",
                                   .value_len = 1, .partition = -1, .timestamp_ms = now };
    assert_int_equal(bus_produce(b, recs, 8, 1000, err, sizeof err), 0);
    bus_close(b);

    opt.retention_ms = 3600000;
    b = bus_open(uri, &opt, err, sizeof err);
    assert_non_null(b);
    static const struct { const char *topic; int64_t off; int present; } want[] = {
        { "ret", 0, 0 }, { "ret", 1, 0 }, { "ret", 2, 0 }, { "ret", 3, 1 }, { "ret", 4, 1 },
        { "ret-c", 0, 1 }, { "ret-c", 1, 0 }, { "ret-c", 2, 1 },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        struct bus_record *r;
        int rc = bus_read_at(b, want[i].topic, 0, want[i].off, &r, 0);
        if (rc != want[i].present)
            fail_msg("%s@%lld: read_at %d, want %d", want[i].topic, (long long)want[i].off, rc,
                     want[i].present);
        if (rc == 1)
            bus_record_free(r);
    }
    struct bus_partition_stats st;
    assert_int_equal(bus_topic_stats(b, "ret", NULL, &st, 1, err, sizeof err), 1);
    assert_int_equal(st.low, 3);
    assert_int_equal(st.high, 5);
    /* A key whose tombstone was dropped can be written again. */
    struct bus_record again = { .topic = "ret-c", .key = "gone", .key_len = 4, .value = "back",
                                .value_len = 4, .partition = -1 };
    assert_int_equal(bus_produce(b, &again, 1, 1000, err, sizeof err), 0);
    struct bus_record *r;
    assert_int_equal(bus_read_at(b, "ret-c", 0, 3, &r, 0), 1);
    assert_true(value_is(r, "back"));
    bus_record_free(r);
    bus_close(b);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    char err[256] = "";
    const char *uri = getenv("MF_BUS_URI");
    if (!uri || !*uri) {
        snprintf(g_dir, sizeof g_dir, "/tmp/mf-bus-contract-XXXXXX");
        if (!mkdtemp(g_dir)) {
            perror("mkdtemp");
            return 1;
        }
        snprintf(g_uri, sizeof g_uri, "local:%s", g_dir);
    } else {
        snprintf(g_uri, sizeof g_uri, "%s", uri);
    }
    snprintf(g_run, sizeof g_run, "mfc-%d-%lld", (int)getpid(), (long long)now_ms());
    name(g_compacted, sizeof g_compacted, "compacted");
    const char *compacted[] = { g_compacted, NULL };
    /* A member that dies without leaving holds its partitions for the
     * session timeout: the broker's minimum keeps such cases quick. */
    const char *kconf[] = { "session.timeout.ms", "6000", NULL };
    struct bus_options opt = { .client_id = "mailfleet-contract-test", .compacted_topics = compacted,
                               .kafka_conf = kconf };
    /* MF_BUS_TRANSACTIONAL=1: the Kafka bus gets a transactional_id, so
     * produce_and_commit runs as Kafka transactions (as the consume-produce
     * workers run it). */
    char txn_id[96];
    if (getenv("MF_BUS_TRANSACTIONAL") && *getenv("MF_BUS_TRANSACTIONAL") == '1') {
        snprintf(txn_id, sizeof txn_id, "%s-txn", g_run);
        opt.transactional_id = txn_id;
    }
    g_bus = bus_open(g_uri, &opt, err, sizeof err);
    if (!g_bus) {
        fprintf(stderr, "bus_open %s: %s\n", g_uri, err);
        return 1;
    }
    g_local = strcmp(bus_backend(g_bus), "local") == 0;

    const struct CMUnitTest contract[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_per_key_order),
        cmocka_unit_test(test_commit_then_restart),
        cmocka_unit_test(test_uncommitted_redelivered),
        cmocka_unit_test(test_seek),
        cmocka_unit_test(test_compaction),
        cmocka_unit_test(test_produce_and_commit),
        cmocka_unit_test(test_batch_commit),
        cmocka_unit_test(test_batch_commit_failure),
        cmocka_unit_test(test_topic_stats_lag),
        cmocka_unit_test(test_group_set_offset),
        cmocka_unit_test(test_second_consumer_in_group),
        cmocka_unit_test(test_concurrent_producers),
        cmocka_unit_test(test_scan),
    };
    const struct CMUnitTest local_only[] = {
        cmocka_unit_test(test_local_bad_uris),
        cmocka_unit_test(test_local_bad_names),
        cmocka_unit_test(test_local_second_handle),
        cmocka_unit_test(test_local_blocking_reads),
        cmocka_unit_test(test_local_retention),
        cmocka_unit_test(test_local_compaction_long_keys),
        cmocka_unit_test(test_local_well_known_topics_compact),
    };
    int failed = cmocka_run_group_tests_name("bus contract", contract, NULL, NULL);
    if (g_local)
        failed += cmocka_run_group_tests_name("bus local", local_only, NULL, NULL);
    bus_close(g_bus);
    if (g_dir[0])
        nftw(g_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return failed ? 1 : 0;
}
