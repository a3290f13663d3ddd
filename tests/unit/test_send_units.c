/* send: the pure pieces — VERP tokens, SMTP reply parsing, the token bucket,
 * the transport hold's back-off, the suppression copy's apply/check rules,
 * the outbox writer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "metrics.h"
#include "process.h"
#include "send/ratelimit.h"
#include "send/send_hold.h"
#include "suppression_copy.h"
#include "send/transport.h"
#include "verp.h"
#include "tokens.h"

static const char key[] = "0123456789abcdef0123456789abcdef";
static const char id[] = "019ac0f2-4000-7123-a456-fedcba987654";

static void test_verp_roundtrip(void **state)
{
    static const struct { const char *rcpt; } rows[] = {
        { "a@x.com" }, { "Very.Long+tag@sub.example.org" }, { "x@y.zz" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char tok[VERP_TOKEN_LEN + 1], back[VERP_ID_LEN + 1];
        assert_int_equal(verp_token(key, strlen(key), "verp", id, rows[i].rcpt, tok), 0);
        assert_int_equal(strlen(tok), VERP_TOKEN_LEN);
        assert_int_equal(strspn(tok, "abcdefghijklmnopqrstuvwxyz234567"), VERP_TOKEN_LEN);
        /* "bounce+" + token fits an SMTP local part (<= 64). */
        assert_true(strlen("bounce+") + strlen(tok) <= 64);
        assert_int_equal(verp_check(key, strlen(key), "verp", tok, rows[i].rcpt, back), 0);
        assert_string_equal(back, id);
        /* Relays may upper-case a local part. */
        for (char *p = tok; *p; p++)
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 32);
        assert_int_equal(verp_check(key, strlen(key), "verp", tok, rows[i].rcpt, back), 0);
    }
}

static void test_verp_rejects(void **state)
{
    char tok[VERP_TOKEN_LEN + 1], back[VERP_ID_LEN + 1];
    assert_int_equal(verp_token(key, strlen(key), "verp", "not-a-uuid", "a@x.com", tok), -EINVAL);
    assert_int_equal(verp_token(key, strlen(key), "verp", id, "a@x.com", tok), 0);
    /* other recipient, other tag, other key, tampered, truncated */
    assert_int_equal(verp_check(key, strlen(key), "verp", tok, "b@x.com", back), -EINVAL);
    assert_int_equal(verp_check(key, strlen(key), "unsubscribe", tok, "a@x.com", back), -EINVAL);
    assert_int_equal(verp_check("another key 12345678", 20, "verp", tok, "a@x.com", back), -EINVAL);
    char bad[VERP_TOKEN_LEN + 1];
    strcpy(bad, tok);
    bad[5] = bad[5] == 'a' ? 'b' : 'a';
    assert_int_equal(verp_check(key, strlen(key), "verp", bad, "a@x.com", back), -EINVAL);
    bad[5] = '!';
    assert_int_equal(verp_check(key, strlen(key), "verp", bad, "a@x.com", back), -EINVAL);
    tok[VERP_TOKEN_LEN - 1] = '\0';
    assert_int_equal(verp_check(key, strlen(key), "verp", tok, "a@x.com", back), -EINVAL);
}

static void test_verp_keys_deterministic(void **state)
{
    const char *keys[] = { "k1:6d61696c666c6565742d6465762d6b65792d6f6e65" };
    char err[128];
    struct tokens *t = tokens_new(keys, 1, err, sizeof(err));
    assert_non_null(t);
    /* deterministic: feedback derives the same keys, so its check passes */
    struct verp_keys *a = verp_keys_new(t), *b = verp_keys_new(t);
    static const char id[] = "0190f3a2-0000-7000-8000-000000000001";
    char tok[VERP_TOKEN_LEN + 1], back[VERP_ID_LEN + 1];
    assert_int_equal(verp_keys_token(a, "verp", id, "a@x.com", tok), 0);
    assert_int_equal(verp_keys_check(b, "verp", tok, "a@x.com", back), 0);
    assert_string_equal(back, id);
    verp_keys_free(a);
    verp_keys_free(b);
    tokens_free(t);
}

static void test_parse_reply(void **state)
{
    static const struct { const char *line; int code; const char *status; } rows[] = {
        { "250 2.0.0 Ok: queued as 4F1", 250, "2.0.0" },
        { "550 5.1.1 <x@y.z>: Recipient address rejected: User unknown", 550, "5.1.1" },
        { "450 4.2.0 busy", 450, "4.2.0" },
        { "421 Service not available", 421, "4.0.0" },
        { "554 no enhanced", 554, "5.0.0" },
        { "250-2.1.5 continued", 250, "2.1.5" },
        { "550 5.1.", 550, "5.0.0" },
        { "550 9.1.1 wrong class", 550, "5.0.0" },
        { "garbage", 0, "4.0.0" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int code;
        char status[16];
        transport_parse_reply(rows[i].line, &code, status);
        assert_int_equal(code, rows[i].code);
        assert_string_equal(status, rows[i].status);
    }
}

static void test_ratelimit(void **state)
{
    struct ratelimit *rl = ratelimit_new(10, 3);   /* 10/s, burst 3 */
    int64_t t = 1000000;
    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_take(rl, t), 0);
    int64_t w = ratelimit_take(rl, t);
    assert_true(w > 90000 && w <= 100001);          /* one token every 100 ms */
    assert_int_equal(ratelimit_take(rl, t + 100000), 0);
    assert_true(ratelimit_take(rl, t + 100000) > 0);
    /* refill caps at the burst */
    assert_true(ratelimit_tokens(rl, t + 10000000) <= 3.0);
    assert_true(ratelimit_tokens(rl, t + 10000000) >= 2.99);
    ratelimit_free(rl);
    struct ratelimit *none = ratelimit_new(0, 1);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(ratelimit_take(none, t), 0);
    ratelimit_free(none);
}

static double hold_gauge(const char *reason)
{
    char labels[128];
    snprintf(labels, sizeof(labels), "transport=\"unit\",reason=\"%s\"", reason);
    return metric_value(metric_gauge("mailfleet_send_transport_paused", "", labels));
}

enum hold_event { LOOK, REFUSED, ANSWERED, BATCH_DONE };

static void test_send_hold(void **state)
{
    struct send_hold *h = send_hold_new("unit", 5000, 12000);
    char why[256];
    assert_int_equal(send_hold_wait(h, 0), 0);
    assert_int_equal(send_hold_ready_check(h, why, sizeof(why)), 1);
    assert_true(hold_gauge("quota") == 0);
    /* one row per step: at t, for a transfer (or batch) started at `started`,
     * a refusal for reason / an answer that is no refusal / a batch without
     * a refusal / a look; then the wait the step started (refusals) or
     * whether it ended the hold (answers, batches), the wait left at t, and
     * whether a hold is on */
    static const struct {
        int64_t t, started;
        enum hold_event ev;
        const char *reason;
        int64_t result, left;
        int held;
    } steps[] = {
        { 0, 0, REFUSED, "quota", 5000, 5000, 1 },
        { 100, 50, REFUSED, "quota", 0, 4900, 1 },                 /* in flight when held: no new wait */
        { 200, 150, REFUSED, "sending_paused", 0, 4800, 1 },       /* the reason changes, not the wait */
        { 5000, 0, LOOK, NULL, 0, 0, 1 },                          /* the wait is over: lanes try again */
        { 5200, 4900, REFUSED, "sending_paused", 0, 0, 1 },        /* begun before the wait ended: no doubling */
        { 5300, 5100, REFUSED, "sending_paused", 5000, 5000, 1 },  /* the next try: the new reason's own base */
        { 10400, 10300, REFUSED, "sending_paused", 10000, 10000, 1 }, /* the same reason: twice as long */
        { 20500, 20400, REFUSED, "sending_paused", 12000, 12000, 1 }, /* up to the maximum */
        { 32600, 32550, ANSWERED, NULL, 1, 0, 0 },                 /* a recipient's bounce, say: ended */
        { 40000, 39000, REFUSED, "throttled", 1000, 1000, 1 },     /* a rate limit waits a second first */
        { 40100, 39500, ANSWERED, NULL, 0, 900, 1 },               /* begun before the hold: no sign */
        { 41100, 41050, REFUSED, "throttled", 2000, 2000, 1 },
        { 41500, 41200, BATCH_DONE, NULL, 0, 1600, 1 },            /* a batch begun during the wait */
        { 43200, 43150, BATCH_DONE, NULL, 1, 0, 0 },               /* one after it, no refusal: ended */
        { 43300, 43250, BATCH_DONE, NULL, 0, 0, 0 },               /* nothing left to end */
        { 50000, 49000, REFUSED, "throttled", 1000, 1000, 1 },     /* a new hold starts from the base */
        { 51100, 51050, REFUSED, "sending_paused", 5000, 5000, 1 },/* after a throttle: the pause's base, not 2 s */
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        int64_t got = 0;
        if (steps[i].ev == REFUSED)
            got = send_hold_refused(h, steps[i].reason, steps[i].started, steps[i].t);
        else if (steps[i].ev == ANSWERED)
            got = send_hold_answered(h, steps[i].started);
        else if (steps[i].ev == BATCH_DONE)
            got = send_hold_batch_done(h, steps[i].started);
        int ready = send_hold_ready_check(h, why, sizeof(why));
        if (got != steps[i].result || send_hold_wait(h, steps[i].t) != steps[i].left || ready == steps[i].held)
            fail_msg("step %zu: got %lld left %lld ready %d", i, (long long)got,
                     (long long)send_hold_wait(h, steps[i].t), ready);
        if (i == 2) {
            assert_true(hold_gauge("quota") == 0);
            assert_true(hold_gauge("sending_paused") == 1);
        }
        if (i == 8 || i == 13)
            assert_true(hold_gauge("sending_paused") == 0 && hold_gauge("throttled") == 0);
    }
    /* held, even after the wait, until a sign: readiness names the reason */
    assert_int_equal(send_hold_ready_check(h, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "sending_paused"));
    assert_true(hold_gauge("sending_paused") == 1);
    assert_true(hold_gauge("throttled") == 0);
    assert_int_equal(send_hold_answered(h, 60000), 1);
    assert_int_equal(send_hold_answered(h, 60000), 0);
    assert_true(hold_gauge("sending_paused") == 0);
    send_hold_free(h);
}

static void test_suppression_copy(void **state)
{
    char dir[] = "/tmp/mf-supp-XXXXXX", err[256], reason[64];
    assert_non_null(mkdtemp(dir));
    struct suppression_copy *s = suppression_copy_open(dir, err, sizeof(err));
    assert_non_null(s);
    const char *bounce = "{\"schema\":\"mailfleet.suppression.v1\",\"emailAddress\":\"a@x.com\",\"reason\":\"BOUNCE\",\"lastUpdateTime\":\"2026-11-26T10:00:00.123Z\"}";
    const char *unsub = "{\"schema\":\"mailfleet.suppression.v1\",\"emailAddress\":\"b@x.com\",\"reason\":\"UNSUBSCRIBE\",\"lastUpdateTime\":\"2026-11-26T10:00:00.123Z\",\"list\":\"alerts\"}";
    assert_int_equal(suppression_copy_apply(s, "a@X.COM", 7, bounce, strlen(bounce)), 0);
    assert_int_equal(suppression_copy_apply(s, "b@x.com|alerts", 14, unsub, strlen(unsub)), 0);
    assert_int_equal(suppression_copy_apply(s, "not an address", 14, bounce, strlen(bounce)), 0);
    int per_list;
    static const struct { const char *addr, *list; int want, per_list; const char *reason; } rows[] = {
        { "a@x.com", NULL, 1, 0, "BOUNCE" },
        { "a@x.com", "alerts", 1, 0, "BOUNCE" },
        { "b@x.com", NULL, 0, 0, "" },
        { "b@x.com", "alerts", 1, 1, "UNSUBSCRIBE" },
        { "B@X.com", "alerts", 1, 1, "UNSUBSCRIBE" },   /* keys are lower-cased */
        { "b@x.com", "other", 0, 0, "" },
        { "c@x.com", "alerts", 0, 0, "" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        reason[0] = '\0';
        per_list = 0;
        assert_int_equal(suppression_copy_check(s, rows[i].addr, rows[i].list, reason, sizeof(reason), &per_list),
                         rows[i].want);
        if (rows[i].want) {
            assert_string_equal(reason, rows[i].reason);
            assert_int_equal(per_list, rows[i].per_list);
        }
    }
    /* tombstone removes; later write wins */
    assert_int_equal(suppression_copy_apply(s, "a@x.com", 7, NULL, 0), 0);
    assert_int_equal(suppression_copy_check(s, "a@x.com", NULL, reason, sizeof(reason), NULL), 0);
    suppression_copy_free(s);
    /* reopening starts empty: the topic is re-read from its start */
    s = suppression_copy_open(dir, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(suppression_copy_check(s, "b@x.com", "alerts", reason, sizeof(reason), NULL), 0);
    suppression_copy_free(s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void done_count(void *opaque, struct transport_job *job)
{
    (*(int *)opaque)++;
}

static void test_outbox(void **state)
{
    char dir[] = "/tmp/mf-outbox-XXXXXX", err[256], uri[128], path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(uri, sizeof(uri), "outbox:%s", dir);
    struct transport_config tc = { .connections = 1, .per_domain = 1 };
    struct transport *t = transport_open(uri, &tc, err, sizeof(err));
    assert_non_null(t);
    int done = 0;
    struct transport_job jobs[2] = {
        { .id = id, .mail_from = "b@x.com", .rcpt = "a/b@x.com", .prefix = "X-A: 1\r\n", .prefix_len = 8,
          .body = "S: x\r\n\r\nbody\r\n", .body_len = 14, .opaque = &done },
        { .id = id, .mail_from = "b@x.com", .rcpt = "c@x.com", .prefix = "", .prefix_len = 0,
          .body = "S: x\r\n\r\nbody\r\n", .body_len = 14, .opaque = &done },
    };
    stop_flag_t stop = 0;
    assert_int_equal(transport_send(t, jobs, 2, NULL, done_count, &stop), 0);
    assert_int_equal(done, 2);
    assert_int_equal(jobs[0].result, TRANSPORT_OK);
    snprintf(path, sizeof(path), "%s/a%%2Fb@x.com/%s.eml", dir, id);   /* '/' escaped: one dir */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char buf[64] = "";
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    /* a final delivery: Return-Path (the envelope sender) first */
    static const char want[] = "Return-Path: <b@x.com>\r\nX-A: 1\r\nS: x\r\n\r\nbody\r\n";
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(buf, want, sizeof(want) - 1);
    transport_free(t);
    assert_null(transport_open("ftp://x", &tc, err, sizeof(err)));
    assert_null(transport_open("smtp://h:25/path", &tc, err, sizeof(err)));
    assert_null(transport_open("ses:BAD REGION", &tc, err, sizeof(err)));
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    process_init(0);   /* GMime, libcurl, OpenSSL: before any test */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verp_roundtrip),
        cmocka_unit_test(test_verp_rejects),
        cmocka_unit_test(test_verp_keys_deterministic),
        cmocka_unit_test(test_parse_reply),
        cmocka_unit_test(test_ratelimit),
        cmocka_unit_test(test_send_hold),
        cmocka_unit_test(test_suppression_copy),
        cmocka_unit_test(test_outbox),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    process_shutdown();
    return rc;
}
