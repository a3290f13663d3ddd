/* worker_loop against the real local bus: every case is a script of
 * per-record behaviours run with batch_max 1 and 64, and checked on what the
 * bus holds afterwards (committed offset, outputs, DLQ records). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "bus.h"
#include "dlq_record.h"
#include "timeutil.h"
#include "worker_loop.h"

#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct bus *g_bus;
static char g_dir[256];
static int g_case;

#define MAXREC 32

/* Per record (by its value, "0".."n-1"), one character of the script:
 *   o  ok, two outputs
 *   r  WL_RETRY (record) the first time, then ok
 *   R  WL_RETRY (record) every time: dead after max_attempts
 *   e  WL_RETRY (environment) the first three times, then ok
 *   d  WL_DEAD
 *   s  ok, and sets the stop flag (the batch must still commit)
 *   p  ok, but one output names a partition that does not exist, the first
 *      time only: the commit fails */
struct script {
    const char *plan;
    int calls[MAXREC];
    atomic_int stop;
    char out_topic[128];
};

static void handle(void *opaque, const struct bus_record *r, size_t index, struct wl_batch *out,
                   struct wl_result *res)
{
    struct script *s = opaque;
    int i = atoi(r->value);
    int call = ++s->calls[i];
    struct bus_record o = { .topic = s->out_topic, .key = r->key, .key_len = r->key_len,
                            .value = r->value, .value_len = r->value_len, .partition = -1 };
    switch (s->plan[i]) {
    case 'r':
        if (call == 1) {
            wl_output(out, &o);   /* dropped by the loop: not WL_OK */
            wl_result_set(res, WL_RETRY, WL_CAUSE_RECORD, "test.r", "store", "not yet");
            res->retry_ms = 1;
            return;
        }
        break;
    case 'R':
        wl_result_set(res, WL_RETRY, WL_CAUSE_RECORD, "test.R", "store", "never");
        return;
    case 'e':
        if (call <= 3) {
            wl_result_set(res, WL_RETRY, WL_CAUSE_ENVIRONMENT, "test.e", "store", "disk full");
            return;
        }
        break;
    case 'd':
        wl_output(out, &o);
        wl_result_set(res, WL_DEAD, WL_CAUSE_RECORD, "test.d", "parse", "bad\r\nrecord");
        return;
    case 's':
        s->stop = 1;
        break;
    case 'p':
        if (call == 1)
            o.partition = 999;
        break;
    }
    wl_output(out, &o);
    o.partition = -1;
    wl_output(out, &o);
}

static const struct wl_handler handler = { .handle = handle };

struct loop_case {
    const char *plan;
    int dlq;               /* records expected on the DLQ */
    const char *calls;     /* handle() calls per record, one digit each */
    int stops;             /* the script stops the loop */
};

static const struct loop_case cases[] = {
    { "oooooooooo", 0, "1111111111", 0 },
    { "o", 0, "1", 0 },
    { "ooooroooo", 0, "111121111", 0 },      /* retry mid-batch: earlier ones once */
    { "rooo", 0, "2111", 0 },
    { "oodoo", 1, "11111", 0 },
    { "ooRoo", 1, "11311", 0 },              /* max_attempts 3, then dead */
    { "ooeoo", 0, "11411", 0 },              /* environment: never dead */
    { "oopoo", 0, NULL, 0 },                 /* failed commit: redone */
    { "oosoo", 0, "11111", 1 },              /* stop finishes the batch */
};

static void produce_records(const char *topic, int n)
{
    /* Ten headers, more than a fixed array would keep, and stale mf.*
     * values the DLQ copy must replace, not repeat. */
    static const struct bus_header hs[] = {
        { "h0", "v0", 2 }, { "h1", "v1", 2 }, { "h2", "v2", 2 }, { "h3", "v3", 2 },
        { "mf.error.stage", "old", 3 }, { "h5", "v5", 2 }, { "mf.trace", "t", 1 },
        { "mf.attempts", "9", 1 }, { "h8", "", 0 }, { "mf.source.topic", "x", 1 },
    };
    char err[256] = "";
    for (int i = 0; i < n; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        struct bus_record r = { .topic = topic, .key = "k", .key_len = 1, .value = v,
                                .value_len = strlen(v), .headers = hs,
                                .n_headers = sizeof hs / sizeof hs[0], .partition = -1 };
        if (bus_produce(g_bus, &r, 1, 5000, err, sizeof err) != 0)
            fail_msg("produce: %s", err);
    }
}

static int count_topic(const char *topic, struct bus_record **keep, int max)
{
    struct bus_partition_stats st[4];
    char err[256] = "";
    int np = bus_topic_stats(g_bus, topic, NULL, st, 4, err, sizeof err);
    int n = 0;
    for (int p = 0; p < np; p++)
        for (int64_t off = st[p].low; off < st[p].high; off++) {
            struct bus_record *r = NULL;
            if (bus_read_at(g_bus, topic, st[p].partition, off, &r, 1000) != 1)
                continue;
            if (keep && n < max)
                keep[n] = r;
            else
                bus_record_free(r);
            n++;
        }
    return n;
}

static int64_t committed(const char *topic, const char *group)
{
    struct bus_partition_stats st[4];
    char err[256] = "";
    int np = bus_topic_stats(g_bus, topic, group, st, 4, err, sizeof err);
    assert_int_equal(np, 1);
    return st[0].committed;
}

static void check_dlq_record(const struct bus_record *d, const char *in_topic)
{
    /* All original headers but the replaced mf.* ones, in order, then ours. */
    static const char *const want[] = {
        "h0", "h1", "h2", "h3", "h5", "mf.trace", "h8", "mf.error.stage", "mf.error.class",
        "mf.error.message", "mf.source.topic", "mf.source.partition", "mf.source.offset", "mf.attempts",
    };
    assert_int_equal(d->n_headers, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < d->n_headers; i++)
        assert_string_equal(d->headers[i].name, want[i]);
    assert_true(d->key_len == 1 && memcmp(d->key, "k", 1) == 0);
    const struct bus_header *h = bus_record_header(d, "mf.source.topic");
    assert_true(h->value_len == strlen(in_topic) && memcmp(h->value, in_topic, h->value_len) == 0);
    h = bus_record_header(d, "mf.error.message");
    assert_null(memchr(h->value, '\n', h->value_len));
    assert_null(memchr(h->value, '\r', h->value_len));
}

static void run_case(const struct loop_case *lc, size_t batch_max)
{
    char in[128], group[128], dlq[128];
    struct script s = { .plan = lc->plan };
    int n = (int)strlen(lc->plan);
    g_case++;
    snprintf(in, sizeof in, "wl-in-%d", g_case);
    snprintf(group, sizeof group, "wl-g-%d", g_case);
    snprintf(dlq, sizeof dlq, "wl-dlq-%d", g_case);
    snprintf(s.out_topic, sizeof s.out_topic, "wl-out-%d", g_case);
    produce_records(in, n);

    const char *topics[] = { in, NULL };
    char err[256] = "";
    struct bus_consumer *c = bus_consumer_new(g_bus, group, topics, 1, err, sizeof err);
    assert_non_null(c);
    struct worker_loop_options o = {
        .worker = "test", .group = group, .dlq_topic = dlq, .batch_max = batch_max,
        .max_attempts = 3, .backoff_ms = 1, .poll_timeout_ms = 200, .stop = &s.stop,
        .handler = &handler, .opaque = &s,
    };
    struct worker_loop *wl = worker_loop_new(c, &o);
    int saw_not_ready = 0, steps = 0;
    while (committed(in, group) < n && steps++ < 200) {
        int got = worker_loop_step(wl);
        saw_not_ready |= !worker_loop_ready(wl);
        if (batch_max == 1)
            assert_true(got <= 1);
        if (lc->stops && s.stop) {
            /* The stopping batch was committed whole; the loop now idles. */
            assert_int_equal(worker_loop_step(wl), 0);
            break;
        }
        if (strchr(lc->plan, 'o') && batch_max >= (size_t)n && steps == 1 && !strpbrk(lc->plan, "rReps"))
            assert_int_equal(got, n);   /* a backlog goes in one batch */
    }
    int64_t done = committed(in, group);
    if (lc->stops)
        assert_int_equal(done, batch_max == 1 ? (int)(strchr(lc->plan, 's') - lc->plan) + 1 : n);
    else
        assert_int_equal(done, n);
    assert_int_equal(worker_loop_ready(wl), 1);
    if (strchr(lc->plan, 'e') || strchr(lc->plan, 'p'))
        assert_true(saw_not_ready);

    if (lc->calls)
        for (int i = 0; i < (int)done; i++)
            if (s.calls[i] != lc->calls[i] - '0')
                fail_msg("plan %s, batch %zu: record %d handled %d times, want %c", lc->plan, batch_max, i,
                         s.calls[i], lc->calls[i]);
    /* Two outputs per record handled OK and committed, none for the others. */
    assert_int_equal(count_topic(s.out_topic, NULL, 0), 2 * ((int)done - lc->dlq));
    struct bus_record *d[4];
    int nd = count_topic(dlq, d, 4);
    assert_int_equal(nd, lc->dlq);
    for (int i = 0; i < nd && i < 4; i++) {
        check_dlq_record(d[i], in);
        const struct bus_header *h = bus_record_header(d[i], "mf.attempts");
        assert_true(h->value_len == 1 && *(const char *)h->value == (strchr(lc->plan, 'R') ? '3' : '1'));
        bus_record_free(d[i]);
    }
    worker_loop_free(wl);
    bus_consumer_free(c);
}

static void test_cases_batch_1(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i], 1);
}

static void test_cases_batch_64(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i], 64);
}

/* Stop set before a step: nothing is polled, nothing committed. */
static void test_stopped_loop_polls_nothing(void **state)
{
    char err[256] = "";
    struct script s = { .plan = "o", .stop = 1 };
    snprintf(s.out_topic, sizeof s.out_topic, "wl-out-stopped");
    produce_records("wl-in-stopped", 1);
    const char *topics[] = { "wl-in-stopped", NULL };
    struct bus_consumer *c = bus_consumer_new(g_bus, "wl-g-stopped", topics, 1, err, sizeof err);
    struct worker_loop_options o = { .worker = "test", .batch_max = 8, .stop = &s.stop,
                                     .poll_timeout_ms = 10, .handler = &handler, .opaque = &s };
    struct worker_loop *wl = worker_loop_new(c, &o);
    worker_loop_run(wl);   /* returns at once */
    assert_int_equal(s.calls[0], 0);
    assert_int_equal(committed("wl-in-stopped", "wl-g-stopped"), -1);
    worker_loop_free(wl);
    bus_consumer_free(c);
}

/* The DLQ builder on its own: a record without headers, and CR/LF and
 * overlong messages. */
static void test_dlq_record_plain(void **state)
{
    struct bus_record r = { .topic = "t", .value = "v", .value_len = 1, .partition = 0, .offset = 41 };
    char longmsg[2000];
    memset(longmsg, 'x', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = '\0';
    longmsg[5] = '\n';
    struct dlq_record d;
    dlq_record_init(&d, &r, "t.dlq", "s", "parse", longmsg, 2);
    assert_string_equal(d.rec.topic, "t.dlq");
    assert_null(d.rec.key);
    assert_int_equal(d.rec.n_headers, 7);
    const struct bus_header *h = bus_record_header(&d.rec, "mf.error.message");
    assert_int_equal(h->value_len, 1024);
    assert_null(memchr(h->value, '\n', h->value_len));
    h = bus_record_header(&d.rec, "mf.source.offset");
    assert_true(h->value_len == 2 && memcmp(h->value, "41", 2) == 0);
    dlq_record_release(&d);
}

/* batch_begin sees the whole batch before any handle(); refusing it once
 * commits nothing and the same records come back whole. */
struct begin_state {
    struct script s;
    int begins, refused;
    size_t sizes[8];
};

static int begin_refuse_once(void *opaque, struct bus_record *const *recs, size_t n)
{
    struct begin_state *b = opaque;
    if (b->begins < 8)
        b->sizes[b->begins] = n;
    b->begins++;
    if (!b->refused) {
        b->refused = 1;
        return -1;
    }
    return 0;
}

static void handle_begin(void *opaque, const struct bus_record *r, size_t index, struct wl_batch *out,
                         struct wl_result *res)
{
    handle(&((struct begin_state *)opaque)->s, r, index, out, res);
}

static void test_batch_begin_abandons(void **state)
{
    static const struct wl_handler h = { .batch_begin = begin_refuse_once, .handle = handle_begin };
    char err[256] = "";
    struct begin_state b = { .s = { .plan = "oooo" } };
    snprintf(b.s.out_topic, sizeof b.s.out_topic, "wl-out-begin");
    produce_records("wl-in-begin", 4);
    const char *topics[] = { "wl-in-begin", NULL };
    struct bus_consumer *c = bus_consumer_new(g_bus, "wl-g-begin", topics, 1, err, sizeof err);
    struct worker_loop_options o = { .worker = "test", .batch_max = 64, .stop = &b.s.stop,
                                     .poll_timeout_ms = 200, .handler = &h, .opaque = &b };
    struct worker_loop *wl = worker_loop_new(c, &o);
    assert_int_equal(worker_loop_step(wl), 0);
    assert_int_equal(committed("wl-in-begin", "wl-g-begin"), -1);
    assert_int_equal(b.s.calls[0], 0);
    assert_int_equal(worker_loop_step(wl), 4);
    assert_int_equal(b.begins, 2);
    assert_int_equal(b.sizes[0], 4);
    assert_int_equal(b.sizes[1], 4);
    assert_int_equal(committed("wl-in-begin", "wl-g-begin"), 4);
    assert_int_equal(count_topic("wl-out-begin", NULL, 0), 8);
    worker_loop_free(wl);
    bus_consumer_free(c);
}

/* before_commit: called once per batch that commits something, after its
 * handlers; a refusal commits nothing and the whole batch comes again. */
struct sync_state {
    struct script s;
    int syncs;
};

static int sync_refuse_once(void *opaque, char *err, size_t errlen)
{
    struct sync_state *y = opaque;
    if (y->syncs++ == 0) {
        snprintf(err, errlen, "syncfs: No space left on device");
        return -1;
    }
    return 0;
}

static void handle_sync(void *opaque, const struct bus_record *r, size_t index, struct wl_batch *out,
                        struct wl_result *res)
{
    handle(&((struct sync_state *)opaque)->s, r, index, out, res);
}

static void test_before_commit_refusal_redoes_the_batch(void **state)
{
    static const struct wl_handler h = { .handle = handle_sync, .before_commit = sync_refuse_once };
    char err[256] = "";
    struct sync_state y = { .s = { .plan = "ooooo" } };
    snprintf(y.s.out_topic, sizeof y.s.out_topic, "wl-out-sync");
    produce_records("wl-in-sync", 5);
    const char *topics[] = { "wl-in-sync", NULL };
    struct bus_consumer *c = bus_consumer_new(g_bus, "wl-g-sync", topics, 1, err, sizeof err);
    struct worker_loop_options o = { .worker = "test", .batch_max = 64, .stop = &y.s.stop,
                                     .poll_timeout_ms = 200, .handler = &h, .opaque = &y,
                                     .backoff_ms = 1, .backoff_max_ms = 1 };
    struct worker_loop *wl = worker_loop_new(c, &o);
    assert_true(worker_loop_step(wl) < 0);
    assert_int_equal(committed("wl-in-sync", "wl-g-sync"), -1);
    assert_int_equal(count_topic("wl-out-sync", NULL, 0), 0);
    assert_int_equal(worker_loop_ready(wl), 0);
    assert_int_equal(worker_loop_step(wl), 5);
    assert_int_equal(y.syncs, 2);
    for (int i = 0; i < 5; i++)
        assert_int_equal(y.s.calls[i], 2);
    assert_int_equal(committed("wl-in-sync", "wl-g-sync"), 5);
    assert_int_equal(count_topic("wl-out-sync", NULL, 0), 10);
    assert_int_equal(worker_loop_ready(wl), 1);
    worker_loop_free(wl);
    bus_consumer_free(c);
}

/* not_before: a batch ends before a record that is not due; a batch that
 * starts with one waits at most a second and comes back empty. */
static int64_t g_due_ms;

static int64_t due_at(void *opaque, const struct bus_record *r)
{
    return atoi(r->value) == 2 ? g_due_ms : 0;
}

static void test_not_before_cuts_the_batch(void **state)
{
    static const struct wl_handler h = { .handle = handle, .not_before = due_at };
    char err[256] = "";
    struct script s = { .plan = "oooo" };
    snprintf(s.out_topic, sizeof s.out_topic, "wl-out-due");
    produce_records("wl-in-due", 4);
    const char *topics[] = { "wl-in-due", NULL };
    struct bus_consumer *c = bus_consumer_new(g_bus, "wl-g-due", topics, 1, err, sizeof err);
    struct worker_loop_options o = { .worker = "test", .batch_max = 64, .stop = &s.stop,
                                     .poll_timeout_ms = 200, .handler = &h, .opaque = &s };
    struct worker_loop *wl = worker_loop_new(c, &o);
    g_due_ms = now_ms() + 60000;
    assert_int_equal(worker_loop_step(wl), 2);          /* 0 and 1 */
    int64_t t0 = mono_ms();
    assert_int_equal(worker_loop_step(wl), 0);          /* 2 not due: waits, gives up */
    assert_true(mono_ms() - t0 >= 900 && mono_ms() - t0 < 3000);
    assert_int_equal(s.calls[2], 0);
    g_due_ms = now_ms() + 300;                           /* due within the wait */
    assert_int_equal(worker_loop_step(wl), 2);          /* 2 and 3 */
    assert_int_equal(committed("wl-in-due", "wl-g-due"), 4);
    worker_loop_free(wl);
    bus_consumer_free(c);
}

/* output_bus: outputs land on the other bus, offsets on the consumer's;
 * batch_end learns how many records were committed. */
static size_t g_ended_with;

static void note_end(void *opaque, size_t committed)
{
    g_ended_with = committed;
}

static void test_output_bus(void **state)
{
    static const struct wl_handler h = { .handle = handle, .batch_end = note_end };
    char err[256] = "", dir[300], uri[320];
    snprintf(dir, sizeof dir, "%s/other", g_dir);
    snprintf(uri, sizeof uri, "local:%s", dir);
    struct bus *other = bus_open(uri, NULL, err, sizeof err);
    assert_non_null(other);
    struct script s = { .plan = "oooro" };
    snprintf(s.out_topic, sizeof s.out_topic, "wl-out-other");
    produce_records("wl-in-other", 5);
    const char *topics[] = { "wl-in-other", NULL };
    struct bus_consumer *c = bus_consumer_new(g_bus, "wl-g-other", topics, 1, err, sizeof err);
    struct worker_loop_options o = { .worker = "test", .batch_max = 64, .stop = &s.stop,
                                     .poll_timeout_ms = 200, .handler = &h, .opaque = &s,
                                     .output_bus = other, .max_attempts = 3, .backoff_ms = 1 };
    struct worker_loop *wl = worker_loop_new(c, &o);
    assert_int_equal(worker_loop_step(wl), 3);
    assert_int_equal(g_ended_with, 3);
    assert_int_equal(worker_loop_step(wl), 2);
    assert_int_equal(g_ended_with, 2);
    assert_int_equal(committed("wl-in-other", "wl-g-other"), 5);
    assert_int_equal(count_topic("wl-out-other", NULL, 0), 0);   /* not on the consumer's bus */
    struct bus_partition_stats st[4];
    assert_int_equal(bus_topic_stats(other, "wl-out-other", NULL, st, 4, err, sizeof err), 1);
    assert_int_equal(st[0].high - st[0].low, 10);
    worker_loop_free(wl);
    bus_consumer_free(c);
    bus_close(other);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

int main(void)
{
    char err[256] = "", uri[300];
    snprintf(g_dir, sizeof g_dir, "/tmp/mf-worker-loop-XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    snprintf(uri, sizeof uri, "local:%s", g_dir);
    g_bus = bus_open(uri, NULL, err, sizeof err);
    if (!g_bus) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases_batch_1),
        cmocka_unit_test(test_cases_batch_64),
        cmocka_unit_test(test_stopped_loop_polls_nothing),
        cmocka_unit_test(test_batch_begin_abandons),
        cmocka_unit_test(test_before_commit_refusal_redoes_the_batch),
        cmocka_unit_test(test_not_before_cuts_the_batch),
        cmocka_unit_test(test_output_bus),
        cmocka_unit_test(test_dlq_record_plain),
    };
    int failed = cmocka_run_group_tests_name("worker_loop", tests, NULL, NULL);
    bus_close(g_bus);
    nftw(g_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return failed ? 1 : 0;
}
