/* recipients: marker search, list parsing, stripping, HTML to text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "transform/recipients.h"

#define M ":Email_Rxers_Code:"

static const struct {
    const char *text;
    size_t max;
    int found;
    const char *valid;      /* comma-joined */
    size_t n_invalid;
    size_t total;
    const char *stripped;
} cases[] = {
    { "Hi\n" M "[a@x.com,b@y.org]" M "\nbye", 50, 1, "a@x.com,b@y.org", 0, 2, "Hi\n\nbye" },
    { M "a@x.com b@y.org" M, 50, 1, "a@x.com,b@y.org", 0, 2, "" },
    { M "[ a@X.COM ;\r\n  b@Y.org , ]" M, 50, 1, "a@x.com,b@y.org", 0, 2, "" },
    { M "[<A@x.com>, \"c@z.net\"]" M, 50, 1, "A@x.com,c@z.net", 0, 2, "" },
    { M "[a@x.com,a@X.com,a@x.com]" M, 50, 1, "a@x.com", 0, 1, "" },
    { M "[a@x.com,not-an-address,b@@y,c@d]" M, 50, 1, "a@x.com", 3, 1, "" },
    { M "[]" M, 50, 1, "", 0, 0, "" },
    { "no marker at all", 50, 0, "", 0, 0, "no marker at all" },
    { "one " M "[a@x.com] only", 50, 0, "", 0, 0, "one " M "[a@x.com] only" },
    { M "[a@x.com,b@x.com,c@x.com]" M, 2, 1, "a@x.com,b@x.com", 0, 3, "" },
    { "x" M "[a@x.com]" M "y" M "[b@x.com]" M "z", 50, 1, "a@x.com", 0, 1, "xy" M "[b@x.com]" M "z" },
    { M "[mailto:a@x.com]" M, 50, 1, "a@x.com", 0, 1, "" },
    /* strict lists: group syntax and entries spanning a line break are invalid, never addresses */
    { M "[a@x.com\r\nBcc: evil@x.com]" M, 50, 1, "a@x.com", 1, 1, "" },
    { M "[i1@example.org\nBcc: evil@attacker.example, i2@example.org]" M, 50, 1,
      "i1@example.org,i2@example.org", 1, 2, "" },
    { M "[\"hh@x.com\r\nBcc: evil@x.com\", ii@x.com]" M, 50, 1, "ii@x.com", 1, 1, "" },
    { M "[a@x.com\r\nBcc:\r\n evil@x.com, b@x.com]" M, 50, 1, "a@x.com,b@x.com", 1, 2, "" },
    { M "[team: a@x.com b@x.com; c@x.com]" M, 50, 1, "c@x.com", 1, 1, "" },
    { M "[\"a@x.com b@y.org\"]" M, 50, 1, "", 1, 0, "" },
    { M "[ Cc@X.COM ;\r\n dd@y.org,\r\n\tCc@x.com\r\n dd@Y.ORG ]" M, 50, 1, "Cc@x.com,dd@y.org", 0, 2, "" },
    /* the limit counts distinct addresses, case-insensitively */
    { M "[User@X.com, user@x.COM, USER@x.com]" M, 50, 1, "User@x.com", 0, 1, "" },
    { M "[a@x.com,A@X.COM,b@x.com,B@x.com]" M, 2, 1, "a@x.com,b@x.com", 0, 2, "" },
    { M "[a@x.com,b@x.com,c@x.com,A@x.com]" M, 2, 1, "a@x.com,b@x.com", 0, 3, "" },
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct recipients r;
        recipients_parse(cases[i].text, strlen(cases[i].text), M, cases[i].max, &r);
        char joined[1024] = "";
        for (size_t k = 0; k < r.n_valid; k++) {
            if (k)
                strcat(joined, ",");
            strcat(joined, r.valid[k]);
        }
        print_message("case %zu\n", i);
        assert_int_equal(r.found, cases[i].found);
        assert_string_equal(joined, cases[i].valid);
        assert_int_equal(r.n_invalid, cases[i].n_invalid);
        assert_int_equal(r.n_valid_total, cases[i].total);
        char *s = recipients_strip(cases[i].text, strlen(cases[i].text), &r);
        assert_string_equal(s, cases[i].stripped);
        free(s);
        recipients_free(&r);
    }
}

static void test_invalid_entries_are_sanitized(void **state)
{
    (void)state;
    const char *t = M "[bad\x01\xff<name>]" M;
    struct recipients r;
    recipients_parse(t, strlen(t), M, 50, &r);
    assert_int_equal(r.n_invalid, 1);
    assert_string_equal(r.invalid[0], "bad?" "?<name");
    recipients_free(&r);
}

static void test_many_addresses(void **state)
{
    (void)state;
    char *t = malloc(200000);
    strcpy(t, M);
    for (int i = 0; i < 5000; i++)
        sprintf(t + strlen(t), "u%d@x.com,", i);
    strcat(t, M);
    struct recipients r;
    recipients_parse(t, strlen(t), M, 50, &r);
    assert_int_equal(r.n_valid, 50);
    assert_true(r.n_valid_total > 50);
    recipients_free(&r);
    free(t);
}

/* 50 recipients each written twice with other case: 50, within a limit of 50. */
static void test_case_variants_within_limit(void **state)
{
    (void)state;
    char t[8192];
    size_t n = (size_t)sprintf(t, "%s[", M);
    for (int i = 0; i < 50; i++)
        n += (size_t)sprintf(t + n, "user%d@example.org, USER%d@Example.ORG, ", i, i);
    n += (size_t)sprintf(t + n, "]%s", M);
    struct recipients r;
    recipients_parse(t, n, M, 50, &r);
    assert_int_equal(r.n_valid, 50);
    assert_int_equal(r.n_valid_total, 50);
    assert_int_equal(r.n_invalid, 0);
    assert_string_equal(r.valid[49], "user49@example.org");
    recipients_free(&r);
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A 1 MiB list of distinct addresses once cost seconds of CPU per mail (a
 * quadratic dedupe ran before the limit).  The bound is generous: the parse
 * now stops at the first address past the limit. */
static void test_huge_list_cpu(void **state)
{
    (void)state;
    size_t cap = (1 << 20) + 64, n = 0;
    char *t = malloc(cap + 64);
    n += (size_t)sprintf(t, "%s[", M);
    for (int i = 0; n < cap - 64; i++)
        n += (size_t)sprintf(t + n, "u%06d@x.io,", i);
    n += (size_t)sprintf(t + n, "]%s", M);
    double t0 = cpu_seconds();
    struct recipients r;
    recipients_parse(t, n, M, 50, &r);
    double spent = cpu_seconds() - t0;
    print_message("1 MiB list: %.3f s CPU\n", spent);
    assert_int_equal(r.found, 1);
    assert_int_equal(r.n_valid, 50);
    assert_true(r.n_valid_total > 50);
    assert_string_equal(r.valid[49], "u000049@x.io");
    assert_true(spent < 0.2);
    recipients_free(&r);
    free(t);
}

static const struct {
    const char *html, *text;
} html_cases[] = {
    { "<p>Hi</p><p>" M "[a@x.com]" M "</p>", "\nHi\n\n" M "[a@x.com]" M "\n" },
    { "a&amp;b &lt;c&gt; &#64; &#x41;&nbsp;z", "a&b <c> @ A z" },
    { "<style>p{}</style><script>x</script>ok<!-- " M " -->", "ok" },
    { "<a href=\"mailto:a@x.com\">a@x.com</a>", "a@x.com" },
    { "broken <b", "broken " },
    { "&bogus; &#xzz;", "&bogus; &#xzz;" },
};

static void test_html_to_text(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(html_cases) / sizeof(html_cases[0]); i++) {
        char *t = recipients_html_to_text(html_cases[i].html, strlen(html_cases[i].html));
        assert_string_equal(t, html_cases[i].text);
        free(t);
    }
}

/* A rule's allowed_recipients: domains, addresses and patterns, any match
 * allows; no list at all allows everything. */
static const char *const allow_list[] = { "example.com", "ops@partner.org", "alert-*@*.iot.example", NULL };
static const char *const allow_none[] = { NULL };
static const struct {
    const char *const *allowed;
    const char *addr;
    int ok;
} allow_cases[] = {
    { allow_list, "ops@example.com", 1 },             /* domain */
    { allow_list, "OPS@EXAMPLE.COM", 1 },             /* case-insensitive */
    { allow_list, "ops@sub.example.com", 0 },         /* a domain is not its subdomains */
    { allow_list, "ops@example.com.evil.net", 0 },
    { allow_list, "ops@partner.org", 1 },             /* one address */
    { allow_list, "other@partner.org", 0 },
    { allow_list, "alert-7@site1.iot.example", 1 },   /* pattern */
    { allow_list, "alert@site1.iot.example", 0 },
    { allow_list, "victim@gmail.com", 0 },
    { allow_none, "ops@example.com", 0 },             /* an empty list allows nothing */
    { NULL, "victim@gmail.com", 1 },                  /* no list: no restriction */
};

static void test_allowed_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(allow_cases) / sizeof(allow_cases[0]); i++) {
        if (recipients_allowed(allow_cases[i].allowed, allow_cases[i].addr) != allow_cases[i].ok)
            fail_msg("row %zu: %s expected %d", i, allow_cases[i].addr, allow_cases[i].ok);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_invalid_entries_are_sanitized),
        cmocka_unit_test(test_many_addresses),
        cmocka_unit_test(test_huge_list_cpu),
        cmocka_unit_test(test_case_variants_within_limit),
        cmocka_unit_test(test_html_to_text),
        cmocka_unit_test(test_allowed_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
