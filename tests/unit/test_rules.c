/* rules: first match in file order decides; conditions and their codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ingest/rules.h"

static struct rules *make(void)
{
    char err[256];
    struct rules *r = rules_new();
    const struct rule_spec specs[] = {
        { .name = "deny", .recipients = "blocked@iot.localhost", .action = "reject" },
        { .name = "capture", .recipients = "alerts@iot.localhost", .action = "capture" },
        { .name = "bounces", .recipients = "bounce+*@iot.localhost", .action = "feedback" },
        { .name = "unsub", .recipients = "unsubscribe+*@iot.localhost", .action = "unsubscribe" },
        { .name = "tls", .recipients = "tls@iot.localhost", .action = "capture", .require_tls = 1 },
        { .name = "auth", .recipients = "auth@iot.localhost", .action = "capture", .require_auth = 1,
          .allowed_senders = "device:*@sensors.example, *:ops@example.com" },
        { .name = "two", .recipients = "two@iot.localhost", .action = "capture", .max_recipients = 2 },
        { .name = "size", .recipients = "size@iot.localhost", .action = "capture", .max_size = 1000 },
        { .name = "domain", .recipients = "example.org", .action = "capture" },
        /* never reached for alerts@: the earlier rule wins */
        { .name = "late", .recipients = "alerts@iot.localhost", .action = "reject" },
    };
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++)
        assert_int_equal(rules_add(r, &specs[i], err, sizeof(err)), 0);
    return r;
}

static void test_check(void **state)
{
    struct rules *r = make();
    unsigned counts[16] = { 0 };
    counts[6] = 2;   /* "two" already has two recipients */
    static const struct {
        const char *rcpt;
        int tls;
        const char *user, *from;
        uint64_t size;
        int code;
        const char *rule;
        const char *enhanced;
    } rows[] = {
        { "alerts@iot.localhost", 0, NULL, "a@b.example", 0, 250, "capture", "2.1.5" },
        { "ALERTS@iot.localhost", 0, NULL, "a@b.example", 0, 250, "capture", "2.1.5" },
        { "bounce+abc@iot.localhost", 0, NULL, "", 0, 250, "bounces", "2.1.5" },
        { "unsubscribe+x@iot.localhost", 0, NULL, "", 0, 250, "unsub", "2.1.5" },
        { "blocked@iot.localhost", 1, "device", "a@b.example", 0, 550, "deny", "5.7.1" },
        { "nobody@iot.localhost", 0, NULL, "a@b.example", 0, 550, NULL, "5.7.1" },
        { "x@elsewhere.example", 1, "device", "a@b.example", 0, 550, NULL, "5.7.1" },
        { "tls@iot.localhost", 0, NULL, "a@b.example", 0, 530, "tls", "5.7.0" },
        { "tls@iot.localhost", 1, NULL, "a@b.example", 0, 250, "tls", "2.1.5" },
        { "auth@iot.localhost", 1, NULL, "a@sensors.example", 0, 530, "auth", "5.7.0" },
        { "auth@iot.localhost", 1, "device", "a@sensors.example", 0, 250, "auth", "2.1.5" },
        { "auth@iot.localhost", 1, "device", "a@other.example", 0, 550, "auth", "5.7.1" },
        { "auth@iot.localhost", 1, "other", "a@sensors.example", 0, 550, "auth", "5.7.1" },
        { "auth@iot.localhost", 1, "other", "ops@example.com", 0, 250, "auth", "2.1.5" },
        { "auth@iot.localhost", 1, "device", "", 0, 550, "auth", "5.7.1" },
        { "two@iot.localhost", 0, NULL, "a@b.example", 0, 452, "two", "4.5.3" },
        { "size@iot.localhost", 0, NULL, "a@b.example", 1001, 552, "size", "5.3.4" },
        { "size@iot.localhost", 0, NULL, "a@b.example", 1000, 250, "size", "2.1.5" },
        { "anyone@example.org", 0, NULL, "a@b.example", 0, 250, "domain", "2.1.5" },
        { "anyone@sub.example.org", 0, NULL, "a@b.example", 0, 550, NULL, "5.7.1" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct rules_ctx ctx = { rows[i].tls, rows[i].user, rows[i].from, rows[i].size, counts };
        struct rules_verdict v;
        rules_check(r, rows[i].rcpt, &ctx, &v);
        if (v.code != rows[i].code)
            fail_msg("row %zu (%s): code %d, expected %d", i, rows[i].rcpt, v.code, rows[i].code);
        if (rows[i].rule)
            assert_string_equal(rules_name(r, v.rule), rows[i].rule);
        else
            assert_int_equal(v.rule, -1);
        assert_memory_equal(v.text, rows[i].enhanced, strlen(rows[i].enhanced));
    }
    assert_int_equal(rules_action(r, 2), RULE_FEEDBACK);
    assert_string_equal(rules_action_name(rules_action(r, 3)), "unsubscribe");
    rules_free(r);
}

static void test_bad_specs(void **state)
{
    static const struct rule_spec bad[] = {
        { .name = "a", .recipients = "x@y.example", .action = "deliver" },
        { .name = "b", .recipients = "", .action = "capture" },
        { .name = "c", .recipients = "a@b@c.example", .action = "capture" },
        { .name = "d", .recipients = "x@y.example", .action = "capture", .allowed_senders = "nouser" },
        { .name = "e", .recipients = "x y@z.example", .action = "capture" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        struct rules *r = rules_new();
        assert_int_equal(rules_add(r, &bad[i], err, sizeof(err)), -22);
        assert_non_null(strstr(err, bad[i].name));
        assert_int_equal(rules_count(r), 0);
        rules_free(r);
    }
}

static void test_unsubscribe_token(void **state)
{
    static const struct { const char *addr; int rc; const char *token; } rows[] = {
        { "unsubscribe+abc.def@iot.localhost", 0, "abc.def" },
        { "unsubscribe+A-b_1.x-Y_2@iot.localhost", 0, "A-b_1.x-Y_2" },
        { "u+a+b.c@iot.localhost", -22, NULL },   /* '+' is not token text */
        { "unsubscribe+abc@iot.localhost", -22, NULL },
        { "unsubscribe+agrbo3byez3xzpulaf5xxj4elwj34inhscvxuhilx1@iot.localhost", -22, NULL },
        { "unsubscribe+agrbo3byez3xzpulaf5xxj4elwj34inhscvxuhilxa@iot.localhost", 0,   /* compact */
          "agrbo3byez3xzpulaf5xxj4elwj34inhscvxuhilxa" },
        { "unsubscribe+.abc@iot.localhost", -22, NULL },
        { "unsubscribe+abc.@iot.localhost", -22, NULL },
        { "unsubscribe+a.b.c@iot.localhost", -22, NULL },
        { "unsubscribe@iot.localhost", -22, NULL },
        { "unsubscribe+@iot.localhost", -22, NULL },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char tok[256] = "";
        int rc = rules_unsubscribe_token(rows[i].addr, tok, sizeof(tok));
        if (rc != rows[i].rc)
            fail_msg("%s: %d, expected %d", rows[i].addr, rc, rows[i].rc);
        if (rows[i].token)
            assert_string_equal(tok, rows[i].token);
    }
    char small[4];
    assert_int_equal(rules_unsubscribe_token("unsubscribe+abc.def@iot.localhost", small, sizeof(small)), -22);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_bad_specs),
        cmocka_unit_test(test_unsubscribe_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
