/* digest: SHA-256 hex of a buffer and of a digest fed in pieces agree with
 * the published test vectors (FIPS 180-2 examples). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "digest.h"

static const struct {
    const char *in;
    const char *hex;
} cases[] = {
    { "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
    { "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
    { "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
};

static void test_sha256_hex_table(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char h[SHA256_HEX_LEN + 1];
        sha256_hex(cases[i].in, strlen(cases[i].in), h);
        assert_string_equal(h, cases[i].hex);
    }
}

/* Fed one byte at a time, then the context reused for the next row. */
static void test_sha256_final_hex_table(void **state)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_non_null(md);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char h[SHA256_HEX_LEN + 1];
        assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
        for (const char *p = cases[i].in; *p; p++)
            EVP_DigestUpdate(md, p, 1);
        sha256_final_hex(md, h);
        assert_string_equal(h, cases[i].hex);
    }
    EVP_MD_CTX_free(md);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_hex_table),
        cmocka_unit_test(test_sha256_final_hex_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
