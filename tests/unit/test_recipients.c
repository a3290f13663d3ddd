/* recipients: marker search, list parsing, stripping, HTML to text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    { M "[a@x.com\r\nBcc: evil@x.com]" M, 50, 1, "a@x.com,evil@x.com", 1, 2, "" },
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_invalid_entries_are_sanitized),
        cmocka_unit_test(test_many_addresses),
        cmocka_unit_test(test_html_to_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
