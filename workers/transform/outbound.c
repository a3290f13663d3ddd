/* outbound — build the outgoing mail (see outbound.h).
 *
 * Everything that came from the device (subject, body, attachment names) is
 * untrusted: the subject loses CR/LF before GMime encodes it (RFC 2047 when
 * not ASCII), names and text are HTML-escaped in the HTML part, and bodies
 * get a transfer encoding GMime picks for 7-bit safety, so no line of ours
 * can be mistaken for a header or an SMTP terminator. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <gmime/gmime.h>

#include "outbound.h"
#include "strbuf.h"
#include "transform.h"

const char *outbound_size(uint64_t n, char *buf, size_t len)
{
    if (n < 1024)
        snprintf(buf, len, "%llu B", (unsigned long long)n);
    else if (n < 1024 * 1024)
        snprintf(buf, len, "%.1f KB", (double)n / 1024.0);
    else if (n < 1024ULL * 1024 * 1024)
        snprintf(buf, len, "%.1f MB", (double)n / (1024.0 * 1024.0));
    else
        snprintf(buf, len, "%.1f GB", (double)n / (1024.0 * 1024.0 * 1024.0));
    return buf;
}

static const char *expiry_text(int64_t s, char *buf, size_t len)
{
    time_t t = (time_t)s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M UTC", &tm);
    return buf;
}

void outbound_text(const struct outbound_params *p, struct strbuf *out)
{
    char sz[32], ex[40];
    strbuf_append(out, p->body_text ? p->body_text : "");
    if (out->len && out->data[out->len - 1] != '\n')
        strbuf_append(out, "\n");
    if (!p->n_links)
        return;
    strbuf_append(out, "\n-- Attachments --\n");
    for (size_t i = 0; i < p->n_links; i++) {
        const struct transform_link *l = &p->links[i];
        strbuf_appendf(out, "\n%s (%s, sha256 %.12s)\n", l->name, outbound_size(l->size, sz, sizeof(sz)),
                       l->sha256);
        if (l->blocked)
            strbuf_append(out, "  not linked: this file type is blocked\n");
        else
            strbuf_appendf(out, "  %s\n  expires %s\n", l->url,
                           expiry_text(l->expires_s, ex, sizeof(ex)));
    }
}

static void html_escape(struct strbuf *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': strbuf_append(b, "&amp;"); break;
        case '<': strbuf_append(b, "&lt;"); break;
        case '>': strbuf_append(b, "&gt;"); break;
        case '"': strbuf_append(b, "&quot;"); break;
        case '\'': strbuf_append(b, "&#39;"); break;
        default: strbuf_append_n(b, s, 1);
        }
    }
}

void outbound_html(const struct outbound_params *p, struct strbuf *out)
{
    char sz[32], ex[40];
    /* The device's text is shown as text: its own HTML (if any) is never
     * passed through, so nothing active reaches the recipient from it. */
    strbuf_append(out, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n"
                       "<pre style=\"white-space:pre-wrap;font-family:monospace\">");
    html_escape(out, p->body_text);
    strbuf_append(out, "</pre>\n");
    if (p->n_links) {
        strbuf_append(out, "<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">\n"
                           "<tr><th>Attachment</th><th>Size</th><th>SHA-256</th><th>Expires</th>"
                           "<th>Link</th></tr>\n");
        for (size_t i = 0; i < p->n_links; i++) {
            const struct transform_link *l = &p->links[i];
            strbuf_append(out, "<tr><td>");
            html_escape(out, l->name);
            strbuf_appendf(out, "</td><td>%s</td><td><code>%.12s</code></td>",
                           outbound_size(l->size, sz, sizeof(sz)), l->sha256);
            if (l->blocked) {
                strbuf_append(out, "<td>-</td><td>blocked file type</td></tr>\n");
                continue;
            }
            strbuf_appendf(out, "<td>%s</td><td><a href=\"", expiry_text(l->expires_s, ex, sizeof(ex)));
            html_escape(out, l->url);
            strbuf_append(out, "\">download</a></td></tr>\n");
        }
        strbuf_append(out, "</table>\n");
    }
    strbuf_append(out, "</body></html>\n");
}

static GMimeTextPart *text_part(const char *subtype, const char *text)
{
    GMimeTextPart *tp = g_mime_text_part_new_with_subtype(subtype);
    g_mime_text_part_set_text(tp, text);
    GMimeContentEncoding enc =
        g_mime_part_get_best_content_encoding(GMIME_PART(tp), GMIME_ENCODING_CONSTRAINT_7BIT);
    g_mime_part_set_content_encoding(GMIME_PART(tp), enc);
    return tp;
}

static char *one_line(const char *s)
{
    char *o = xstrdup(s ? s : "");
    char *w = o;
    for (char *r = o; *r; r++) {
        if (*r == '\r' || *r == '\n') {
            if (w > o && w[-1] != ' ')
                *w++ = ' ';
            continue;
        }
        *w++ = *r;
    }
    *w = '\0';
    return o;
}

int outbound_build(const struct outbound_params *p, char **mime, size_t *len, char *err,
                   size_t errlen)
{
    InternetAddressList *from = internet_address_list_parse(NULL, p->sender);
    InternetAddress *fa = from && internet_address_list_length(from) == 1
                              ? internet_address_list_get_address(from, 0) : NULL;
    if (!fa || !INTERNET_ADDRESS_IS_MAILBOX(fa) ||
        !strchr(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(fa)), '@')) {
        if (from)
            g_object_unref(from);
        snprintf(err, errlen, "sender identity is not one address");
        return -EINVAL;
    }
    GMimeMessage *msg = g_mime_message_new(TRUE);
    internet_address_list_append(g_mime_message_get_from(msg), from);
    g_object_unref(from);
    InternetAddressList *to = g_mime_message_get_addresses(msg, GMIME_ADDRESS_TYPE_TO);
    for (size_t i = 0; i < p->n_recipients; i++) {
        InternetAddress *a = internet_address_mailbox_new(NULL, p->recipients[i]);
        internet_address_list_add(to, a);
        g_object_unref(a);
    }
    char *subj = one_line(p->subject);
    g_mime_message_set_subject(msg, subj, "utf-8");
    free(subj);
    g_mime_message_set_message_id(msg, p->message_id);
    GDateTime *dt = g_date_time_new_from_unix_utc(p->date_ms / 1000);
    g_mime_message_set_date(msg, dt);
    g_date_time_unref(dt);
    g_mime_object_set_header(GMIME_OBJECT(msg), "Auto-Submitted", "auto-generated", NULL);

    struct strbuf tb, hb;
    strbuf_init(&tb);
    strbuf_init(&hb);
    outbound_text(p, &tb);
    outbound_html(p, &hb);
    GMimeMultipart *alt = g_mime_multipart_new_with_subtype("alternative");
    GMimeTextPart *tp = text_part("plain", tb.data ? tb.data : "");
    GMimeTextPart *hp = text_part("html", hb.data ? hb.data : "");
    g_mime_multipart_add(alt, GMIME_OBJECT(tp));
    g_mime_multipart_add(alt, GMIME_OBJECT(hp));
    g_object_unref(tp);
    g_object_unref(hp);
    g_mime_message_set_mime_part(msg, GMIME_OBJECT(alt));
    g_object_unref(alt);
    strbuf_free(&tb);
    strbuf_free(&hb);

    GMimeFormatOptions *fo = g_mime_format_options_new();
    g_mime_format_options_set_newline_format(fo, GMIME_NEWLINE_FORMAT_DOS);
    GMimeStream *ms = g_mime_stream_mem_new();
    g_mime_object_write_to_stream(GMIME_OBJECT(msg), fo, ms);
    GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(ms));
    *mime = xmalloc(ba->len + 1);
    memcpy(*mime, ba->data, ba->len);
    (*mime)[ba->len] = '\0';
    *len = ba->len;
    g_object_unref(ms);
    g_mime_format_options_free(fo);
    g_object_unref(msg);
    return 0;
}
