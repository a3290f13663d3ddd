/* alarms: M-of-N evaluation, missing data, re-notification, record shape. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/alarms.h"
#include "topics.h"

static struct alarm_rule rule(int n, int m, enum alarm_missing missing)
{
    struct alarm_rule r = { "inbound-dlq-depth", "desc", "DLQDepth", TOPIC_INBOUND_DLQ,
                            "dlq-operator", "Maximum", 60000, n, m, CMP_GT, 50, missing };
    return r;
}

/* One row per step: datapoint (or missing) -> expected state, notified? */
struct step { int has; double v; enum alarm_state want; int notify; };

static void run_steps(struct alarm_rule r, const struct step *s, size_t n)
{
    struct alarm *a = alarm_new(&r);
    assert_int_equal(alarm_state(a), ALARM_INSUFFICIENT);
    for (size_t i = 0; i < n; i++) {
        char *rec = NULL;
        int got = alarm_evaluate(a, s[i].has, s[i].v, 1000 * (int64_t)(i + 1), 0, &rec);
        if (alarm_state(a) != s[i].want || got != s[i].notify)
            fail_msg("step %zu: state %s notify %d, want %s notify %d", i,
                     alarm_state_name(alarm_state(a)), got, alarm_state_name(s[i].want), s[i].notify);
        free(rec);
    }
    alarm_free(a);
}

static void test_one_of_one(void **state)
{
    static const struct step s[] = {
        { 1, 10, ALARM_OK, 1 },
        { 1, 50, ALARM_OK, 0 },        /* equal is not greater */
        { 1, 51, ALARM_ALARM, 1 },
        { 1, 99, ALARM_ALARM, 0 },
        { 1, 0, ALARM_OK, 1 },
        { 0, 0, ALARM_INSUFFICIENT, 1 },
    };
    run_steps(rule(1, 1, MISSING_MISSING), s, sizeof(s) / sizeof(s[0]));
}

static void test_two_of_three(void **state)
{
    static const struct step s[] = {
        { 1, 60, ALARM_OK, 1 },        /* 1 of 3 breaching: not enough */
        { 1, 10, ALARM_OK, 0 },
        { 1, 70, ALARM_ALARM, 1 },     /* 60, 10, 70: two breach */
        { 1, 10, ALARM_OK, 1 },        /* 10, 70, 10 */
    };
    run_steps(rule(3, 2, MISSING_MISSING), s, sizeof(s) / sizeof(s[0]));
}

static void test_missing_policies(void **state)
{
    static const struct step breaching[] = { { 0, 0, ALARM_ALARM, 1 } };
    run_steps(rule(1, 1, MISSING_BREACHING), breaching, 1);
    static const struct step notb[] = { { 0, 0, ALARM_OK, 1 } };
    run_steps(rule(1, 1, MISSING_NOT_BREACHING), notb, 1);
    static const struct step ignore[] = { { 1, 99, ALARM_ALARM, 1 }, { 0, 0, ALARM_ALARM, 0 } };
    run_steps(rule(1, 1, MISSING_IGNORE), ignore, 2);
}

static void test_record_shape_and_renotify(void **state)
{
    struct alarm_rule r = rule(1, 1, MISSING_MISSING);
    struct alarm *a = alarm_new(&r);
    char *rec = NULL;
    assert_int_equal(alarm_evaluate(a, 1, 51, 1700000000000, 3600000, &rec), 1);
    json_t *o = json_loads(rec, 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "schema")), "mailfleet.alarm.v1");
    assert_string_equal(json_string_value(json_object_get(o, "AlarmName")), "inbound-dlq-depth");
    assert_string_equal(json_string_value(json_object_get(o, "NewStateValue")), "ALARM");
    assert_string_equal(json_string_value(json_object_get(o, "OldStateValue")), "INSUFFICIENT_DATA");
    assert_string_equal(json_string_value(json_object_get(o, "StateChangeTime")), "2023-11-14T22:13:20.000Z");
    assert_non_null(strstr(json_string_value(json_object_get(o, "NewStateReason")), "[51.0]"));
    json_t *t = json_object_get(o, "Trigger");
    assert_string_equal(json_string_value(json_object_get(t, "ComparisonOperator")), "GreaterThanThreshold");
    assert_int_equal(json_integer_value(json_object_get(t, "Period")), 60);
    assert_true(json_real_value(json_object_get(t, "Threshold")) == 50.0);
    assert_int_equal(json_array_size(json_object_get(t, "Dimensions")), 2);
    json_decref(o);
    free(rec);
    /* still breaching: silent until the renotify interval passes */
    assert_int_equal(alarm_evaluate(a, 1, 60, 1700000060000, 3600000, &rec), 0);
    assert_null(rec);
    assert_int_equal(alarm_evaluate(a, 1, 60, 1700003600000, 3600000, &rec), 1);
    assert_non_null(rec);
    free(rec);
    alarm_free(a);
}

static void test_parse(void **state)
{
    enum alarm_cmp c;
    enum alarm_missing m;
    assert_int_equal(alarm_parse_cmp(">=", &c), 0);
    assert_int_equal(c, CMP_GE);
    assert_int_equal(alarm_parse_cmp("LessThanThreshold", &c), 0);
    assert_int_equal(c, CMP_LT);
    assert_int_equal(alarm_parse_cmp("bigger", &c), -1);
    assert_int_equal(alarm_parse_missing("notBreaching", &m), 0);
    assert_int_equal(m, MISSING_NOT_BREACHING);
    assert_int_equal(alarm_parse_missing("sometimes", &m), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_of_one),
        cmocka_unit_test(test_two_of_three),
        cmocka_unit_test(test_missing_policies),
        cmocka_unit_test(test_record_shape_and_renotify),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
