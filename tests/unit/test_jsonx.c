/* jsonx: strict record parsing, schema check, paths, timestamps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "jsonx.h"

static void test_loads_table(void **state)
{
    static const struct { const char *in; int ok; const char *err; } rows[] = {
        { "{\"schema\":\"mailfleet.inbound.v1\"}", 1, NULL },
        { "  {\"a\":1}\n", 1, NULL },
        { "{\"a\":1,\"a\":2}", 0, "duplicate" },
        { "[1,2]", 0, "not a JSON object" },
        { "\"str\"", 0, "" },
        { "{\"a\":1} {}", 0, "" },
        { "{\"a\":", 0, "" },
        { "", 0, "" },
        { "{\"a\":\"\\u0000\"}", 0, "" },
        { "{\"a\":\"\xff\"}", 0, "" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char err[256] = "";
        json_t *v = jsonx_loads(rows[i].in, strlen(rows[i].in), err, sizeof(err));
        if (rows[i].ok != (v != NULL))
            fail_msg("row %zu (%s): %s", i, rows[i].in, v ? "accepted" : err);
        if (!v && !strstr(err, rows[i].err))
            fail_msg("row %zu: error '%s' lacks '%s'", i, err, rows[i].err);
        if (!v)
            assert_true(err[0] != '\0');
        json_decref(v);
    }
}

static void test_record_round_trip(void **state)
{
    json_t *r = jsonx_record_new("revocation");
    assert_int_equal(jsonx_record_check(r, "revocation"), 0);
    assert_int_equal(jsonx_record_check(r, "inbound"), -EINVAL);
    assert_int_equal(jsonx_set_str(r, "kind", "message"), 0);
    assert_int_equal(jsonx_set_str(r, "bad", "\xc3("), -EINVAL);
    assert_int_equal(jsonx_set_time(r, "revoked_at", 1795687200123LL), 0);
    size_t len;
    char *s = jsonx_dumps(r, &len);
    assert_string_equal(s, "{\"schema\":\"mailfleet.revocation.v1\",\"kind\":\"message\","
                           "\"revoked_at\":\"2026-11-26T10:00:00.123Z\"}");
    assert_int_equal(len, strlen(s));
    char err[128];
    json_t *back = jsonx_loads(s, len, err, sizeof(err));
    assert_non_null(back);
    assert_int_equal(jsonx_time_ms(back, "revoked_at"), 1795687200123LL);
    assert_true(json_equal(r, back));
    free(s);
    json_decref(back);
    json_decref(r);
    json_t *notobj = json_integer(1);
    assert_int_equal(jsonx_record_check(notobj, "x"), -EINVAL);
    json_decref(notobj);
}

static void test_paths(void **state)
{
    static const char doc[] =
        "{\"id\":\"x\",\"n\":42,\"envelope\":{\"mail_from\":\"a@b.example\",\"tls\":true,"
        "\"deep\":{\"k\":\"v\"}},\"at\":\"2026-11-26T10:00:00Z\",\"badat\":\"yesterday\"}";
    char err[128];
    json_t *v = jsonx_loads(doc, sizeof(doc) - 1, err, sizeof(err));
    assert_non_null(v);
    static const struct { const char *path; const char *str; } rows[] = {
        { "id", "x" }, { "envelope.mail_from", "a@b.example" }, { "envelope.deep.k", "v" },
        { "n", NULL }, { "envelope", NULL }, { "envelope.tls", NULL }, { "missing", NULL },
        { "envelope.missing", NULL }, { "id.x", NULL }, { "", NULL }, { ".id", NULL },
        { "envelope.", NULL }, { "envelope..mail_from", NULL },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const char *got = jsonx_str(v, rows[i].path);
        if ((got == NULL) != (rows[i].str == NULL) || (got && strcmp(got, rows[i].str) != 0))
            fail_msg("row %zu (%s): %s", i, rows[i].path, got ? got : "(null)");
    }
    int64_t n = 0;
    assert_int_equal(jsonx_int(v, "n", &n), 0);
    assert_int_equal(n, 42);
    assert_int_equal(jsonx_int(v, "id", &n), -EINVAL);
    assert_int_equal(jsonx_int(v, "nope", &n), -EINVAL);
    assert_true(jsonx_path(v, "envelope.tls") == json_true());
    assert_int_equal(jsonx_time_ms(v, "at"), 1795687200000LL);
    assert_int_equal(jsonx_time_ms(v, "badat"), -1);
    assert_int_equal(jsonx_time_ms(v, "n"), -1);
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loads_table),
        cmocka_unit_test(test_record_round_trip),
        cmocka_unit_test(test_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
