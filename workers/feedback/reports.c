/* reports — DSN and ARF parsing.
 *
 * Reports come from arbitrary MTAs and mailbox providers: every field is
 * length-limited and stripped of control characters, unknown fields are
 * ignored, and a report that cannot be read is REPORT_UNKNOWN rather than an
 * error, so the caller can route it to review instead of failing. */
#include "reports.h"
#include "address.h"
#include "strbuf.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <gmime/gmime.h>
#include <stdio.h>
#include <string.h>

static void copy_clean(char *dst, size_t dlen, const char *src)
{
    size_t j = 0;
    while (*src && isspace((unsigned char)*src))
        src++;
    for (; *src && j + 1 < dlen; src++)
        dst[j++] = ((unsigned char)*src < 0x20 || *src == 0x7f) ? ' ' : *src;
    while (j && isspace((unsigned char)dst[j - 1]))
        j--;
    dst[j] = '\0';
}

void report_fields(const char *buf, size_t len, report_field_cb cb, void *opaque)
{
    struct strbuf name, value;
    int block = 0, have = 0, blank_seen = 0;
    size_t i = 0;

    strbuf_init(&name);
    strbuf_init(&value);
    while (i < len) {
        size_t e = i;
        while (e < len && buf[e] != '\n')
            e++;
        size_t l = e - i;
        if (l && buf[i + l - 1] == '\r')
            l--;
        const char *line = buf + i;
        i = e < len ? e + 1 : e;
        if (l == 0) {
            if (have) {
                cb(opaque, block, name.data, value.data ? value.data : "");
                have = 0;
            }
            if (!blank_seen)
                block++;
            blank_seen = 1;
            continue;
        }
        blank_seen = 0;
        if ((line[0] == ' ' || line[0] == '\t') && have) {  /* folded: one space */
            while (l && (*line == ' ' || *line == '\t'))
                line++, l--;
            if (value.len < 4096) {
                strbuf_append(&value, " ");
                strbuf_append_n(&value, line, l < 4096 ? l : 4096);
            }
            continue;
        }
        const char *colon = memchr(line, ':', l);
        if (have)
            cb(opaque, block, name.data, value.data ? value.data : "");
        have = 0;
        if (!colon || colon == line || (size_t)(colon - line) > 100)
            continue;
        strbuf_reset(&name);
        strbuf_append_n(&name, line, (size_t)(colon - line));
        strbuf_reset(&value);
        size_t vl = l - (size_t)(colon - line) - 1;
        strbuf_append_n(&value, colon + 1, vl < 4096 ? vl : 4096);
        have = 1;
    }
    if (have)
        cb(opaque, block, name.data, value.data ? value.data : "");
    strbuf_free(&name);
    strbuf_free(&value);
}

/* "rfc822; <User@Example.COM>" -> "User@example.com" (normalized), or "". */
static void typed_address(char *dst, size_t dlen, const char *v)
{
    char tmp[320];
    const char *semi = strchr(v, ';');
    copy_clean(tmp, sizeof(tmp), semi ? semi + 1 : v);
    char *a = tmp;
    if (*a == '<')
        a++;
    size_t l = strlen(a);
    if (l && a[l - 1] == '>')
        a[l - 1] = '\0';
    if (address_normalize(a, dst, dlen) != 0)
        dst[0] = '\0';
}

struct dsn_ctx {
    struct report *r;
    int cur_block;
    struct report_recipient *cur;
};

static void on_dsn_field(void *opaque, int block, const char *name, const char *value)
{
    struct dsn_ctx *c = opaque;
    struct report *r = c->r;

    if (strcasecmp(name, "Reporting-MTA") == 0) {
        copy_clean(r->reporting_mta, sizeof(r->reporting_mta), value);
        return;
    }
    if (block == 0)
        return;   /* per-message fields: only Reporting-MTA matters */
    if (c->cur_block != block) {
        c->cur_block = block;
        c->cur = r->n_rcpt < REPORT_MAX_RCPT ? &r->rcpt[r->n_rcpt++] : NULL;
        if (c->cur)
            memset(c->cur, 0, sizeof(*c->cur));
    }
    struct report_recipient *p = c->cur;
    if (!p)
        return;
    if (strcasecmp(name, "Final-Recipient") == 0)
        typed_address(p->address, sizeof(p->address), value);
    else if (strcasecmp(name, "Original-Recipient") == 0 && !p->address[0])
        typed_address(p->address, sizeof(p->address), value);
    else if (strcasecmp(name, "Action") == 0) {
        copy_clean(p->action, sizeof(p->action), value);
        for (char *s = p->action; *s; s++)
            *s = (char)tolower((unsigned char)*s);
        p->action[strcspn(p->action, " (")] = '\0';
    } else if (strcasecmp(name, "Status") == 0) {
        char tmp[64];
        copy_clean(tmp, sizeof(tmp), value);
        size_t n = strspn(tmp, "0123456789.");
        if (n >= sizeof(p->status))
            n = sizeof(p->status) - 1;
        memcpy(p->status, tmp, n);
        p->status[n] = '\0';
    } else if (strcasecmp(name, "Diagnostic-Code") == 0)
        copy_clean(p->diagnostic, sizeof(p->diagnostic), value);
    else if (strcasecmp(name, "Remote-MTA") == 0)
        copy_clean(p->remote_mta, sizeof(p->remote_mta), value);
}

static void on_arf_field(void *opaque, int block, const char *name, const char *value)
{
    struct report *r = opaque;
    if (strcasecmp(name, "Feedback-Type") == 0) {
        copy_clean(r->feedback_type, sizeof(r->feedback_type), value);
        for (char *s = r->feedback_type; *s; s++)
            *s = (char)tolower((unsigned char)*s);
    } else if (strcasecmp(name, "Original-Rcpt-To") == 0 && !r->original_rcpt[0]) {
        typed_address(r->original_rcpt, sizeof(r->original_rcpt), value);
    } else if (strcasecmp(name, "Reporting-MTA") == 0) {
        copy_clean(r->reporting_mta, sizeof(r->reporting_mta), value);
    }
}

static void on_orig_field(void *opaque, int block, const char *name, const char *value)
{
    struct report *r = opaque;
    if (block != 0)
        return;
    if (strcasecmp(name, "Message-ID") == 0 && !r->orig_message_id[0])
        copy_clean(r->orig_message_id, sizeof(r->orig_message_id), value);
    else if (strcasecmp(name, "Return-Path") == 0 && !r->orig_return_path[0])
        copy_clean(r->orig_return_path, sizeof(r->orig_return_path), value);
    else if (strcasecmp(name, "To") == 0 && !r->orig_to[0])
        copy_clean(r->orig_to, sizeof(r->orig_to), value);
}

/* Decoded content of a leaf part into a strbuf (bounded). */
static void part_bytes(GMimeObject *obj, struct strbuf *out, size_t max)
{
    GMimeDataWrapper *dw = g_mime_part_get_content(GMIME_PART(obj));
    if (!dw)
        return;
    GMimeStream *mem = g_mime_stream_mem_new();
    g_mime_data_wrapper_write_to_stream(dw, mem);
    GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
    strbuf_append_n(out, ba->data, ba->len < max ? ba->len : max);
    g_object_unref(mem);
}

static void read_original(struct report *r, GMimeObject *part)
{
    if (GMIME_IS_MESSAGE_PART(part)) {
        GMimeMessage *m = g_mime_message_part_get_message(GMIME_MESSAGE_PART(part));
        if (!m)
            return;
        struct strbuf b;
        strbuf_init(&b);
        char *h = g_mime_object_get_headers(GMIME_OBJECT(m), NULL);
        if (h) {
            strbuf_append(&b, h);
            g_free(h);
        }
        report_fields(b.data ? b.data : "", b.len, on_orig_field, r);
        strbuf_free(&b);
    } else if (GMIME_IS_PART(part)) {
        struct strbuf b;
        strbuf_init(&b);
        part_bytes(part, &b, 256 * 1024);
        report_fields(b.data ? b.data : "", b.len, on_orig_field, r);
        strbuf_free(&b);
    }
}

static int parse_stream(GMimeStream *stream, struct report *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    GMimeParser *p = g_mime_parser_new_with_stream(stream);
    GMimeMessage *msg = g_mime_parser_construct_message(p, NULL);
    g_object_unref(p);
    if (!msg) {
        snprintf(err, errlen, "not a MIME message");
        return -EINVAL;
    }
    GMimeObject *body = g_mime_message_get_mime_part(msg);
    if (body && GMIME_IS_MULTIPART(body)) {
        GMimeMultipart *mp = GMIME_MULTIPART(body);
        int n = g_mime_multipart_get_count(mp);
        for (int i = 0; i < n && i < 16; i++) {
            GMimeObject *part = g_mime_multipart_get_part(mp, i);
            GMimeContentType *ct = g_mime_object_get_content_type(part);
            if (!ct)
                continue;
            if (g_mime_content_type_is_type(ct, "message", "delivery-status") ||
                g_mime_content_type_is_type(ct, "message", "global-delivery-status")) {
                struct strbuf b;
                strbuf_init(&b);
                if (GMIME_IS_PART(part))
                    part_bytes(part, &b, 256 * 1024);
                struct dsn_ctx c = { r, -1, NULL };
                report_fields(b.data ? b.data : "", b.len, on_dsn_field, &c);
                strbuf_free(&b);
                r->kind = REPORT_DSN;
            } else if (g_mime_content_type_is_type(ct, "message", "feedback-report")) {
                struct strbuf b;
                strbuf_init(&b);
                if (GMIME_IS_PART(part))
                    part_bytes(part, &b, 64 * 1024);
                else if (GMIME_IS_MESSAGE_PART(part)) {
                    /* some parsers see the report as headers of a message */
                    GMimeMessage *m = g_mime_message_part_get_message(GMIME_MESSAGE_PART(part));
                    char *h = m ? g_mime_object_get_headers(GMIME_OBJECT(m), NULL) : NULL;
                    if (h) {
                        strbuf_append(&b, h);
                        g_free(h);
                    }
                }
                report_fields(b.data ? b.data : "", b.len, on_arf_field, r);
                strbuf_free(&b);
                r->kind = REPORT_ARF;
            } else if (g_mime_content_type_is_type(ct, "message", "rfc822") ||
                       g_mime_content_type_is_type(ct, "text", "rfc822-headers") ||
                       g_mime_content_type_is_type(ct, "message", "global-headers")) {
                read_original(r, part);
            }
        }
    }
    g_object_unref(msg);
    return 0;
}

int report_parse_file(const char *path, struct report *out, char *err, size_t errlen)
{
    GError *ge = NULL;
    GMimeStream *s = g_mime_stream_fs_open(path, O_RDONLY, 0, &ge);
    if (!s) {
        snprintf(err, errlen, "%s: %s", path, ge ? ge->message : "cannot open");
        if (ge)
            g_error_free(ge);
        return -ENOENT;
    }
    int rc = parse_stream(s, out, err, errlen);
    g_object_unref(s);
    return rc;
}

int report_parse_mem(const char *buf, size_t len, struct report *out, char *err, size_t errlen)
{
    GMimeStream *s = g_mime_stream_mem_new_with_buffer(buf, len);
    int rc = parse_stream(s, out, err, errlen);
    g_object_unref(s);
    return rc;
}
