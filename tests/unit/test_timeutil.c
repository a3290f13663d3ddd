/* timeutil: RFC 3339 writing and parsing, durations, clocks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "timeutil.h"

static void test_format_table(void **state)
{
    static const struct { int64_t ms; const char *s; } rows[] = {
        { 0, "1970-01-01T00:00:00.000Z" },
        { 1, "1970-01-01T00:00:00.001Z" },
        { 1795687200123LL, "2026-11-26T10:00:00.123Z" },
        { 1709251199999LL, "2024-02-29T23:59:59.999Z" },
        { 4102444799999LL, "2099-12-31T23:59:59.999Z" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char buf[32];
        assert_ptr_equal(rfc3339_ms(rows[i].ms, buf, sizeof(buf)), buf);
        assert_string_equal(buf, rows[i].s);
        assert_int_equal(rfc3339_parse(buf), rows[i].ms);
    }
}

static void test_round_trip_now(void **state)
{
    int64_t t = now_ms();
    for (int64_t ms = t - 86400000LL * 400; ms < t + 86400000LL * 400; ms += 86400000LL + 3601001LL) {
        char buf[32];
        rfc3339_ms(ms, buf, sizeof(buf));
        assert_int_equal(strlen(buf), 24);
        assert_int_equal(rfc3339_parse(buf), ms);
    }
}

static void test_parse_table(void **state)
{
    static const struct { const char *s; int64_t want; } rows[] = {
        { "2026-11-26T10:00:00.123Z", 1795687200123LL },
        { "2026-11-26T10:00:00Z", 1795687200000LL },
        { "2026-11-26T10:00:00z", 1795687200000LL },
        { "2026-11-26T10:00:00.5Z", 1795687200500LL },
        { "2026-11-26T10:00:00.123456789Z", 1795687200123LL },   /* extra digits truncated */
        { "2026-11-26T10:00:00+01:00", 1795683600000LL },
        { "2026-11-26T10:00:00-05:30", 1795707000000LL },
        { "2026-11-26T10:00:00.123+00:00", 1795687200123LL },
        { "2000-03-01T00:00:00+14:00", 951818400000LL },
        { "1970-01-01T00:00:00Z", 0 },
        /* errors */
        { "", -1 },
        { "2026-11-26", -1 },
        { "2026-11-26T10:00:00", -1 },            /* no zone */
        { "2026-11-26T10:00Z", -1 },
        { "2026-11-26T10:00:00.Z", -1 },
        { "2026-11-26T10:00:00+0100", -1 },
        { "2026-11-26T10:00:00+5:30", -1 },
        { "2026-11-26T10:00:00+01", -1 },
        { "2026-11-26T10:00:00+01:0", -1 },
        { "2026-11-26T10:00:00+24:00", -1 },
        { "2026-11-26T10:00:00+01:60", -1 },
        { "2026-11-26T10:00:00Zjunk", -1 },
        { "2026-11-26T10:00:00+01:00x", -1 },
        { "2026-11-26T25:00:00Z", -1 },
        { "2026-11-26T10:61:00Z", -1 },
        { "2026-13-01T10:00:00Z", -1 },
        { "2026-02-30T10:00:00Z", -1 },             /* no such day */
        { "2025-02-29T10:00:00Z", -1 },
        { "2026-11-26 10:00:00Z", -1 },
        { "26-11-26T10:00:00Z", -1 },
        { "not a time", -1 },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int64_t got = rfc3339_parse(rows[i].s);
        if (got != rows[i].want)
            fail_msg("row %zu (%s): %lld, want %lld", i, rows[i].s, (long long)got, (long long)rows[i].want);
    }
}

static void test_duration_table(void **state)
{
    static const struct { const char *s; int64_t want; } rows[] = {
        { "0", 0 }, { "90", 90000 }, { "90s", 90000 }, { "250ms", 250 }, { "5m", 300000 },
        { "2h", 7200000 }, { "36h", 129600000 }, { "14d", 1209600000 }, { "1.5h", 5400000 },
        { "0.5s", 500 },
        { "", -1 }, { "s", -1 }, { "ms", -1 }, { "-1s", -1 }, { " 5s", -1 }, { "5 m", -1 },
        { "5M", -1 }, { "1w", -1 }, { "5sec", -1 }, { "5s ", -1 }, { "forever", -1 },
        { "1e3", -1 }, { "0x10", -1 }, { "1e400", -1 }, { "nan", -1 }, { "inf", -1 },
        { "99999999999999999999d", -1 }, { "106751992000d", -1 }, { "106751991d", 9223372022400000LL },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int64_t got = duration_parse_ms(rows[i].s);
        if (got != rows[i].want)
            fail_msg("row %zu (%s): %lld, want %lld", i, rows[i].s, (long long)got, (long long)rows[i].want);
    }
    assert_int_equal(duration_parse_ms(NULL), -1);
}

static void test_clocks(void **state)
{
    int64_t w = now_ms(), m1 = mono_ms(), u1 = mono_us();
    assert_true(w > 1700000000000LL);         /* after 2023: a sane wall clock */
    int64_t u2 = mono_us(), m2 = mono_ms();
    assert_true(u2 >= u1);
    assert_true(m2 >= m1);
    assert_true(u1 / 1000 - m1 <= 1 && m1 - u1 / 1000 <= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_table),
        cmocka_unit_test(test_round_trip_now),
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_duration_table),
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
