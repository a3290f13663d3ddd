/* strbuf: growth, formatting, detach, and JSON string escaping that always
 * yields valid JSON (checked by parsing the output with jansson). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

static void test_append_and_grow(void **state)
{
    struct strbuf b;
    strbuf_init(&b);
    assert_int_equal(b.len, 0);
    strbuf_append(&b, "");
    assert_string_equal(b.data, "");
    /* nothing from nowhere (an empty GByteArray's data is NULL): a no-op, not
     * memcpy(..., NULL, 0), which UBSan refuses (found by tests/fuzz/reports) */
    strbuf_append_n(&b, NULL, 0);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    for (int i = 0; i < 1000; i++)
        strbuf_append(&b, "0123456789");
    assert_int_equal(b.len, 10000);
    assert_true(b.cap > b.len);
    assert_int_equal(b.data[b.len], '\0');
    assert_memory_equal(b.data + 9990, "0123456789", 10);
    strbuf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    strbuf_append_n(&b, "a\0b", 3);   /* binary-safe */
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "a\0b", 3);
    strbuf_free(&b);
    assert_null(b.data);
    strbuf_free(&b);   /* twice is fine */
}

static void test_appendf(void **state)
{
    struct strbuf b;
    strbuf_init(&b);
    strbuf_appendf(&b, "%s=%d", "n", 42);
    strbuf_appendf(&b, ";%05.1f", 3.14159);
    assert_string_equal(b.data, "n=42;003.1");
    char big[5000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    strbuf_appendf(&b, "[%s]", big);   /* larger than any initial capacity */
    assert_int_equal(b.len, 10 + 2 + 4999);
    assert_int_equal(b.data[b.len - 1], ']');
    size_t len;
    char *s = strbuf_detach(&b, &len);
    assert_int_equal(len, strlen(s));
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(s);
    /* detach of an empty buffer still gives a string */
    s = strbuf_detach(&b, &len);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    free(s);
}

static void test_xalloc(void **state)
{
    char *s = xstrndup("abcdef", 3);
    assert_string_equal(s, "abc");
    free(s);
    s = xstrdup("");
    assert_string_equal(s, "");
    free(s);
    int *z = xcalloc(16, sizeof(int));
    for (int i = 0; i < 16; i++)
        assert_int_equal(z[i], 0);
    z = xrealloc(z, 32 * sizeof(int));
    free(z);
    free(xmalloc(0));
}

static const struct {
    const char *in;
    const char *out;        /* exact escaped form */
    const char *decoded;    /* what a JSON parser reads back */
} json_rows[] = {
    { "", "\"\"", "" },
    { "plain", "\"plain\"", "plain" },
    { "a\"b\\c", "\"a\\\"b\\\\c\"", "a\"b\\c" },
    { "line\r\nnext\ttab", "\"line\\u000d\\u000anext\\u0009tab\"", "line\r\nnext\ttab" },
    { "\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\"", "\x01\x1f\x7f" },
    { "</script>", "\"</script>\"", "</script>" },
    /* valid UTF-8 passes through */
    { "caf\xc3\xa9", "\"caf\xc3\xa9\"", "caf\xc3\xa9" },
    { "\xe2\x82\xac", "\"\xe2\x82\xac\"", "\xe2\x82\xac" },
    { "\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\"", "\xf0\x9f\x98\x80" },
    { "\xef\xbf\xbd", "\"\xef\xbf\xbd\"", "\xef\xbf\xbd" },
    { "\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"", "\xf4\x8f\xbf\xbf" },         /* U+10FFFF */
    /* invalid UTF-8: each bad byte becomes U+FFFD */
    { "\x80", "\"\\ufffd\"", "\xef\xbf\xbd" },
    { "a\xffz", "\"a\\ufffdz\"", "a\xef\xbf\xbdz" },
    { "\xc3", "\"\\ufffd\"", "\xef\xbf\xbd" },                                 /* truncated */
    { "\xc3(", "\"\\ufffd(\"", "\xef\xbf\xbd(" },
    { "\xc0\xaf", "\"\\ufffd\\ufffd\"", "\xef\xbf\xbd\xef\xbf\xbd" },            /* overlong '/' */
    { "\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\"", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" }, /* overlong */
    { "\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" }, /* surrogate */
    { "\xf0\x80\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"",
      "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },                        /* overlong */
    { "\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"",
      "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },                        /* > U+10FFFF */
    { "\xf5\x80", "\"\\ufffd\\ufffd\"", "\xef\xbf\xbd\xef\xbf\xbd" },
    { "\xe2\x82", "\"\\ufffd\\ufffd\"", "\xef\xbf\xbd\xef\xbf\xbd" },            /* truncated 3-byte */
};

static void test_json_string_table(void **state)
{
    for (size_t i = 0; i < sizeof(json_rows) / sizeof(json_rows[0]); i++) {
        struct strbuf b;
        strbuf_init(&b);
        strbuf_append(&b, "[");
        strbuf_append_json_string(&b, json_rows[i].in);
        strbuf_append(&b, "]");
        char want[128];
        snprintf(want, sizeof(want), "[%s]", json_rows[i].out);
        if (strcmp(b.data, want) != 0)
            fail_msg("row %zu: got %s, want %s", i, b.data, want);
        json_error_t jerr;
        json_t *j = json_loads(b.data, 0, &jerr);
        if (!j)
            fail_msg("row %zu: not valid JSON (%s): %s", i, jerr.text, b.data);
        assert_string_equal(json_string_value(json_array_get(j, 0)), json_rows[i].decoded);
        json_decref(j);
        strbuf_free(&b);
    }
}

/* Every byte value in every position: the output always parses. */
static void test_json_all_bytes(void **state)
{
    unsigned char in[4];
    for (int a = 1; a < 256; a++)
        for (int c = 0; c < 256; c += 17) {
            in[0] = (unsigned char)a;
            in[1] = (unsigned char)(c ? c : 0x80);
            in[2] = 0xbf;
            in[3] = '\0';
            struct strbuf b;
            strbuf_init(&b);
            strbuf_append_json_string(&b, (const char *)in);
            json_error_t jerr;
            json_t *j = json_loads(b.data, JSON_DECODE_ANY, &jerr);
            if (!j)
                fail_msg("bytes %02x %02x bf: invalid JSON %s (%s)", a, in[1], b.data, jerr.text);
            json_decref(j);
            strbuf_free(&b);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_grow),
        cmocka_unit_test(test_appendf),
        cmocka_unit_test(test_xalloc),
        cmocka_unit_test(test_json_string_table),
        cmocka_unit_test(test_json_all_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
