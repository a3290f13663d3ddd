/* tokens: round trips, tampering, expiry, rotation, malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokens.h"
#include "topics.h"
#include "verp.h"

#define NOW 1800000000LL

static const char *const keys_a[] = { "a1:0123456789abcdef0123456789abcdef" };
static const char *const keys_b[] = { "b2:this is a long text secret", "a1:0123456789abcdef0123456789abcdef" };
static const char *const keys_other[] = { "a1:fedcba9876543210fedcba9876543210" };

static struct tokens *mk(const char *const *keys, size_t n)
{
    char err[256] = "";
    struct tokens *t = tokens_new(keys, n, err, sizeof(err));
    if (!t)
        fail_msg("tokens_new: %s", err);
    return t;
}

static void test_new_rejects_bad_keys(void **state)
{
    static const struct { const char *key; const char *why; } rows[] = {
        { "nocolon0123456789abcdef", "kid:secret" },
        { ":0123456789abcdef0123", "kid:secret" },
        { "toolongkeyid12345:0123456789abcdef0123", "kid:secret" },
        { "bad-kid:0123456789abcdef0123", "kid:secret" },
        { "k:short", "secret must be" },
        { "k:0123456789abcde", "secret must be" },     /* 15 chars of text */
        { "k:", "secret must be" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char err[256] = "";
        const char *k[] = { rows[i].key };
        struct tokens *t = tokens_new(k, 1, err, sizeof(err));
        if (t)
            fail_msg("row %zu (%s) accepted", i, rows[i].key);
        if (!strstr(err, rows[i].why))
            fail_msg("row %zu: error '%s' lacks '%s'", i, err, rows[i].why);
        /* a secret must never be echoed into an error */
        assert_null(strstr(err, "0123456789abcdef"));
    }
    char err[256];
    const char *dup[] = { "k:0123456789abcdef0123", "k:fedcba9876543210fedcba" };
    assert_null(tokens_new(dup, 2, err, sizeof(err)));
    assert_non_null(strstr(err, "twice"));
    assert_null(tokens_new(dup, 0, err, sizeof(err)));
}

static void test_round_trip_table(void **state)
{
    static const struct { const char *payload; size_t len; int64_t expires; } rows[] = {
        { "", 0, 0 },
        { "x", 1, 0 },
        { "attachments/2026-11-26/0190/1-report.pdf", 41, NOW + 3600 },
        { "msg.with.dots|a@b.example", 25, NOW + 1 },
        { "bin\0ary\xff\x01", 9, 0 },
        { "ab", 2, 999999999999LL },
    };
    struct tokens *t = mk(keys_a, 1);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char *tok = tokens_sign(t, rows[i].payload, rows[i].len, rows[i].expires);
        /* URL-safe: only the base64url alphabet and one separating dot */
        assert_int_equal(strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."),
                         strlen(tok));
        assert_non_null(strchr(tok, '.'));
        assert_ptr_equal(strchr(tok, '.'), strrchr(tok, '.'));
        char *p = NULL;
        size_t len = 99;
        int64_t exp = -1;
        enum token_result r = tokens_verify(t, tok, NOW, &p, &len, &exp);
        if (r != TOKEN_OK)
            fail_msg("row %zu: verify = %d", i, r);
        assert_int_equal(len, rows[i].len);
        assert_memory_equal(p, rows[i].payload, rows[i].len);
        assert_int_equal(p[len], '\0');
        assert_int_equal(exp, rows[i].expires);
        free(p);
        free(tok);
    }
    tokens_free(t);
}

static void test_sign_is_deterministic_and_key_dependent(void **state)
{
    struct tokens *a = mk(keys_a, 1), *o = mk(keys_other, 1);
    char *t1 = tokens_sign(a, "p", 1, 0), *t2 = tokens_sign(a, "p", 1, 0), *t3 = tokens_sign(o, "p", 1, 0);
    assert_string_equal(t1, t2);
    assert_string_not_equal(t1, t3);
    /* same kid, different secret: the MAC does not verify */
    assert_int_equal(tokens_verify(o, t1, NOW, NULL, NULL, NULL), TOKEN_BAD);
    free(t1);
    free(t2);
    free(t3);
    tokens_free(a);
    tokens_free(o);
}

/* Flip one character at every position: nothing may still verify as OK. */
static void test_tampering_every_position(void **state)
{
    struct tokens *t = mk(keys_a, 1);
    char *tok = tokens_sign(t, "attachments/x/1-a.pdf", 21, NOW + 100);
    size_t n = strlen(tok);
    for (size_t i = 0; i < n; i++) {
        char *c = strdup(tok);
        c[i] = c[i] == 'A' ? 'B' : 'A';
        char *p = NULL;
        enum token_result r = tokens_verify(t, c, NOW, &p, NULL, NULL);
        if (r == TOKEN_OK)
            fail_msg("tampered at %zu still verifies: %s", i, c);
        assert_null(p);
        free(c);
    }
    free(tok);
    tokens_free(t);
}

static void test_tamper_cases(void **state)
{
    struct tokens *t = mk(keys_a, 1), *b = mk(keys_b, 2);
    char *tok = tokens_sign(t, "payload", 7, NOW + 100);
    char *dot = strrchr(tok, '.');
    char buf[512];

    /* payload swapped for another key's first part with the old MAC */
    char *other = tokens_sign(t, "payloae", 7, NOW + 100);
    snprintf(buf, sizeof(buf), "%.*s%s", (int)(strrchr(other, '.') - other), other, dot);
    assert_int_equal(tokens_verify(t, buf, NOW, NULL, NULL, NULL), TOKEN_BAD);

    /* a token signed by kid b2 checked by a set lacking b2 */
    char *tb = tokens_sign(b, "payload", 7, 0);
    assert_int_equal(tokens_verify(t, tb, NOW, NULL, NULL, NULL), TOKEN_UNKNOWN_KEY);

    /* MAC truncated, extended, empty */
    snprintf(buf, sizeof(buf), "%.*s", (int)strlen(tok) - 2, tok);
    assert_int_equal(tokens_verify(t, buf, NOW, NULL, NULL, NULL), TOKEN_BAD);
    snprintf(buf, sizeof(buf), "%sAAAA", tok);
    assert_int_equal(tokens_verify(t, buf, NOW, NULL, NULL, NULL), TOKEN_BAD);
    snprintf(buf, sizeof(buf), "%.*s", (int)(dot - tok) + 1, tok);
    assert_int_equal(tokens_verify(t, buf, NOW, NULL, NULL, NULL), TOKEN_BAD);
    free(tok);
    free(other);
    free(tb);
    tokens_free(t);
    tokens_free(b);
}

static void test_malformed_table(void **state)
{
    static const char *rows[] = {
        "", ".", "..", "abc", ".abc", "abc.", "a.b.c",
        "YTEuMC5w.!!!!",                 /* bad chars in the MAC */
        "YTEuMC5w=.AAAA",                /* padding */
        "Y.AAAA",                        /* impossible length */
        "YTF8MHxw.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* "a1|0|p": no dots */
        "YTEuLTEucA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* "a1.-1.p" */
        "YTEuMDEucA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* "a1.01.p" */
        "YTEu.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",       /* "a1." */
        "LjAucA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",      /* ".0.p": empty kid */
        "YSAxLjAucA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  /* "a 1.0.p" */
        "YTEuMC5w\n.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "YTEuMC5w.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB",   /* stray bits */
    };
    struct tokens *t = mk(keys_a, 1);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char *p = NULL;
        enum token_result r = tokens_verify(t, rows[i], NOW, &p, NULL, NULL);
        if (r != TOKEN_BAD)
            fail_msg("row %zu (%s): %d, want TOKEN_BAD", i, rows[i], r);
        assert_null(p);
    }
    assert_int_equal(tokens_verify(t, NULL, NOW, NULL, NULL, NULL), TOKEN_BAD);
    tokens_free(t);
}

static void test_expiry_table(void **state)
{
    static const struct { int64_t expires, now; enum token_result want; } rows[] = {
        { 0, NOW, TOKEN_OK },
        { 0, INT64_MAX / 2, TOKEN_OK },
        { NOW + 1, NOW, TOKEN_OK },
        { NOW, NOW, TOKEN_EXPIRED },
        { NOW - 1, NOW, TOKEN_EXPIRED },
        { 1, NOW, TOKEN_EXPIRED },
    };
    struct tokens *t = mk(keys_a, 1);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char *tok = tokens_sign(t, "p", 1, rows[i].expires);
        char *p = NULL;
        int64_t exp = -1;
        enum token_result r = tokens_verify(t, tok, rows[i].now, &p, NULL, &exp);
        if (r != rows[i].want)
            fail_msg("row %zu: %d, want %d", i, r, rows[i].want);
        if (r == TOKEN_EXPIRED) {
            assert_null(p);
            assert_int_equal(exp, rows[i].expires);
        }
        free(p);
        free(tok);
    }
    tokens_free(t);
}

static void test_rotation(void **state)
{
    struct tokens *old = mk(keys_a, 1), *rot = mk(keys_b, 2);
    char *by_old = tokens_sign(old, "old", 3, 0);
    char *by_new = tokens_sign(rot, "new", 3, 0);
    char *p = NULL;

    /* tokens signed before the rotation still verify */
    assert_int_equal(tokens_verify(rot, by_old, NOW, &p, NULL, NULL), TOKEN_OK);
    assert_string_equal(p, "old");
    free(p);
    /* the new set signs with its first key, b2 */
    unsigned char *first = NULL;
    size_t fl;
    char *dot = strrchr(by_new, '.');
    *dot = '\0';
    assert_int_equal(b64url_decode(by_new, &first, &fl), 0);
    *dot = '.';
    assert_memory_equal(first, "b2.0.new", 8);
    free(first);
    assert_int_equal(tokens_verify(rot, by_new, NOW, &p, NULL, NULL), TOKEN_OK);
    free(p);
    assert_int_equal(tokens_verify(old, by_new, NOW, NULL, NULL, NULL), TOKEN_UNKNOWN_KEY);
    free(by_old);
    free(by_new);
    tokens_free(old);
    tokens_free(rot);
}

/* VERP and mailto unsubscribe tokens across a rotation of token_keys: made
 * with the first key, checked with every key, so mail sent before the
 * rotation keeps its bounce and unsubscribe addresses until its key goes. */
static void test_verp_rotation_table(void **state)
{
    static const char *const keys_new_only[] = { "b2:this is a long text secret" };
    static const struct {
        const char *const *made; size_t mn;
        const char *const *checked; size_t cn;
        const char *tag;
        int expect;
    } rows[] = {
        { keys_a, 1, keys_a, 1, "verp", 0 },
        { keys_a, 1, keys_b, 2, "verp", 0 },            /* made before rotation, checked after */
        { keys_a, 1, keys_b, 2, "unsubscribe", 0 },
        { keys_b, 2, keys_b, 2, "verp", 0 },
        { keys_b, 2, keys_a, 1, "verp", -EINVAL },      /* new key unknown to the old set */
        { keys_a, 1, keys_new_only, 1, "verp", -EINVAL },   /* old key removed */
        { keys_a, 1, keys_new_only, 1, "unsubscribe", -EINVAL },
        { keys_a, 1, keys_other, 1, "verp", -EINVAL },  /* same kid, other secret */
    };
    static const char id[] = "0190f3a2-0000-7000-8000-0000000000aa";
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct tokens *tm = mk(rows[i].made, rows[i].mn), *tc = mk(rows[i].checked, rows[i].cn);
        struct verp_keys *vm = verp_keys_new(tm), *vc = verp_keys_new(tc);
        char tok[VERP_TOKEN_LEN + 1], back[VERP_ID_LEN + 1] = "";
        assert_int_equal(verp_keys_token(vm, rows[i].tag, id, "reader@example.com", tok), 0);
        int r = verp_keys_check(vc, rows[i].tag, tok, "reader@example.com", back);
        if (r != rows[i].expect)
            fail_msg("row %zu: verp_keys_check %d, want %d", i, r, rows[i].expect);
        if (r == 0) {
            assert_string_equal(back, id);
            /* bound to the recipient and the tag under every key */
            assert_int_equal(verp_keys_check(vc, rows[i].tag, tok, "other@example.com", back), -EINVAL);
            assert_int_equal(verp_keys_check(vc, strcmp(rows[i].tag, "verp") ? "verp" : "unsubscribe",
                                             tok, "reader@example.com", back), -EINVAL);
        }
        verp_keys_free(vm);
        verp_keys_free(vc);
        tokens_free(tm);
        tokens_free(tc);
    }
}

/* The sign key's VERP key is the one earlier releases derived (tokens_sign of
 * the label), so addresses in mail already sent stay valid across an upgrade. */
static void test_verp_sign_key_unchanged(void **state)
{
    static const char label[] = VERP_KEY_LABEL;
    static const char id[] = "0190f3a2-0000-7000-8000-0000000000ab";
    (void)state;
    struct tokens *t = mk(keys_b, 2);
    struct verp_keys *vk = verp_keys_new(t);
    char *key = tokens_sign(t, label, sizeof(label) - 1, 0);
    char a[VERP_TOKEN_LEN + 1], b[VERP_TOKEN_LEN + 1];
    assert_int_equal(verp_token(key, strlen(key), "verp", id, "x@example.com", a), 0);
    assert_int_equal(verp_keys_token(vk, "verp", id, "x@example.com", b), 0);
    assert_string_equal(a, b);
    free(key);
    verp_keys_free(vk);
    tokens_free(t);
}

/* Found by tests/fuzz/tokens: for a recipient too long to be an address the
 * MAC used to be ten zero bytes, made and accepted alike, so a token of any
 * id with a zero MAC verified against any such recipient.  Now none is made
 * and none verifies. */
static void test_verp_long_recipient(void **state)
{
    static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
    static const char id[] = "0190f3a2-0000-7000-8000-0000000000ac";
    (void)state;
    char rcpt[600], tok[VERP_TOKEN_LEN + 1], back[VERP_ID_LEN + 1];
    memset(rcpt, 'a', sizeof(rcpt) - 1);
    rcpt[sizeof(rcpt) - 1] = '\0';
    const char *key = "verp-key-0123456789";
    assert_int_equal(verp_token(key, strlen(key), "verp", id, rcpt, tok), -EINVAL);
    /* the forged token: the id's 16 bytes, then a MAC of ten zero bytes */
    unsigned char raw[26] = { 0x01, 0x90, 0xf3, 0xa2, 0x00, 0x00, 0x70, 0x00,
                              0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xac };
    unsigned int acc = 0, bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < sizeof(raw); i++) {
        acc = (acc << 8) | raw[i];
        for (bits += 8; bits >= 5; bits -= 5)
            tok[o++] = b32[(acc >> (bits - 5)) & 31];
    }
    tok[o++] = b32[(acc << (5 - bits)) & 31];
    tok[o] = '\0';
    assert_int_equal(o, VERP_TOKEN_LEN);
    assert_int_equal(verp_check(key, strlen(key), "verp", tok, rcpt, back), -EINVAL);
    assert_int_equal(verp_check(key, strlen(key), "unsubscribe", tok, rcpt, back), -EINVAL);
}

static void test_b64url_table(void **state)
{
    static const struct { const char *raw; size_t n; const char *enc; } rows[] = {
        { "", 0, "" },
        { "f", 1, "Zg" },
        { "fo", 2, "Zm8" },
        { "foo", 3, "Zm9v" },
        { "foob", 4, "Zm9vYg" },
        { "\xfb\xff", 2, "-_8" },
        { "\xff\xff\xfe", 3, "___-" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char *e = b64url_encode(rows[i].raw, rows[i].n);
        assert_string_equal(e, rows[i].enc);
        unsigned char *d = NULL;
        size_t dl = 99;
        assert_int_equal(b64url_decode(e, &d, &dl), 0);
        assert_int_equal(dl, rows[i].n);
        assert_memory_equal(d, rows[i].raw, rows[i].n);
        free(d);
        free(e);
    }
    static const char *bad[] = { "Z", "Zg==", "Zh", "Zm+v", "Zm/v", "Zm9v Yg", "Zm9\x80" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned char *d = NULL;
        if (b64url_decode(bad[i], &d, NULL) == 0)
            fail_msg("bad row %zu (%s) decoded", i, bad[i]);
        assert_null(d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects_bad_keys),
        cmocka_unit_test(test_round_trip_table),
        cmocka_unit_test(test_sign_is_deterministic_and_key_dependent),
        cmocka_unit_test(test_tampering_every_position),
        cmocka_unit_test(test_tamper_cases),
        cmocka_unit_test(test_malformed_table),
        cmocka_unit_test(test_expiry_table),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_verp_rotation_table),
        cmocka_unit_test(test_verp_sign_key_unchanged),
        cmocka_unit_test(test_verp_long_recipient),
        cmocka_unit_test(test_b64url_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
