/* outbound — build the outgoing mail (see outbound.h).
 *
 * GMime does the parts that need RFC knowledge (parsing the sender, RFC
 * 2047 encoding of the subject, header folding, quoted-printable); the
 * fixed skeleton around them is written directly, which is several times
 * cheaper than building and serializing a GMime object tree for every
 * small mail.  Everything that came from the device (subject, body,
 * attachment names) is untrusted: the subject loses CR/LF before it is
 * encoded, names and text are HTML-escaped in the HTML part, and each body
 * is 7bit only when it is short-lined ASCII, else quoted-printable, so no
 * line of ours can be mistaken for a header, a boundary or an SMTP
 * terminator (dot-stuffing is the transport's job). */
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
    /* After "-- " mail clients show it as a signature, set apart. */
    if (p->original_sender)
        strbuf_appendf(out, "\n-- \nSent by %s via mailfleet\n", p->original_sender);
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
    const char *run = s;
    for (; s && *s; s++) {
        const char *rep;
        switch (*s) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        default: continue;
        }
        strbuf_append_n(b, run, (size_t)(s - run));
        strbuf_append(b, rep);
        run = s + 1;
    }
    if (s)
        strbuf_append_n(b, run, (size_t)(s - run));
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
    if (p->original_sender) {
        strbuf_append(out, "<p style=\"color:#666\">Sent by ");
        html_escape(out, p->original_sender);
        strbuf_append(out, " via mailfleet</p>\n");
    }
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

/* The body of one alternative, CRLF: 7bit when it is short-lined ASCII
 * that cannot be mistaken for the boundary, else quoted-printable (GMime's
 * encoder, which never emits "=_", so the boundary cannot occur in it). */
static void append_text_part(struct strbuf *out, const char *subtype, const char *text,
                             const char *boundary)
{
    size_t n = strlen(text), line = 0;
    int ascii = 1, long_line = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x80 || (c < 0x20 && c != '\n' && c != '\t'))
            ascii = 0;
        if (c == '\n')
            line = 0;
        else if (++line > 900)
            long_line = 1;
    }
    int qp = !ascii || long_line || strstr(text, boundary) != NULL;
    strbuf_appendf(out, "--%s\r\nContent-Type: text/%s; charset=%s\r\n"
                        "Content-Transfer-Encoding: %s\r\n\r\n",
                   boundary, subtype, ascii ? "us-ascii" : "utf-8", qp ? "quoted-printable" : "7bit");
    const char *src = text;
    size_t sl = n;
    char *enc = NULL;
    if (qp) {
        GMimeEncoding st;
        g_mime_encoding_init_encode(&st, GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);
        enc = xmalloc(g_mime_encoding_outlen(&st, n) + 16);
        sl = g_mime_encoding_flush(&st, text, n, enc);
        src = enc;
    }
    strbuf_reserve(out, sl + sl / 16 + 4);
    const char *p = src, *end = src + sl;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t k = nl ? (size_t)(nl - p) : (size_t)(end - p);
        strbuf_append_n(out, p, k);
        strbuf_append_n(out, "\r\n", 2);
        p += k + (nl ? 1 : 0);
    }
    free(enc);
}

/* "Name: value" folded by GMime and ended with CRLF.  GMime (3.2) folds
 * with a bare LF whatever the format options say: each becomes CRLF, as
 * the whole mail is. */
static void append_header(struct strbuf *out, GMimeFormatOptions *fo, const char *name,
                          const char *value, int structured)
{
    char *raw = g_strdup_printf("%s: %s", name, value);
    char *f = structured ? g_mime_utils_structured_header_fold(NULL, fo, raw)
                         : g_mime_utils_unstructured_header_fold(NULL, fo, raw);
    size_t l = strlen(f);
    while (l > 0 && (f[l - 1] == '\r' || f[l - 1] == '\n'))
        l--;
    for (size_t i = 0; i < l; i++) {
        if (f[i] == '\n' && (i == 0 || f[i - 1] != '\r'))
            strbuf_append_n(out, "\r", 1);
        strbuf_append_n(out, f + i, 1);
    }
    strbuf_append_n(out, "\r\n", 2);
    g_free(f);
    g_free(raw);
}

/* "To: a, b, ..." folded between addresses only (GMime's structured fold
 * may break inside a long list's address).  Recipients are normalized
 * ASCII mailboxes (address_normalize): no quoting, no encoding. */
static void append_to(struct strbuf *out, const char *const *rcpts, size_t n)
{
    size_t col = 3;   /* "To:" */
    strbuf_append(out, "To:");
    for (size_t i = 0; i < n; i++) {
        size_t need = strlen(rcpts[i]) + (i + 1 < n ? 2 : 1);   /* " addr," */
        if (i > 0 && col + need > 78) {
            strbuf_append(out, "\r\n");
            col = 0;
        }
        strbuf_appendf(out, " %s%s", rcpts[i], i + 1 < n ? "," : "");
        col += need;
    }
    strbuf_append(out, "\r\n");
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
    GMimeFormatOptions *fo = g_mime_format_options_new();
    g_mime_format_options_set_newline_format(fo, GMIME_NEWLINE_FORMAT_DOS);
    struct strbuf out;
    strbuf_init(&out);
    char *fs = internet_address_list_to_string(from, fo, TRUE);
    g_object_unref(from);
    append_header(&out, fo, "From", fs, 1);
    g_free(fs);
    append_to(&out, p->recipients, p->n_recipients);
    /* Our From stays (the fleet's domain aligns with SPF, DKIM and DMARC);
     * a reply goes to the device.  A normalized address needs no quoting. */
    if (p->original_sender)
        append_header(&out, fo, "Reply-To", p->original_sender, 1);
    char *subj = one_line(p->subject);
    char *esub = g_mime_utils_header_encode_text(fo, subj, "utf-8");
    append_header(&out, fo, "Subject", esub, 0);
    g_free(esub);
    free(subj);
    char date[64];
    time_t t = (time_t)(p->date_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    strbuf_appendf(&out, "Date: %s\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\n"
                         "Auto-Submitted: auto-generated\r\n", date, p->message_id);
    /* Deterministic per message: redelivery rebuilds the same bytes. */
    char boundary[80];
    unsigned h = 2166136261u;
    for (const char *c = p->message_id; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    snprintf(boundary, sizeof(boundary), "=_mf_%08x_alt", h);
    strbuf_appendf(&out, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n", boundary);

    struct strbuf tb, hb;
    strbuf_init(&tb);
    strbuf_init(&hb);
    outbound_text(p, &tb);
    outbound_html(p, &hb);
    append_text_part(&out, "plain", tb.data ? tb.data : "", boundary);
    append_text_part(&out, "html", hb.data ? hb.data : "", boundary);
    strbuf_appendf(&out, "--%s--\r\n", boundary);
    strbuf_free(&tb);
    strbuf_free(&hb);
    g_mime_format_options_free(fo);
    *mime = strbuf_detach(&out, len);
    return 0;
}
