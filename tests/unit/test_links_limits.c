/* links_limits: the client behind trusted proxies, download slots per
 * client (IPv6 per /64) and in total, and the refusal log's rate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "links/links_limits.h"

static char *proxies[] = { "10.0.0.0/8", "172.16.0.0/12", "127.0.0.1", "fd00::/8" };

static void test_client_address(void **state)
{
    static const struct {
        const char *peer, *xff, *want;
    } rows[] = {
        { "203.0.113.9", NULL, "203.0.113.9" },
        { "203.0.113.9", "198.51.100.7", "203.0.113.9" },       /* not a proxy: its header is ignored */
        { "10.1.2.3", NULL, "10.1.2.3" },                       /* a proxy without the header */
        { "10.1.2.3", "198.51.100.7", "198.51.100.7" },
        { "10.1.2.3", "1.1.1.1, 198.51.100.7", "198.51.100.7" }, /* the left part is the client's word */
        { "10.1.2.3", "1.1.1.1,198.51.100.7 , 10.9.9.9", "198.51.100.7" },   /* proxy chain */
        { "10.1.2.3", "1.1.1.1, not-an-address", "10.1.2.3" },  /* garbage: the last proxy is all we know */
        { "10.1.2.3", "1.1.1.1, 198.51.100.7:443", "10.1.2.3" },
        { "10.1.2.3", "10.0.0.5", "10.0.0.5" },                 /* every hop a proxy */
        { "10.1.2.3", ", ,", "10.1.2.3" },
        { "10.1.2.3", "2001:DB8:0:0::1", "2001:db8::1" },      /* canonical text */
        { "10.1.2.3", "::ffff:192.0.2.9", "192.0.2.9" },        /* IPv4-mapped: the IPv4 client */
        { "172.31.255.255", "192.0.2.5", "192.0.2.5" },         /* inside /12 */
        { "172.32.0.1", "192.0.2.5", "172.32.0.1" },            /* just outside */
        { "127.0.0.1", "192.0.2.5", "192.0.2.5" },              /* a bare address is one host */
        { "127.0.0.2", "192.0.2.5", "127.0.0.2" },
        { "fd12::1", "192.0.2.6", "192.0.2.6" },
        { "", "192.0.2.5", "" },
    };
    char err[256];
    struct links_limits *lim = links_limits_new(proxies, 4, 0, 0, err, sizeof(err));
    assert_non_null(lim);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char got[LINKS_CLIENT_LEN];
        links_limits_client(lim, rows[i].peer, rows[i].xff, got);
        if (strcmp(got, rows[i].want) != 0)
            fail_msg("row %zu: %s / %s: got %s, want %s", i, rows[i].peer, rows[i].xff ? rows[i].xff : "-", got,
                     rows[i].want);
    }
    links_limits_free(lim);
}

static void test_bad_config(void **state)
{
    static char *bad[] = { "10.0.0.0/33", "nope", "::/129", "/8", "10.0.0.0/", "10.0.0.0/8x" };
    char err[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(links_limits_new(&bad[i], 1, 1, 1, err, sizeof(err)));
        assert_non_null(strstr(err, bad[i]));
    }
    assert_null(links_limits_new(NULL, 0, -1, 1, err, sizeof(err)));
    assert_null(links_limits_new(NULL, 0, 1, -1, err, sizeof(err)));
}

static void test_slots(void **state)
{
    static const struct {
        char op;                /* t: take, r: release */
        const char *client;
        enum links_slot want;   /* for t */
    } rows[] = {
        { 't', "192.0.2.1", LINKS_SLOT_TAKEN },
        { 't', "192.0.2.1", LINKS_SLOT_TAKEN },
        { 't', "192.0.2.1", LINKS_SLOT_CLIENT_FULL },
        { 't', "2001:db8:1:2::1", LINKS_SLOT_TAKEN },
        { 't', "2001:db8:1:2:ffff::9", LINKS_SLOT_TAKEN },      /* the same /64 */
        { 't', "2001:db8:1:2:aaaa::1", LINKS_SLOT_CLIENT_FULL },
        { 't', "192.0.2.2", LINKS_SLOT_TOTAL_FULL },            /* 4 of 4 held */
        { 't', "192.0.2.1", LINKS_SLOT_CLIENT_FULL },           /* its own share first */
        { 'r', "192.0.2.1", 0 },
        { 't', "192.0.2.2", LINKS_SLOT_TAKEN },
        { 't', "2001:db8:1:3::1", LINKS_SLOT_TOTAL_FULL },      /* another /64, but full */
        { 'r', "2001:db8:1:2:ffff::9", 0 },
        { 't', "2001:db8:1:3::1", LINKS_SLOT_TAKEN },
        { 'r', "192.0.2.1", 0 },
        { 'r', "192.0.2.2", 0 },
        { 'r', "2001:db8:1:2::1", 0 },
        { 'r', "2001:db8:1:3::1", 0 },
        { 't', "192.0.2.1", LINKS_SLOT_TAKEN },                 /* all given back: empty again */
        { 't', "192.0.2.1", LINKS_SLOT_TAKEN },
        { 'r', "192.0.2.1", 0 },
        { 'r', "192.0.2.1", 0 },
    };
    char err[256];
    struct links_limits *lim = links_limits_new(NULL, 0, 4, 2, err, sizeof(err));
    assert_non_null(lim);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        if (rows[i].op == 'r') {
            links_limits_release(lim, rows[i].client);
            continue;
        }
        enum links_slot got = links_limits_take(lim, rows[i].client);
        if (got != rows[i].want)
            fail_msg("row %zu: take %s: got %d, want %d", i, rows[i].client, got, rows[i].want);
    }
    links_limits_free(lim);

    /* 0: no limit */
    lim = links_limits_new(NULL, 0, 0, 0, err, sizeof(err));
    for (int i = 0; i < 1000; i++)
        assert_int_equal(links_limits_take(lim, i % 2 ? "192.0.2.1" : "192.0.2.2"), LINKS_SLOT_TAKEN);
    for (int i = 0; i < 1000; i++)
        links_limits_release(lim, i % 2 ? "192.0.2.1" : "192.0.2.2");
    links_limits_free(lim);
}

static void test_refusal_log_rate(void **state)
{
    char err[256];
    struct links_limits *lim = links_limits_new(NULL, 0, 1, 1, err, sizeof(err));
    const int64_t minute = 60000;
    assert_int_equal(links_limits_log_refusal(lim, "192.0.2.1", 0, minute), 1);
    assert_int_equal(links_limits_log_refusal(lim, "192.0.2.1", 1000, minute), 0);
    assert_int_equal(links_limits_log_refusal(lim, "192.0.2.2", 1000, minute), 1);
    assert_int_equal(links_limits_log_refusal(lim, "2001:db8::1", 1000, minute), 1);
    assert_int_equal(links_limits_log_refusal(lim, "2001:db8::2", 1000, minute), 0);   /* same /64 */
    assert_int_equal(links_limits_log_refusal(lim, "192.0.2.1", minute, minute), 1);
    /* 64 clients logged within a minute: the 65th only counts */
    for (int i = 3; i < 64; i++) {
        char c[32];
        snprintf(c, sizeof(c), "198.51.100.%d", i);
        assert_int_equal(links_limits_log_refusal(lim, c, minute + 1, minute), 1);
    }
    assert_int_equal(links_limits_log_refusal(lim, "203.0.113.1", minute + 2, minute), 0);
    assert_int_equal(links_limits_log_refusal(lim, "203.0.113.1", 2 * minute + 1, minute), 1);
    links_limits_free(lim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_address),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_slots),
        cmocka_unit_test(test_refusal_log_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
