/* base64: strict standard-alphabet decoding as SMTP AUTH, outbound bodies
 * and SNS signatures use it: padding counted out of the length, '=' only at
 * the end, no whitespace, the output buffer's size checked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "base64.h"

static const struct {
    const char *in;
    ssize_t len;        /* -1: rejected */
    const char *out;    /* len bytes */
} cases[] = {
    { "", 0, "" },
    { "Zg==", 1, "f" },
    { "Zm8=", 2, "fo" },
    { "Zm9v", 3, "foo" },
    { "Zm9vYg==", 4, "foob" },
    { "Zm9vYmE=", 5, "fooba" },
    { "Zm9vYmFy", 6, "foobar" },
    { "AHVzZXIAcGFzcw==", 10, "\0user\0pass" },   /* AUTH PLAIN */
    { "+/+/", 3, "\xfb\xff\xbf" },
    { "////", 3, "\xff\xff\xff" },
    { "Zm9", -1, NULL },          /* not a multiple of four */
    { "Zm9vY", -1, NULL },
    { "Zg", -1, NULL },           /* padding left off */
    { "Zg=", -1, NULL },
    { "Z===", -1, NULL },         /* three '=' */
    { "====", -1, NULL },
    { "Zg==Zm8=", -1, NULL },     /* '=' before the end */
    { "Z=9v", -1, NULL },
    { "Zm9v ", -1, NULL },        /* whitespace */
    { " Zm9v", -1, NULL },
    { "Zm9v\r\n", -1, NULL },
    { "Zm 9", -1, NULL },
    { "Zm9-", -1, NULL },         /* base64url alphabet */
    { "Zm9_", -1, NULL },
    { "!!!!", -1, NULL },
};

static void test_decode_table(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *in = cases[i].in;
        unsigned char buf[64];
        memset(buf, 0xaa, sizeof(buf));
        ssize_t len = base64_decode(in, strlen(in), buf, sizeof(buf));
        if (len != cases[i].len)
            fail_msg("\"%s\": length %zd, want %zd", in, len, cases[i].len);
        size_t alen = 99;
        unsigned char *a = base64_decode_alloc(in, strlen(in), &alen);
        if (len < 0) {
            assert_null(a);
            continue;
        }
        if (memcmp(buf, cases[i].out, (size_t)len) != 0 || buf[len] != '\0')
            fail_msg("\"%s\": wrong bytes", in);
        assert_non_null(a);
        assert_int_equal(alen, (size_t)len);
        assert_memory_equal(a, cases[i].out, alen);
        assert_int_equal(a[alen], '\0');
        free(a);
    }
}

/* The buffer must hold BASE64_DECODED_MAX(n) + 1, whatever the padding. */
static void test_buffer_size(void **state)
{
    unsigned char buf[8];
    assert_int_equal(BASE64_DECODED_MAX(8), 6);
    assert_int_equal(base64_decode("Zm9vYmFy", 8, buf, 7), 6);
    assert_int_equal(base64_decode("Zm9vYmFy", 8, buf, 6), -1);
    assert_int_equal(base64_decode("Zm9vYg==", 8, buf, 6), -1);
    assert_int_equal(base64_decode("", 0, buf, 1), 0);
    assert_int_equal(base64_decode("", 0, buf, 0), -1);
    /* n bounds the read: what follows is not looked at */
    assert_int_equal(base64_decode("Zm9v!!", 4, buf, sizeof(buf)), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_table),
        cmocka_unit_test(test_buffer_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
