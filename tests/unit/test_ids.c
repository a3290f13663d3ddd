/* ids: UUIDv7 format, ordering, embedded time, hex helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "timeutil.h"

static int uuidv7_shape(const char *s)
{
    static const char *hexd = "0123456789abcdef";
    if (strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!strchr(hexd, s[i]) || s[i] == '\0') {
            return 0;
        }
    }
    return s[14] == '7' && strchr("89ab", s[19]) != NULL;
}

static void test_format_and_time(void **state)
{
    char id[ID_LEN + 1];
    int64_t before = now_ms();
    id_new(id);
    int64_t after = now_ms();
    assert_true(uuidv7_shape(id));
    assert_true(id_valid(id));
    int64_t t = id_time_ms(id);
    assert_true(t >= before && t <= after + 1);
}

/* 100k ids from one thread sort in creation order and never repeat, even
 * though many share a millisecond (the counter carries the order). */
static void test_monotonic_100k(void **state)
{
    enum { N = 100000 };
    char (*ids)[ID_LEN + 1] = malloc(N * sizeof(*ids));
    assert_non_null(ids);
    for (int i = 0; i < N; i++)
        id_new(ids[i]);
    int64_t prev_t = 0;
    for (int i = 0; i < N; i++) {
        if (!uuidv7_shape(ids[i]))
            fail_msg("id %d malformed: %s", i, ids[i]);
        if (i > 0 && strcmp(ids[i - 1], ids[i]) >= 0)
            fail_msg("id %d not after id %d: %s <= %s", i, i - 1, ids[i], ids[i - 1]);
        int64_t t = id_time_ms(ids[i]);
        assert_true(t >= prev_t);
        prev_t = t;
    }
    free(ids);
}

struct th { char (*ids)[ID_LEN + 1]; int n; };

static void *gen(void *arg)
{
    struct th *t = arg;
    for (int i = 0; i < t->n; i++)
        id_new(t->ids[i]);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_threads_unique(void **state)
{
    enum { T = 4, N = 20000 };
    char (*ids)[ID_LEN + 1] = malloc(T * N * sizeof(*ids));
    pthread_t th[T];
    struct th args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (struct th){ ids + i * N, N };
        pthread_create(&th[i], NULL, gen, &args[i]);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    /* each thread's own ids are ordered too */
    for (int i = 0; i < T; i++)
        for (int j = 1; j < N; j++)
            assert_true(strcmp(ids[i * N + j - 1], ids[i * N + j]) < 0);
    qsort(ids, T * N, sizeof(*ids), cmp);
    for (int i = 1; i < T * N; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            fail_msg("duplicate id %s", ids[i]);
    free(ids);
}

static void test_valid_table(void **state)
{
    static const struct { const char *s; int valid; int64_t ms; } rows[] = {
        { "019ac0f2-3b4c-7d5e-8f60-1a2b3c4d5e6f", 1, 0x019ac0f23b4cLL },
        { "00000000-0000-7000-8000-000000000000", 1, 0 },
        { "ffffffff-ffff-7fff-bfff-ffffffffffff", 1, 0xffffffffffffLL },
        { "019ac0f2-3b4c-4d5e-8f60-1a2b3c4d5e6f", 0, -1 },   /* v4 */
        { "019ac0f2-3b4c-7d5e-cf60-1a2b3c4d5e6f", 0, -1 },   /* wrong variant */
        { "019ac0f2-3b4c-7d5e-0f60-1a2b3c4d5e6f", 0, -1 },
        { "019AC0F2-3B4C-7D5E-8F60-1A2B3C4D5E6F", 0, -1 },   /* we write lower case */
        { "019ac0f23b4c7d5e8f601a2b3c4d5e6f", 0, -1 },
        { "019ac0f2-3b4c-7d5e-8f60-1a2b3c4d5e6", 0, -1 },
        { "019ac0f2-3b4c-7d5e-8f60-1a2b3c4d5e6f0", 0, -1 },
        { "019ac0f2_3b4c-7d5e-8f60-1a2b3c4d5e6f", 0, -1 },
        { "019ac0g2-3b4c-7d5e-8f60-1a2b3c4d5e6f", 0, -1 },
        { "", 0, -1 },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        if (id_valid(rows[i].s) != rows[i].valid)
            fail_msg("row %zu (%s): id_valid %d", i, rows[i].s, id_valid(rows[i].s));
        assert_int_equal(id_time_ms(rows[i].s), rows[i].ms);
    }
}

static void test_hex_table(void **state)
{
    static const struct { const char *raw; size_t n; const char *hex; } rows[] = {
        { "", 0, "" }, { "\x00", 1, "00" }, { "\xde\xad\xbe\xef", 4, "deadbeef" }, { "az", 2, "617a" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char out[32];
        unsigned char back[16];
        hex_encode((const unsigned char *)rows[i].raw, rows[i].n, out);
        assert_string_equal(out, rows[i].hex);
        assert_int_equal(hex_decode(rows[i].hex, back, sizeof(back)), (int)rows[i].n);
        assert_memory_equal(back, rows[i].raw, rows[i].n);
    }
    unsigned char b[4];
    assert_int_equal(hex_decode("DEADBEEF", b, sizeof(b)), 4);   /* upper case reads */
    assert_int_equal(b[0], 0xde);
    assert_int_equal(hex_decode("abc", b, sizeof(b)), -1);       /* odd length */
    assert_int_equal(hex_decode("zz", b, sizeof(b)), -1);
    assert_int_equal(hex_decode("0011223344", b, sizeof(b)), -1); /* does not fit */
}

/* Any hyphenated UUID <-> bytes (VERP tokens carry ids as 16 bytes). */
static void test_bytes_round_trip(void **state)
{
    static const struct { const char *in; int rc; const char *out; } rows[] = {
        { "0190f3a2-1234-7abc-8def-0123456789ab", 0, "0190f3a2-1234-7abc-8def-0123456789ab" },
        { "0190F3A2-1234-4ABC-8DEF-0123456789AB", 0, "0190f3a2-1234-4abc-8def-0123456789ab" },
        { "0190f3a2-1234-7abc-8def-0123456789a", -22, NULL },     /* short */
        { "0190f3a2x1234-7abc-8def-0123456789ab", -22, NULL },    /* hyphen missing */
        { "0190f3a2-1234-7abc-8def-0123456789ag", -22, NULL },    /* not hex */
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        unsigned char b[16];
        char out[ID_LEN + 1];
        assert_int_equal(id_to_bytes(rows[i].in, b), rows[i].rc);
        if (rows[i].rc == 0)
            assert_string_equal(id_from_bytes(b, out), rows[i].out);
    }
    char id[ID_LEN + 1], back[ID_LEN + 1];
    unsigned char b[16];
    id_new(id);
    assert_int_equal(id_to_bytes(id, b), 0);
    assert_string_equal(id_from_bytes(b, back), id);
}

/* A shard is two key-safe characters from the id's end, whatever the id. */
static void test_shard(void **state)
{
    static const struct { const char *id, *want; } cases[] = {
        { "0190f3a2-7b1c-7def-8abc-0123456789ab", "ab" }, { "msg-001", "01" }, { "x", "00" },
        { "", "00" }, { "a..", "__" }, { "k/-Z", "_Z" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[3];
        id_shard(cases[i].id, out);
        assert_string_equal(out, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_and_time),
        cmocka_unit_test(test_monotonic_100k),
        cmocka_unit_test(test_threads_unique),
        cmocka_unit_test(test_valid_table),
        cmocka_unit_test(test_hex_table),
        cmocka_unit_test(test_bytes_round_trip),
        cmocka_unit_test(test_shard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
