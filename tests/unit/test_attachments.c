/* attachments: safe key names, display names, the lenient base64 decoder,
 * and decoding parts of a parsed mail into a sink. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "process.h"
#include "strbuf.h"
#include "transform/attachments.h"
#include "transform/transform.h"

static const struct {
    const char *in, *out;
} safe_cases[] = {
    { "report.csv", "report.csv" },
    { "../../etc/passwd", "etc_passwd" },
    { "..\\..\\boot.ini", "boot.ini" },
    { "a b\r\nc.txt", "a_b_c.txt" },
    { ".bashrc", "bashrc" },
    { "Prüfbericht №2.txt", "Pr_fbericht_2.txt" },
    { "", "attachment" },
    { "///", "attachment" },
    { "..", "attachment" },
    { "name.", "name" },
};

static void test_safe_name(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(safe_cases) / sizeof(safe_cases[0]); i++) {
        char *s = attachment_safe_name(safe_cases[i].in);
        assert_string_equal(s, safe_cases[i].out);
        free(s);
    }
    char longname[5000];
    memset(longname, 'n', 4000);
    strcpy(longname + 4000, ".log");
    char *s = attachment_safe_name(longname);
    assert_int_equal(strlen(s), 80);
    assert_string_equal(s + 76, ".log");
    free(s);
}

static const struct {
    const char *in, *out;
} display_cases[] = {
    { "report.csv", "report.csv" },
    { "../../etc/passwd", "passwd" },
    { "C:\\Users\\x\\boot.ini", "boot.ini" },
    { "evil\r\nBcc: x@y.org", "evilBcc: x@y.org" },
    { "  ..hidden. ", "hidden" },
    { "..", "fallback" },
    { "a\x7f\x01z", "az" },
    { "bad\xff\xfeutf8", "bad\xef\xbf\xbd\xef\xbf\xbdutf8" },
    { "\xc2\x85next", "next" },
    { NULL, "fallback" },
};

static void test_display_name(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(display_cases) / sizeof(display_cases[0]); i++) {
        char *s = attachment_display_name(display_cases[i].in, "fallback");
        assert_string_equal(s, display_cases[i].out);
        free(s);
    }
    /* 4 KB of 3-byte characters: cut at 200 bytes on a character boundary. */
    struct strbuf b;
    strbuf_init(&b);
    for (int i = 0; i < 1400; i++)
        strbuf_append(&b, "\xe2\x82\xac");
    char *s = attachment_display_name(b.data, "x");
    assert_true(strlen(s) <= 200 && strlen(s) % 3 == 0);
    free(s);
    strbuf_free(&b);
}

static const struct {
    const char *in;
    const char *out;
    size_t outlen;
} b64_cases[] = {
    { "aGVsbG8=", "hello", 5 },
    { "aGVsbG8", "hello", 5 },          /* missing padding */
    { "aGVs\r\nbG8h", "hello!", 6 },
    { "aG Vs*bG8h", "hello!", 6 },      /* junk skipped */
    { "QQ==Qg==", "A", 1 },             /* padding ends the data */
    { "QUJD\r\nQQ==\r\n--B-----\r\nepilogue\r\n", "ABCA", 4 },
    { "QUI=\r\n\r\nQUJD", "AB", 2 },
    { "QQ=Qg==", "A\x04 ", 3 },         /* a lone '=' mid-data is skipped */
    { "QQ", "A", 1 },
    { "Q", "", 0 },                     /* 6 bits make no byte */
    { "", "", 0 },
};

static void test_base64(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(b64_cases) / sizeof(b64_cases[0]); i++) {
        unsigned char out[64];
        struct b64_decoder d;
        b64_decoder_init(&d);
        size_t n = 0;
        /* One byte at a time: state carries across calls. */
        for (const char *p = b64_cases[i].in; *p; p++)
            n += b64_decoder_step(&d, (const unsigned char *)p, 1, out + n);
        n += b64_decoder_finish(&d, out + n);
        assert_int_equal(n, b64_cases[i].outlen);
        assert_memory_equal(out, b64_cases[i].out, n);
    }
}

static int collect(void *opaque, const void *buf, size_t len)
{
    strbuf_append_n(opaque, buf, len);
    return 0;
}

static GMimeObject *parse(const char *text, GMimeMessage **keep)
{
    GMimeStream *s = g_mime_stream_mem_new_with_buffer(text, strlen(text));
    GMimeParser *p = g_mime_parser_new_with_stream(s);
    GMimeMessage *m = g_mime_parser_construct_message(p, NULL);
    g_object_unref(p);
    g_object_unref(s);
    *keep = m;
    return g_mime_message_get_mime_part(m);
}

static const struct {
    const char *cte, *body, *decoded;
} decode_cases[] = {
    { "base64", "aGVsbG8gd29y\r\nbGQ=\r\n", "hello world" },
    { "quoted-printable", "caf=C3=A9 =\r\nbar\r\n", "caf\xc3\xa9 bar\r\n" },
    { "7bit", "plain\r\ntext", "plain\r\ntext" },
    { "x-uuencode", "begin 644 f.txt\r\n#86)C\r\n`\r\nend\r\n", "abc" },
    /* "abc@" is "$86)C0  ": the trailing spaces (zero bits) stripped. */
    { "x-uuencode", "begin 644 f.txt\r\n$86)C0\r\n#86)C\r\n`\r\nend\r\n", "abc@abc" },
    { "x-uuencode", "begin 644 f.txt\n$86)C0\n#86)C\nend\n", "abc@abc" },
    { "x-uuencode", "noise\r\nbegin 600 f\r\n#86)C\r\nend\r\n#86)C\r\n", "abc" },
    { "x-uuencode", "begin 644 f.txt\r\n#86)C", "abc" },
};

static void test_decode_parts(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(decode_cases) / sizeof(decode_cases[0]); i++) {
        char mail[512];
        snprintf(mail, sizeof(mail),
                 "Subject: t\r\nContent-Type: application/octet-stream\r\n"
                 "Content-Disposition: attachment; filename=f\r\nContent-Transfer-Encoding: %s\r\n\r\n%s",
                 decode_cases[i].cte, decode_cases[i].body);
        GMimeMessage *m;
        GMimeObject *part = parse(mail, &m);
        assert_true(attachment_is_attachment(part));
        struct strbuf out;
        strbuf_init(&out);
        struct attachment_limits lim = { 0, 0, NULL, 1, NULL, -1, -1 };
        char err[128];
        uint64_t n = 0;
        assert_int_equal(attachment_decode(part, &lim, collect, &out, &n, err, sizeof(err)), 0);
        assert_int_equal(n, strlen(decode_cases[i].decoded));
        assert_memory_equal(out.data, decode_cases[i].decoded, n);
        strbuf_free(&out);
        g_object_unref(m);
    }
}

static void test_limits_stop_decoding(void **state)
{
    (void)state;
    struct strbuf mail;
    strbuf_init(&mail);
    strbuf_append(&mail, "Subject: t\r\nContent-Type: application/octet-stream\r\n"
                         "Content-Disposition: attachment; filename=f\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    for (int i = 0; i < 3000; i++)
        strbuf_append(&mail, "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n");
    GMimeMessage *m;
    GMimeObject *part = parse(mail.data, &m);
    struct strbuf out;
    strbuf_init(&out);
    struct attachment_limits lim = { 1000, 0, NULL, 1, NULL, -1, -1 };
    char err[128];
    assert_int_equal(attachment_decode(part, &lim, collect, &out, NULL, err, sizeof(err)), -EFBIG);
    assert_non_null(strstr(err, "more than 1000 bytes"));
    strbuf_free(&out);
    g_object_unref(m);
    strbuf_free(&mail);
}

static void test_is_attachment(void **state)
{
    (void)state;
    static const struct {
        const char *headers;
        int att;
    } rows[] = {
        { "Content-Type: text/plain\r\n", 0 },
        { "Content-Type: text/html\r\n", 0 },
        { "Content-Type: text/plain\r\nContent-Disposition: attachment\r\n", 1 },
        { "Content-Type: text/plain; name=x.txt\r\n", 1 },
        { "Content-Type: image/png\r\nContent-Disposition: inline\r\n", 1 },
        { "Content-Type: message/rfc822\r\n", 1 },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char mail[512];
        snprintf(mail, sizeof(mail), "Subject: t\r\n%s\r\nFrom: a@b.c\r\n\r\nx\r\n", rows[i].headers);
        GMimeMessage *m;
        GMimeObject *part = parse(mail, &m);
        assert_int_equal(attachment_is_attachment(part), rows[i].att);
        g_object_unref(m);
    }
}

int main(void)
{
    process_init(0);   /* GMime, libcurl, OpenSSL: before any test */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_safe_name),
        cmocka_unit_test(test_display_name),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_decode_parts),
        cmocka_unit_test(test_limits_stop_decoding),
        cmocka_unit_test(test_is_attachment),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    process_shutdown();
    return rc;
}
