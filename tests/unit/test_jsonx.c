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
#include "topics.h"

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
    json_t *r = jsonx_record_new(SCHEMA_REVOCATION);
    json_object_set_new(r, "kind", json_string("message"));
    assert_int_equal(jsonx_set_time(r, "revoked_at", 1795687200123LL), 0);
    size_t len;
    char *s = jsonx_dumps(r, &len);
    assert_string_equal(s, "{\"schema\":\"mailfleet.revocation.v1\",\"kind\":\"message\","
                           "\"revoked_at\":\"2026-11-26T10:00:00.123Z\"}");
    assert_int_equal(len, strlen(s));
    char err[128];
    json_t *back = jsonx_record_parse(s, len, SCHEMA_REVOCATION, err, sizeof(err));
    assert_non_null(back);
    assert_null(jsonx_record_parse(s, len, SCHEMA_INBOUND, err, sizeof(err)));
    assert_non_null(strstr(err, "unknown schema"));
    assert_int_equal(jsonx_time_ms(back, "revoked_at"), 1795687200123LL);
    assert_true(json_equal(r, back));
    free(s);
    json_decref(back);
    json_decref(r);
}

/* Strict record parsing: what a consumer dead-letters, and the reason it
 * gives. */
static void test_record_parse_table(void **state)
{
    static const struct { const char *in; const char *err; } rows[] = {
        { "{\"schema\":\"mailfleet.revocation.v1\",\"kind\":\"link\"}", NULL },
        /* duplicate keys: two readers could see two values */
        { "{\"schema\":\"mailfleet.revocation.v1\",\"kind\":\"link\",\"kind\":\"message\"}", "duplicate" },
        { "{\"schema\":\"mailfleet.revocation.v1\",\"schema\":\"mailfleet.revocation.v1\"}", "duplicate" },
        /* unknown schema versions and families */
        { "{\"schema\":\"mailfleet.revocation.v2\"}", "unknown schema \"mailfleet.revocation.v2\"" },
        { "{\"schema\":\"mailfleet.inbound.v1\"}", "unknown schema" },
        { "{\"schema\":\"\"}", "unknown schema" },
        /* wrong type or missing schema */
        { "{\"schema\":1}", "no \"schema\" string" },
        { "{\"schema\":null}", "no \"schema\" string" },
        { "{\"kind\":\"link\"}", "no \"schema\" string" },
        { "[\"mailfleet.revocation.v1\"]", "not a JSON object" },
        { "{\"schema\":\"mailfleet.revocation.v1\"", "" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char err[256] = "";
        json_t *v = jsonx_record_parse(rows[i].in, strlen(rows[i].in), SCHEMA_REVOCATION, err, sizeof(err));
        if ((v != NULL) != (rows[i].err == NULL))
            fail_msg("row %zu (%s): %s", i, rows[i].in, v ? "accepted" : err);
        if (!v && (!err[0] || !strstr(err, rows[i].err)))
            fail_msg("row %zu: error '%s' lacks '%s'", i, err, rows[i].err);
        json_decref(v);
    }
}

/* Typed reads: absent, present, wrong type (null included), required. */
static void test_want_table(void **state)
{
    static const char doc[] = "{\"s\":\"x\",\"n\":1,\"z\":null,\"a\":[],\"o\":{\"s\":\"y\"}}";
    char err[128];
    json_t *v = jsonx_loads(doc, sizeof(doc) - 1, err, sizeof(err));
    assert_non_null(v);
    static const struct { const char *path; int required; int rc; const char *val; const char *err; } rows[] = {
        { "s", 1, 0, "x", NULL },
        { "o.s", 1, 0, "y", NULL },
        { "missing", 0, 0, NULL, NULL },
        { "missing", 1, -EINVAL, NULL, "field missing is missing" },
        { "n", 0, -EINVAL, NULL, "field n is not a string" },
        { "z", 0, -EINVAL, NULL, "field z is not a string" },
        { "a", 1, -EINVAL, NULL, "field a is not a string" },
        { "o", 1, -EINVAL, NULL, "field o is not a string" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const char *got = "unset";
        err[0] = '\0';
        int rc = jsonx_want_str(v, rows[i].path, rows[i].required, &got, err, sizeof(err));
        if (rc != rows[i].rc || (got == NULL) != (rows[i].val == NULL) || (got && strcmp(got, rows[i].val)))
            fail_msg("row %zu (%s): rc %d got %s", i, rows[i].path, rc, got ? got : "(null)");
        if (rows[i].err && strcmp(err, rows[i].err) != 0)
            fail_msg("row %zu: error '%s', want '%s'", i, err, rows[i].err);
    }
    const json_t *j;
    assert_int_equal(jsonx_want_array(v, "a", 1, &j, err, sizeof(err)), 0);
    assert_true(json_is_array(j));
    assert_int_equal(jsonx_want_array(v, "o", 1, &j, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "field o is not an array");
    assert_int_equal(jsonx_want_object(v, "o", 1, &j, err, sizeof(err)), 0);
    assert_int_equal(jsonx_want_object(v, "a", 0, &j, err, sizeof(err)), -EINVAL);
    assert_null(j);
    json_decref(v);
}

/* Outside text with invalid UTF-8 still becomes a JSON string. */
static void test_text(void **state)
{
    json_t *t = jsonx_text("250 \xff\xfe ok");
    assert_string_equal(json_string_value(t), "250 ?? ok");
    json_decref(t);
    t = jsonx_text(NULL);
    assert_string_equal(json_string_value(t), "");
    json_decref(t);
    t = jsonx_text("caf\xc3\xa9");
    assert_string_equal(json_string_value(t), "caf\xc3\xa9");
    json_decref(t);
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
        cmocka_unit_test(test_record_parse_table),
        cmocka_unit_test(test_want_table),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
