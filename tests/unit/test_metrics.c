/* metrics registry: text format rows as Prometheus expects them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "strbuf.h"

static char *render(void)
{
    struct strbuf b;
    strbuf_init(&b);
    metrics_render(&b);
    return strbuf_detach(&b, NULL);
}

static void test_counter_and_labels(void **state)
{
    struct metric *a = metric_counter("mailfleet_test_total", "Test counter.", "reason=\"size\"");
    struct metric *b = metric_counter("mailfleet_test_total", "Test counter.", "reason=\"rcpt\"");
    assert_ptr_equal(a, metric_counter("mailfleet_test_total", "x", "reason=\"size\""));
    metric_inc(a);
    metric_add(a, 2);
    metric_inc(b);
    char *t = render();
    assert_non_null(strstr(t, "# HELP mailfleet_test_total Test counter.\n# TYPE mailfleet_test_total counter\n"));
    assert_non_null(strstr(t, "mailfleet_test_total{reason=\"size\"} 3\n"));
    assert_non_null(strstr(t, "mailfleet_test_total{reason=\"rcpt\"} 1\n"));
    free(t);
}

static void test_gauge_fraction(void **state)
{
    struct metric *g = metric_gauge("mailfleet_test_ratio", "Ratio.", NULL);
    metric_set(g, 0.25);
    char *t = render();
    assert_non_null(strstr(t, "mailfleet_test_ratio 0.25\n"));
    free(t);
}

static void test_histogram_cumulative(void **state)
{
    static const double bk[] = { 0.01, 0.1, 1 };
    struct metric *h = metric_histogram("mailfleet_test_seconds", "Latency.", "w=\"x\"", bk, 3);
    metric_observe(h, 0.005);
    metric_observe(h, 0.05);
    metric_observe(h, 0.05);
    metric_observe(h, 5);
    char *t = render();
    assert_non_null(strstr(t, "# TYPE mailfleet_test_seconds histogram\n"));
    assert_non_null(strstr(t, "mailfleet_test_seconds_bucket{w=\"x\",le=\"0.01\"} 1\n"));
    assert_non_null(strstr(t, "mailfleet_test_seconds_bucket{w=\"x\",le=\"0.1\"} 3\n"));
    assert_non_null(strstr(t, "mailfleet_test_seconds_bucket{w=\"x\",le=\"1\"} 3\n"));
    assert_non_null(strstr(t, "mailfleet_test_seconds_bucket{w=\"x\",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(t, "mailfleet_test_seconds_count{w=\"x\"} 4\n"));
    assert_non_null(strstr(t, "mailfleet_test_seconds_sum{w=\"x\"} 5.105\n"));
    free(t);
}

static void *adder(void *arg)
{
    for (int i = 0; i < 100000; i++)
        metric_inc(arg);
    return NULL;
}

static void test_concurrent_increments(void **state)
{
    struct metric *c = metric_counter("mailfleet_test_race_total", "Race.", NULL);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, adder, c);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_true(metric_value(c) == 400000);
}

static int collected;
static void collect(void *opaque)
{
    metric_set(opaque, ++collected);
}

static void test_collect_callback(void **state)
{
    struct metric *g = metric_gauge("mailfleet_test_collected", "Collected.", NULL);
    metrics_on_collect(collect, g);
    char *t = render();
    assert_non_null(strstr(t, "mailfleet_test_collected 1\n"));
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_and_labels),
        cmocka_unit_test(test_gauge_fraction),
        cmocka_unit_test(test_histogram_cumulative),
        cmocka_unit_test(test_concurrent_increments),
        cmocka_unit_test(test_collect_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
