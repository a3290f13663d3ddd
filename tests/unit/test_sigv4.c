/* sigv4: AWS's published examples, byte for byte.
 *
 * Vectors: the S3 developer guide's "GET Object" header-signing example and
 * its pre-signed URL example (examplebucket, 20130524), and the SigV4 test
 * suite's get-vanilla family (AKIDEXAMPLE, 20150830T123600Z). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "digest.h"
#include "sigv4.h"

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const struct sigv4_creds s3_example = {
    "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", NULL, "us-east-1", "s3",
};
static const struct sigv4_creds suite = {
    "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", NULL, "us-east-1", "service",
};

struct sign_case {
    const char *name;
    const struct sigv4_creds *cr;
    const char *method, *path, *query;
    struct sigv4_header headers[6];
    size_t n_headers;
    const char *payload;
    const char *amz_date;
    const char *canonical_request;   /* NULL: not checked */
    const char *authorization;
};

static const struct sign_case sign_cases[] = {
    { "s3 GET object with Range", &s3_example, "GET", "/test.txt", NULL,
      { { "Host", "examplebucket.s3.amazonaws.com" }, { "Range", "bytes=0-9" },
        { "x-amz-content-sha256", EMPTY_SHA256 }, { "x-amz-date", "20130524T000000Z" } }, 4,
      EMPTY_SHA256, "20130524T000000Z",
      "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
      "x-amz-content-sha256:" EMPTY_SHA256 "\nx-amz-date:20130524T000000Z\n\n"
      "host;range;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA256,
      "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
      "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
      "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41" },
    { "get-vanilla", &suite, "GET", "/", NULL,
      { { "Host", "example.amazonaws.com" }, { "X-Amz-Date", "20150830T123600Z" } }, 2, EMPTY_SHA256,
      "20150830T123600Z",
      "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" EMPTY_SHA256,
      "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
      "SignedHeaders=host;x-amz-date, "
      "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31" },
    /* an empty query string signs like no query (get-vanilla-query) */
    { "get-vanilla-query", &suite, "GET", "/", "",
      { { "Host", "example.amazonaws.com" }, { "X-Amz-Date", "20150830T123600Z" } }, 2, EMPTY_SHA256,
      "20150830T123600Z", NULL,
      "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
      "SignedHeaders=host;x-amz-date, "
      "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31" },
    { "get-vanilla-query-order-key-case", &suite, "GET", "/", "Param2=value2&Param1=value1",
      { { "Host", "example.amazonaws.com" }, { "X-Amz-Date", "20150830T123600Z" } }, 2, EMPTY_SHA256,
      "20150830T123600Z",
      "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
      "host;x-amz-date\n" EMPTY_SHA256,
      "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
      "SignedHeaders=host;x-amz-date, "
      "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500" },
    { "get-vanilla-empty-query-key", &suite, "GET", "/", "Param1=value1",
      { { "Host", "example.amazonaws.com" }, { "X-Amz-Date", "20150830T123600Z" } }, 2, EMPTY_SHA256,
      "20150830T123600Z", NULL,
      "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
      "SignedHeaders=host;x-amz-date, "
      "Signature=a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb" },
};

static void test_sign_published_examples(void **state)
{
    for (size_t i = 0; i < sizeof(sign_cases) / sizeof(sign_cases[0]); i++) {
        const struct sign_case *c = &sign_cases[i];
        char *creq = NULL, *sts = NULL;
        char *auth = sigv4_sign(c->cr, c->method, c->path, c->query, c->headers, c->n_headers,
                                c->payload, c->amz_date, &creq, &sts);
        assert_non_null(auth);
        if (strcmp(auth, c->authorization) != 0)
            fail_msg("%s:\n got %s\nwant %s\ncanonical request:\n%s", c->name, auth, c->authorization, creq);
        if (c->canonical_request)
            assert_string_equal(creq, c->canonical_request);
        /* the string to sign ends with the hash of the canonical request */
        char h[65];
        sha256_hex(creq, strlen(creq), h);
        assert_non_null(strstr(sts, h));
        assert_int_equal(strncmp(sts, "AWS4-HMAC-SHA256\n", 17), 0);
        free(auth);
        free(creq);
        free(sts);
    }
}

/* The S3 guide's string to sign for the Range example, as published. */
static void test_sign_string_to_sign(void **state)
{
    const struct sign_case *c = &sign_cases[0];
    char *sts = NULL;
    char *auth = sigv4_sign(c->cr, c->method, c->path, c->query, c->headers, c->n_headers, c->payload,
                            c->amz_date, NULL, &sts);
    assert_string_equal(sts, "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
                             "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
    free(auth);
    free(sts);
}

static void test_presign_s3_example(void **state)
{
    char *q = sigv4_presign_query(&s3_example, "GET", "examplebucket.s3.amazonaws.com", "/test.txt", 86400,
                                  "20130524T000000Z");
    assert_non_null(q);
    assert_string_equal(q, "X-Amz-Algorithm=AWS4-HMAC-SHA256"
                           "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
                           "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
                           "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
    free(q);
}

static void test_presign_session_token(void **state)
{
    struct sigv4_creds cr = s3_example;
    cr.session_token = "tok/en+with=odd&chars";
    char *q = sigv4_presign_query(&cr, "GET", "examplebucket.s3.amazonaws.com", "/test.txt", 60,
                                  "20130524T000000Z");
    assert_non_null(q);
    assert_non_null(strstr(q, "&X-Amz-Expires=60&X-Amz-Security-Token=tok%2Fen%2Bwith%3Dodd%26chars"
                              "&X-Amz-SignedHeaders=host&X-Amz-Signature="));
    /* the token is signed: the signature differs from the tokenless one */
    char *plain = sigv4_presign_query(&s3_example, "GET", "examplebucket.s3.amazonaws.com", "/test.txt", 60,
                                      "20130524T000000Z");
    assert_string_not_equal(strstr(q, "X-Amz-Signature="), strstr(plain, "X-Amz-Signature="));
    free(q);
    free(plain);
}

static void test_presign_bad_input(void **state)
{
    static const struct { int expires; const char *date; const char *host; } bad[] = {
        { 0, "20130524T000000Z", "h" },        { -1, "20130524T000000Z", "h" },
        { 604801, "20130524T000000Z", "h" },   { 60, "2013-05-24", "h" },
        { 60, "20130524T000000", "h" },        { 60, "20130524X000000Z", "h" },
        { 60, "20130524T000000Z", "" },        { 60, NULL, "h" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_null(sigv4_presign_query(&s3_example, "GET", bad[i].host, "/k", bad[i].expires, bad[i].date));
    char *q = sigv4_presign_query(&s3_example, "GET", "h", "/k", 604800, "20130524T000000Z");
    assert_non_null(strstr(q, "X-Amz-Expires=604800&"));
    free(q);
    q = sigv4_presign_query(&s3_example, "GET", "h", "/k", 1, "20130524T000000Z");
    assert_non_null(strstr(q, "X-Amz-Expires=1&"));
    free(q);
    struct sigv4_creds nokey = s3_example;
    nokey.access_key = NULL;
    assert_null(sigv4_presign_query(&nokey, "GET", "h", "/k", 60, "20130524T000000Z"));
}

static void test_canonical_forms(void **state)
{
    /* header names lower-cased, values trimmed and inner blanks folded,
     * repeated names joined with ','; query encoded then sorted by name and
     * value, a key without '=' gets an empty value. */
    struct sigv4_header h[] = {
        { "X-Amz-Date", "20150830T123600Z" }, { "My-Header1", "  value1  a   b  " },
        { "Host", "example.amazonaws.com:8443" }, { "my-header1", "\tvalue2" },
    };
    char *creq = NULL;
    char *auth = sigv4_sign(&suite, "POST", "/a%20b/c", "b=2&a=z&a=y&c&sp ace=x/y~", h, 4, "UNSIGNED-PAYLOAD",
                            "20150830T123600Z", &creq, NULL);
    assert_non_null(auth);
    assert_string_equal(creq, "POST\n/a%20b/c\na=y&a=z&b=2&c=&sp%20ace=x%2Fy~\n"
                              "host:example.amazonaws.com:8443\nmy-header1:value1 a b,value2\n"
                              "x-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\nUNSIGNED-PAYLOAD");
    assert_non_null(strstr(auth, "SignedHeaders=host;my-header1;x-amz-date, Signature="));
    free(auth);
    free(creq);
}

static void test_uri_encode(void **state)
{
    static const struct { const char *in; int keep_slash; const char *out; } cases[] = {
        { "abcXYZ019-_.~", 0, "abcXYZ019-_.~" },
        { "a b/c", 0, "a%20b%2Fc" },
        { "a b/c", 1, "a%20b/c" },
        { "+=&?%", 0, "%2B%3D%26%3F%25" },
        { "\xc3\xa9", 0, "%C3%A9" },
        { "", 0, "" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *e = sigv4_uri_encode(cases[i].in, cases[i].keep_slash);
        assert_string_equal(e, cases[i].out);
        free(e);
    }
}

static void test_amz_date_and_sha(void **state)
{
    char buf[17], h[65];
    assert_non_null(sigv4_amz_date(1369353600, buf, sizeof(buf)));
    assert_string_equal(buf, "20130524T000000Z");
    assert_non_null(sigv4_amz_date(1440938160, buf, sizeof(buf)));
    assert_string_equal(buf, "20150830T123600Z");
    assert_null(sigv4_amz_date(0, buf, 16));
    sha256_hex("", 0, h);
    assert_string_equal(h, EMPTY_SHA256);
    sha256_hex("abc", 3, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_published_examples),
        cmocka_unit_test(test_sign_string_to_sign),
        cmocka_unit_test(test_presign_s3_example),
        cmocka_unit_test(test_presign_session_token),
        cmocka_unit_test(test_presign_bad_input),
        cmocka_unit_test(test_canonical_forms),
        cmocka_unit_test(test_uri_encode),
        cmocka_unit_test(test_amz_date_and_sha),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
