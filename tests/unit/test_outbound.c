/* outbound: the mail transform sends, read back with GMime. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <gmime/gmime.h>

#include "process.h"
#include "strbuf.h"
#include "transform/outbound.h"
#include "transform/transform.h"

static struct transform_link links[] = {
    { "report <b>.csv", "attachments/2026-11-26/id/1-report_b_.csv", "text/csv", 2048,
      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
      "http://127.0.0.1:8025/a/tok\"en&x", 1795000000, 0 },
    { "tool.exe", NULL, "application/octet-stream", 10,
      "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210", NULL, 0, 1 },
};

/* The built bytes read back by GMime. */
static GMimeMessage *parse_mime(const char *mime, size_t len)
{
    GMimeStream *st = g_mime_stream_mem_new_with_buffer(mime, len);
    GMimeParser *ps = g_mime_parser_new_with_stream(st);
    GMimeMessage *m = g_mime_parser_construct_message(ps, NULL);
    g_object_unref(ps);
    g_object_unref(st);
    assert_non_null(m);
    return m;
}

static GMimeMessage *build(const char *subject, const char *body, char **mime, size_t *len)
{
    const char *rcpts[] = { "a@x.com", "b@y.org" };
    struct outbound_params p = { "mailfleet <noreply@iot.localhost>", rcpts, 2, subject,
                                 "0190f3a2-0000-7000-8000-000000000001@iot.localhost", 1795000000000LL,
                                 body, links, 2 };
    char err[128];
    assert_int_equal(outbound_build(&p, mime, len, err, sizeof(err)), 0);
    return parse_mime(*mime, *len);
}

static char *part_text(GMimeMessage *m, const char *subtype)
{
    GMimeMultipart *alt = GMIME_MULTIPART(g_mime_message_get_mime_part(m));
    for (int i = 0; i < g_mime_multipart_get_count(alt); i++) {
        GMimeObject *o = g_mime_multipart_get_part(alt, i);
        if (g_mime_content_type_is_type(g_mime_object_get_content_type(o), "text", subtype))
            return g_mime_text_part_get_text(GMIME_TEXT_PART(o));
    }
    return NULL;
}

static void test_headers(void **state)
{
    (void)state;
    char *mime;
    size_t len;
    GMimeMessage *m = build("Alarm ✅ über", "hello\n", &mime, &len);
    char *from = internet_address_list_to_string(g_mime_message_get_from(m), NULL, FALSE);
    assert_string_equal(from, "mailfleet <noreply@iot.localhost>");
    g_free(from);
    InternetAddressList *to = g_mime_message_get_addresses(m, GMIME_ADDRESS_TYPE_TO);
    assert_int_equal(internet_address_list_length(to), 2);
    assert_string_equal(g_mime_message_get_subject(m), "Alarm ✅ über");
    assert_string_equal(g_mime_message_get_message_id(m),
                        "0190f3a2-0000-7000-8000-000000000001@iot.localhost");
    assert_string_equal(g_mime_object_get_header(GMIME_OBJECT(m), "Auto-Submitted"), "auto-generated");
    assert_non_null(g_mime_object_get_header(GMIME_OBJECT(m), "Date"));
    assert_true(g_mime_content_type_is_type(
        g_mime_object_get_content_type(g_mime_message_get_mime_part(m)), "multipart", "alternative"));
    /* Non-ASCII subject is RFC 2047 encoded: the raw mail is 7-bit. */
    for (size_t i = 0; i < len; i++)
        assert_true((unsigned char)mime[i] < 0x80);
    /* CRLF everywhere, lines within 998. */
    size_t line = 0;
    for (size_t i = 0; i < len; i++) {
        if (mime[i] == '\n') {
            assert_true(i > 0 && mime[i - 1] == '\r');
            line = 0;
        } else {
            assert_true(++line <= 998);
        }
    }
    free(mime);
    g_object_unref(m);
}

static void test_subject_injection(void **state)
{
    (void)state;
    char *mime;
    size_t len;
    GMimeMessage *m = build("x\r\nBcc: evil@x.com", "b", &mime, &len);
    assert_null(g_mime_object_get_header(GMIME_OBJECT(m), "Bcc"));
    assert_string_equal(g_mime_message_get_subject(m), "x Bcc: evil@x.com");
    free(mime);
    g_object_unref(m);
}

static void test_bodies(void **state)
{
    (void)state;
    char *mime;
    size_t len;
    GMimeMessage *m = build("s", "line one\n.\nline <three> & more\n", &mime, &len);
    char *text = part_text(m, "plain");
    char *html = part_text(m, "html");
    /* Compare as LF text: the mail itself is CRLF. */
    for (char *s = text, *w = text;; s++) {
        if (*s != '\r')
            *w++ = *s;
        if (!*s)
            break;
    }
    assert_non_null(strstr(text, "line one\n.\nline <three>"));
    assert_non_null(strstr(text, "report <b>.csv (2.0 KB, sha256 0123456789ab)"));
    assert_non_null(strstr(text, "http://127.0.0.1:8025/a/tok\"en&x"));
    assert_non_null(strstr(text, "expires 2026-11-18"));
    assert_non_null(strstr(text, "tool.exe (10 B, sha256 fedcba987654)\n  not linked"));
    assert_non_null(strstr(html, "line &lt;three&gt; &amp; more"));
    assert_non_null(strstr(html, "<td>report &lt;b&gt;.csv</td>"));
    assert_non_null(strstr(html, "href=\"http://127.0.0.1:8025/a/tok&quot;en&amp;x\""));
    assert_null(strstr(html, "<b>"));
    g_free(text);
    g_free(html);
    free(mime);
    g_object_unref(m);
}

static void test_sizes(void **state)
{
    (void)state;
    static const struct {
        uint64_t n;
        const char *s;
    } rows[] = { { 0, "0 B" }, { 1023, "1023 B" }, { 1024, "1.0 KB" }, { 1536, "1.5 KB" },
                 { 1048576, "1.0 MB" }, { 5368709120ULL, "5.0 GB" } };
    char buf[32];
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        assert_string_equal(outbound_size(rows[i].n, buf, sizeof(buf)), rows[i].s);
}

static void test_bad_sender(void **state)
{
    (void)state;
    const char *rcpts[] = { "a@x.com" };
    struct outbound_params p = { "nobody", rcpts, 1, "s", "id@x", 0, "b", NULL, 0 };
    char *mime = NULL, err[128];
    size_t len;
    assert_int_equal(outbound_build(&p, &mime, &len, err, sizeof(err)), -EINVAL);
    assert_null(mime);
}

/* The device named to the recipients (a rule's show_sender): Reply-To and a
 * line in both alternatives; without it, neither. */
static const struct {
    const char *original_sender;
    const char *reply_to;   /* expected header, NULL = absent */
} sender_cases[] = {
    { "sensor7@devices.example", "sensor7@devices.example" },
    { NULL, NULL },
};

static void test_original_sender(void **state)
{
    (void)state;
    const char *rcpts[] = { "a@x.com" };
    for (size_t i = 0; i < sizeof(sender_cases) / sizeof(sender_cases[0]); i++) {
        struct outbound_params p = { "mailfleet <noreply@iot.localhost>", rcpts, 1, "s", "id@iot.localhost", 0,
                                     "hello\n", NULL, 0, sender_cases[i].original_sender };
        char *mime, err[128];
        size_t len;
        assert_int_equal(outbound_build(&p, &mime, &len, err, sizeof(err)), 0);
        GMimeMessage *m = parse_mime(mime, len);
        const char *rt = g_mime_object_get_header(GMIME_OBJECT(m), "Reply-To");
        char *text = part_text(m, "plain"), *html = part_text(m, "html");
        if (sender_cases[i].reply_to) {
            assert_non_null(rt);
            assert_string_equal(rt, sender_cases[i].reply_to);
            /* after the signature separator, on its own line (CRLF on the wire) */
            assert_non_null(strstr(text, "\r\n-- \r\nSent by sensor7@devices.example via mailfleet"));
            assert_non_null(strstr(html, "Sent by sensor7@devices.example via mailfleet"));
        } else {
            assert_null(rt);
            assert_null(strstr(text, "Sent by"));
            assert_null(strstr(html, "Sent by"));
        }
        /* From is always the fleet's own sender. */
        char *from = internet_address_list_to_string(g_mime_message_get_from(m), NULL, FALSE);
        assert_string_equal(from, "mailfleet <noreply@iot.localhost>");
        g_free(from);
        g_free(text);
        g_free(html);
        g_object_unref(m);
        free(mime);
    }
}

/* Found by tests/fuzz/transform: GMime folds headers with a bare LF, and its
 * structured fold broke a long To list inside an address ("user10@" LF TAB
 * "x.com").  Fifty recipients and a long subject: CRLF only, each address
 * whole on one line, all of them read back. */
static void test_long_headers_fold_with_crlf(void **state)
{
    (void)state;
    char addrs[50][32];
    const char *rcpts[50];
    for (int i = 0; i < 50; i++) {
        snprintf(addrs[i], sizeof(addrs[i]), "user%02d@x.com", i);
        rcpts[i] = addrs[i];
    }
    char subject[512];
    memset(subject, 0, sizeof(subject));
    for (int i = 0; i < 40; i++)
        strcat(subject, i ? " long word" : "long word");
    struct outbound_params p = { "mailfleet <noreply@iot.localhost>", rcpts, 50, subject, "id@iot.localhost", 0,
                                 "hello\n", NULL, 0, "device-with-a-rather-long-name@devices.example" };
    char *mime, err[128];
    size_t len;
    assert_int_equal(outbound_build(&p, &mime, &len, err, sizeof(err)), 0);
    for (size_t i = 0; i < len; i++) {
        if (mime[i] == '\n')
            assert_true(i > 0 && mime[i - 1] == '\r');
        if (mime[i] == '\r')
            assert_true(i + 1 < len && mime[i + 1] == '\n');
    }
    for (int i = 0; i < 50; i++)
        assert_non_null(strstr(mime, addrs[i]));
    assert_non_null(strstr(mime, "\r\nTo: user00@x.com, user01@x.com,"));
    GMimeMessage *m = parse_mime(mime, len);
    InternetAddressList *to = g_mime_message_get_addresses(m, GMIME_ADDRESS_TYPE_TO);
    assert_int_equal(internet_address_list_length(to), 50);
    for (int i = 0; i < 50; i++)
        assert_string_equal(internet_address_mailbox_get_addr(
                                INTERNET_ADDRESS_MAILBOX(internet_address_list_get_address(to, i))), addrs[i]);
    assert_string_equal(g_mime_message_get_subject(m), subject);
    g_object_unref(m);
    free(mime);
}

int main(void)
{
    process_init(0);   /* GMime, libcurl, OpenSSL: before any test */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_subject_injection),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_bad_sender),
        cmocka_unit_test(test_original_sender),
        cmocka_unit_test(test_long_headers_fold_with_crlf),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    process_shutdown();
    return rc;
}
