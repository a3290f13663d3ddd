/* proxy_header: PROXY protocol v1 and v2 headers, whole, partial and bad;
 * and netaddr's CIDR matching that proxy_from uses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>

#include "ingest/proxy_header.h"
#include "netaddr.h"

static int parse(const void *buf, size_t len, struct proxy_source *src)
{
    const char *why;
    int n = proxy_header_parse(buf, len, src, &why);
    if (n < 0)
        assert_non_null(why);   /* every refusal says why */
    return n;
}

static void test_v1(void **state)
{
    struct proxy_source src;
    const char *h = "PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n";
    size_t hl = strlen("PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n");
    assert_int_equal(parse(h, strlen(h), &src), (int)hl);
    assert_false(src.local);
    assert_string_equal(src.addr, "192.0.2.7");
    assert_int_equal(src.port, 40000);
    /* every shorter prefix waits for more */
    for (size_t i = 1; i < hl; i++)
        assert_int_equal(parse(h, i, &src), 0);

    const char *h6 = "PROXY TCP6 2001:DB8::1 2001:db8::2 65535 587\r\n";
    assert_int_equal(parse(h6, strlen(h6), &src), (int)strlen(h6));
    assert_string_equal(src.addr, "2001:db8::1");
    const char *mapped = "PROXY TCP6 ::ffff:192.0.2.9 ::1 1 25\r\n";
    assert_int_equal(parse(mapped, strlen(mapped), &src), (int)strlen(mapped));
    assert_string_equal(src.addr, "192.0.2.9");   /* one client, one key */
    const char *unk = "PROXY UNKNOWN\r\n";
    assert_int_equal(parse(unk, strlen(unk), &src), (int)strlen(unk));
    assert_true(src.local);
    const char *unk2 = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
    assert_int_equal(parse(unk2, strlen(unk2), &src), (int)strlen(unk2));
    assert_true(src.local);
}

static void test_v1_bad(void **state)
{
    static const char *const bad[] = {
        "EHLO client.example\r\n",                          /* no header at all */
        "PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n",      /* a field missing */
        "PROXY TCP4 192.0.2.7 198.51.100.1 40000 25 x\r\n", /* one too many */
        "PROXY TCP4 2001:db8::1 198.51.100.1 1 25\r\n",     /* v6 address in TCP4 */
        "PROXY TCP6 192.0.2.7 2001:db8::2 1 25\r\n",
        "PROXY UDP4 192.0.2.7 198.51.100.1 1 25\r\n",
        "PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",   /* port out of range */
        "PROXY TCP4 192.0.2.7 198.51.100.1 +1 25\r\n",
        "PROXY TCP4 192.0.2.7 198.51.100.1 01 25\r\n",      /* leading zero */
        "PROXY TCP4 192.0.2.777 198.51.100.1 1 25\r\n",
        "proxy TCP4 192.0.2.7 198.51.100.1 1 25\r\n",       /* the keyword is upper case */
    };
    struct proxy_source src;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse(bad[i], strlen(bad[i]), &src) != -1)
            fail_msg("accepted: %s", bad[i]);
    /* no CRLF within 107 bytes */
    char longline[200];
    memset(longline, 'A', sizeof(longline));
    memcpy(longline, "PROXY TCP4 ", 11);
    assert_int_equal(parse(longline, sizeof(longline), &src), -1);
    assert_int_equal(parse(longline, 100, &src), 0);   /* might still end in time */
}

static size_t v2(unsigned char *out, int cmd, int fam, const void *addrs, size_t alen, size_t tlvs)
{
    static const unsigned char sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };
    memcpy(out, sig, 12);
    out[12] = (unsigned char)(0x20 | cmd);
    out[13] = (unsigned char)fam;
    size_t body = alen + tlvs;
    out[14] = (unsigned char)(body >> 8);
    out[15] = (unsigned char)body;
    memcpy(out + 16, addrs, alen);
    memset(out + 16 + alen, 0x04, tlvs);   /* TLV bytes: read past */
    return 16 + body;
}

static void test_v2(void **state)
{
    unsigned char buf[2048], a4[12], a6[36];
    struct proxy_source src;
    inet_pton(AF_INET, "192.0.2.44", a4);
    inet_pton(AF_INET, "198.51.100.1", a4 + 4);
    a4[8] = 0x9c, a4[9] = 0x40, a4[10] = 0, a4[11] = 25;
    size_t n = v2(buf, 1, 0x11, a4, sizeof(a4), 0);
    assert_int_equal(parse(buf, n + 5, &src), (int)n);   /* what follows is not the header's */
    assert_string_equal(src.addr, "192.0.2.44");
    assert_int_equal(src.port, 40000);
    for (size_t i = 1; i < n; i++)
        assert_int_equal(parse(buf, i, &src), 0);

    inet_pton(AF_INET6, "2001:db8::abcd", a6);
    inet_pton(AF_INET6, "2001:db8::1", a6 + 16);
    a6[32] = 0, a6[33] = 7, a6[34] = 0, a6[35] = 25;
    n = v2(buf, 1, 0x21, a6, sizeof(a6), 40);   /* with TLVs */
    assert_int_equal(parse(buf, n, &src), (int)n);
    assert_string_equal(src.addr, "2001:db8::abcd");
    assert_int_equal(src.port, 7);

    n = v2(buf, 0, 0x00, "", 0, 0);   /* LOCAL: a health check */
    assert_int_equal(parse(buf, n, &src), (int)n);
    assert_true(src.local);
    n = v2(buf, 1, 0x00, "", 0, 0);   /* PROXY with UNSPEC */
    assert_int_equal(parse(buf, n, &src), (int)n);
    assert_true(src.local);
}

static void test_v2_bad(void **state)
{
    unsigned char buf[70000], a4[12] = { 0 };
    struct proxy_source src;
    size_t n = v2(buf, 1, 0x11, a4, 8, 0);   /* IPv4 block too short */
    assert_int_equal(parse(buf, n, &src), -1);
    n = v2(buf, 2, 0x11, a4, sizeof(a4), 0);   /* command 2 */
    assert_int_equal(parse(buf, n, &src), -1);
    n = v2(buf, 1, 0x12, a4, sizeof(a4), 0);   /* UDP */
    assert_int_equal(parse(buf, n, &src), -1);
    n = v2(buf, 1, 0x31, a4, sizeof(a4), 0);   /* AF_UNIX */
    assert_int_equal(parse(buf, n, &src), -1);
    n = v2(buf, 1, 0x11, a4, sizeof(a4), 0);
    buf[12] = 0x11;   /* version 1 in a v2 signature */
    assert_int_equal(parse(buf, n, &src), -1);
    /* a length past PROXY_HEADER_MAX is refused at once, not waited for */
    v2(buf, 1, 0x11, a4, sizeof(a4), PROXY_HEADER_MAX);
    assert_int_equal(parse(buf, 16, &src), -1);
    /* a signature cut short, then wrong */
    assert_int_equal(parse("\r\n\r\n\0\r\nQU", 9, &src), 0);
    assert_int_equal(parse("\r\n\r\n\0\r\nQX", 9, &src), -1);
}

static void test_cidr(void **state)
{
    struct cidr blocks[3];
    struct netaddr a;
    assert_int_equal(cidr_parse("10.0.0.0/8", &blocks[0]), 0);
    assert_int_equal(cidr_parse("2001:db8::/33", &blocks[1]), 0);
    assert_int_equal(cidr_parse("192.0.2.1", &blocks[2]), 0);
    static const struct {
        const char *addr;
        int in;
    } rows[] = {
        { "10.255.1.2", 1 }, { "11.0.0.1", 0 }, { "::ffff:10.1.1.1", 1 }, { "2001:db8:7fff::1", 1 },
        { "2001:db8:8000::1", 0 }, { "192.0.2.1", 1 }, { "192.0.2.2", 0 },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        assert_int_equal(netaddr_parse(rows[i].addr, &a), 0);
        if (cidr_any(blocks, 3, &a) != rows[i].in)
            fail_msg("%s", rows[i].addr);
    }
    static const char *const bad[] = { "", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "host.example", "::/129" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(cidr_parse(bad[i], &blocks[0]), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1),   cmocka_unit_test(test_v1_bad), cmocka_unit_test(test_v2),
        cmocka_unit_test(test_v2_bad), cmocka_unit_test(test_cidr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
