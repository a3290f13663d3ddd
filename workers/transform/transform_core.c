/* transform_core — one raw mail in, recipients + stored attachments + the
 * outgoing mail out (see transform.h).
 *
 * Memory: the parser persists its stream, so parts are views into the file
 * and content is streamed in 64 KiB steps; only the chosen body text (capped
 * at max_body_bytes) is held.  Hostile structure is bounded before GMime
 * sees it: a pre-scan counts Content-Type lines so neither the part count
 * nor the nesting depth (which GMime's recursive parser would follow) can
 * exceed max_parts; depth and header sizes are checked on the tree. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <gmime/gmime.h>
#include <openssl/evp.h>

#include "address.h"
#include "attachments.h"
#include "ids.h"
#include "log.h"
#include "outbound.h"
#include "recipients.h"
#include "store.h"
#include "strbuf.h"
#include "timeutil.h"
#include "tokens.h"
#include "transform.h"
#include "transform_worker.h"

struct transform {
    struct transform_settings s;
    char *marker, *sender, *link_mode, *links_url, *tmp_dir;
    char **defaults;   size_t n_defaults;
    char **blocked;    size_t n_blocked;
    char sender_domain[256];
    struct store *st;
    struct tokens *tok;
};

const char *transform_reason_name(unsigned bit, size_t n_invalid)
{
    switch (bit) {
    case TR_NO_RECIPIENT: return n_invalid ? "invalid_recipients" : "no_recipients";
    case TR_SOME_INVALID: return "invalid_recipients";
    case TR_TOO_MANY: return "too_many_recipients";
    case TR_BLOCKED: return "blocked_attachment";
    /* Structure past our limits is mail we refuse to read: the schema
     * files it under unparseable, with the limit in details. */
    case TR_UNPARSEABLE: return "unparseable";
    case TR_LIMITS: return "unparseable";
    case TR_NOT_ALLOWED: return "recipient_not_allowed";
    }
    return "unknown";
}

static char **copy_list(const char *const *in, size_t *n)
{
    *n = 0;
    if (!in)
        return NULL;
    while (in[*n])
        (*n)++;
    char **o = xcalloc(*n + 1, sizeof(char *));
    for (size_t i = 0; i < *n; i++)
        o[i] = xstrdup(in[i]);
    return o;
}

struct transform *transform_new(const struct transform_settings *s, struct store *attachments,
                                struct tokens *tok, char *err, size_t errlen)
{
    if (!s->marker || strlen(s->marker) < 3) {
        snprintf(err, errlen, "marker must be at least 3 characters");
        return NULL;
    }
    /* The dedupe set of a coded list is sized from it (recipients.c). */
    if (s->max_recipients < 1 || s->max_recipients > TRANSFORM_MAX_RECIPIENTS) {
        snprintf(err, errlen, "max_recipients must be between 1 and %d", TRANSFORM_MAX_RECIPIENTS);
        return NULL;
    }
    if (s->link_expiry_s < 1 || s->link_expiry_s > 604800) {
        snprintf(err, errlen, "link_expiry must be between 1 s and 7 d");
        return NULL;
    }
    int gateway = strcmp(s->link_mode, "gateway") == 0;
    if (!gateway && strcmp(s->link_mode, "presigned") != 0) {
        snprintf(err, errlen, "link_mode must be gateway or presigned");
        return NULL;
    }
    if (gateway && (!tok || !s->links_url || !*s->links_url)) {
        snprintf(err, errlen, "link_mode = gateway needs link keys and links_url");
        return NULL;
    }
    InternetAddressList *l = internet_address_list_parse(NULL, s->sender);
    InternetAddress *a = l && internet_address_list_length(l) == 1
                             ? internet_address_list_get_address(l, 0) : NULL;
    if (!a || !INTERNET_ADDRESS_IS_MAILBOX(a)) {
        if (l)
            g_object_unref(l);
        snprintf(err, errlen, "sender must be one mailbox, e.g. \"mailfleet <noreply@example.com>\"");
        return NULL;
    }
    struct transform *t = xcalloc(1, sizeof(*t));
    const char *addr = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a));
    const char *at = strrchr(addr, '@');
    snprintf(t->sender_domain, sizeof(t->sender_domain), "%s", at ? at + 1 : "localhost");
    g_object_unref(l);
    t->s = *s;
    t->marker = xstrdup(s->marker);
    t->sender = xstrdup(s->sender);
    t->link_mode = xstrdup(s->link_mode);
    t->links_url = xstrdup(s->links_url ? s->links_url : "");
    t->tmp_dir = xstrdup(s->tmp_dir && *s->tmp_dir ? s->tmp_dir : "/tmp");
    t->defaults = copy_list(s->default_recipients, &t->n_defaults);
    t->blocked = copy_list(s->blocked_extensions, &t->n_blocked);
    t->s.marker = t->marker;
    t->s.sender = t->sender;
    t->s.link_mode = t->link_mode;
    t->s.links_url = t->links_url;
    t->s.tmp_dir = t->tmp_dir;
    t->s.default_recipients = (const char *const *)t->defaults;
    t->s.blocked_extensions = (const char *const *)t->blocked;
    t->st = attachments;
    t->tok = tok;
    return t;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

void transform_free(struct transform *t)
{
    if (!t)
        return;
    free(t->marker);
    free(t->sender);
    free(t->link_mode);
    free(t->links_url);
    free(t->tmp_dir);
    free_list(t->defaults, t->n_defaults);
    free_list(t->blocked, t->n_blocked);
    free(t);
}

void transform_result_free(struct transform_result *r)
{
    if (!r)
        return;
    free(r->detail);
    free_list(r->recipients, r->n_recipients);
    free_list(r->invalid, r->n_invalid);
    free_list(r->found, r->n_found);
    free_list(r->not_allowed, r->n_not_allowed);
    free(r->from);
    free(r->subject);
    free(r->body_text);
    for (size_t i = 0; i < r->n_links; i++) {
        free(r->links[i].name);
        free(r->links[i].key);
        free(r->links[i].content_type);
        free(r->links[i].url);
    }
    free(r->links);
    free(r->mime);
    memset(r, 0, sizeof(*r));
}

static void set_detail(struct transform_result *r, unsigned reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_detail(struct transform_result *r, unsigned reason, const char *fmt, ...)
{
    r->reasons |= reason;
    if (r->detail)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    r->detail = xstrdup(buf);
}

/* Counts header lines that open a MIME entity.  Each part has one; each
 * level of nesting needs one, so this bounds parts and depth before the
 * (recursive) parser runs. */
static long prescan_content_types(const char *path, long stop_after, int *crlf,
                                  const char **map, size_t *map_len)
{
    *crlf = 1;
    *map = NULL;
    *map_len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat sb;
    if (fstat(fd, &sb) < 0 || sb.st_size == 0) {
        close(fd);
        return 0;
    }
    const char *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -EIO;
    long n = 0;
    const char *p = m, *end = m + sb.st_size;
    const char *first_nl = memchr(m, '\n', (size_t)sb.st_size);
    *crlf = !first_nl || (first_nl > m && first_nl[-1] == '\r');
    const char *released = m;
    while (p < end && n <= stop_after) {
        if (p - released >= (1 << 22)) {
            attachment_map_release(m, (size_t)(released - m), (size_t)(p - m));
            released = p;
        }
        if ((*p | 0x20) == 'c' && end - p >= 13 && strncasecmp(p, "content-type", 12) == 0) {
            /* "Content-Type :" too: a lenient parser accepts it. */
            const char *q = p + 12;
            while (q < end && (*q == ' ' || *q == '\t'))
                q++;
            if (q < end && *q == ':')
                n++;
        }
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        p = nl + 1;
    }
    attachment_map_release(m, 0, (size_t)sb.st_size);
    *map = m;
    *map_len = (size_t)sb.st_size;
    return n;
}

struct att_ref {
    GMimeObject *obj;
    int64_t raw_start, raw_end;   /* embedded messages: exact bytes */
};

struct walk {
    const char *map;
    size_t map_len;
    struct transform *t;
    struct transform_result *r;
    int parts;
    GMimeObject *plain, *html;
    GPtrArray *extra;        /* further inline text parts (plain) */
    GArray *atts;                 /* struct att_ref */
    int crlf;
    GMimeStream *fs;              /* the raw mail, for repairs */
    GMimeMessage *top;            /* the mail itself */
};

static void add_att(struct walk *w, GMimeObject *obj, int64_t start, int64_t end)
{
    struct att_ref a = { obj, start, end };
    g_array_append_val(w->atts, a);
}

enum { NOT_BOUNDARY, OPEN_BOUNDARY, CLOSE_BOUNDARY };

/* What the line at q is for a multipart with this boundary: "--b" or
 * "--b--" followed only by blanks, as Python's email package reads them (a
 * longer boundary that merely starts with b is another multipart's).  A
 * closing line with extra dashes ("--b-----") closes too: it is meant as
 * the close, and the text after it is not the last part's content. */
static int boundary_line(const char *q, const char *end, const char *boundary, size_t bl)
{
    if ((size_t)(end - q) < bl + 2 || q[0] != '-' || q[1] != '-' || memcmp(q + 2, boundary, bl) != 0)
        return NOT_BOUNDARY;
    q += bl + 2;
    int kind = OPEN_BOUNDARY;
    if (end - q >= 2 && q[0] == '-' && q[1] == '-') {
        kind = CLOSE_BOUNDARY;
        while (q < end && *q == '-')
            q++;
    }
    while (q < end && (*q == ' ' || *q == '\t'))
        q++;
    if (q < end && *q == '\r')
        q++;
    return q == end || *q == '\n' ? kind : NOT_BOUNDARY;
}

/* Where an embedded message ends: before the line break that precedes the
 * enclosing multipart's next boundary line, or at the end of the file. */
static int64_t raw_end_of(struct walk *w, int64_t start, const char *boundary)
{
    if (!boundary)
        return (int64_t)w->map_len;
    size_t bl = strlen(boundary);
    const char *p = w->map + start, *end = w->map + w->map_len;
    const char *released = p;
    while (p < end) {
        if (p - released >= (1 << 22)) {
            attachment_map_release(w->map, (size_t)(released - w->map), (size_t)(p - w->map));
            released = p;
        }
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        const char *q = nl + 1;
        if (boundary_line(q, end, boundary, bl) != NOT_BOUNDARY) {
            const char *cut = nl;
            if (cut > w->map + start && cut[-1] == '\r')
                cut--;
            return (int64_t)(cut - w->map);
        }
        p = q;
    }
    return (int64_t)w->map_len;
}

static size_t header_bytes(GMimeObject *obj)
{
    GMimeHeaderList *hl = g_mime_object_get_header_list(obj);
    size_t n = 0;
    int c = hl ? g_mime_header_list_get_count(hl) : 0;
    for (int i = 0; i < c; i++) {
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        const char *name = g_mime_header_get_name(h);
        const char *raw = g_mime_header_get_raw_value(h);
        n += (name ? strlen(name) : 0) + (raw ? strlen(raw) : 0) + 2;
    }
    return n;
}

/* Offset just past the header line at off and its folded continuations. */
static int64_t skip_header_line(struct walk *w, int64_t off)
{
    const char *p = w->map + off, *end = w->map + w->map_len;
    for (;;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return (int64_t)w->map_len;
        p = nl + 1;
        if (p >= end || (*p != ' ' && *p != '\t'))
            return (int64_t)(p - w->map);
    }
}

static int64_t last_header_offset(GMimeObject *obj)
{
    GMimeHeaderList *hl = g_mime_object_get_header_list(obj);
    int n = hl ? g_mime_header_list_get_count(hl) : 0;
    int64_t last = -1;
    for (int i = 0; i < n; i++) {
        gint64 off = g_mime_header_get_offset(g_mime_header_list_get_header_at(hl, i));
        if (off > last)
            last = off;
    }
    return last;
}

/* Where obj's content starts in the raw mail: after its header block and
 * the blank line that ends it; -1 when obj has no header to go by.  The
 * mail's own body shares its header block with the mail. */
static int64_t raw_content_start(struct walk *w, GMimeObject *obj)
{
    int64_t last = last_header_offset(obj);
    if (w->top && obj == g_mime_message_get_mime_part(w->top)) {
        int64_t m = last_header_offset(GMIME_OBJECT(w->top));
        if (m > last)
            last = m;
    }
    if (!w->map || last < 0 || (size_t)last >= w->map_len)
        return -1;
    int64_t p = skip_header_line(w, last);
    if ((size_t)p < w->map_len && w->map[p] == '\n')
        p++;
    else if ((size_t)p + 1 < w->map_len && w->map[p] == '\r' && w->map[p + 1] == '\n')
        p += 2;
    return p;
}

/* A part whose header block runs straight into its content (no blank
 * line): GMime drops the lines that are not headers and leaves the part
 * empty; Python's email package keeps them as the body.  Recover them the
 * same way: the content is what follows the last header line up to the
 * next boundary, as a view into the raw mail. */
static void repair_headerless_content(struct walk *w, GMimePart *part, const char *boundary)
{
    GMimeDataWrapper *dw = g_mime_part_get_content(part);
    GMimeStream *cs = dw ? g_mime_data_wrapper_get_stream(dw) : NULL;
    if (!w->map || !w->fs || (cs && g_mime_stream_length(cs) > 0))
        return;
    GMimeHeaderList *hl = g_mime_object_get_header_list(GMIME_OBJECT(part));
    int n = hl ? g_mime_header_list_get_count(hl) : 0;
    if (n == 0)
        return;
    gint64 off = g_mime_header_get_offset(g_mime_header_list_get_header_at(hl, n - 1));
    if (off < 0 || (size_t)off >= w->map_len)
        return;
    int64_t start = skip_header_line(w, off);
    const char *p = w->map + start;
    int64_t stop = raw_end_of(w, start, boundary);
    if (stop <= start)
        return;
    if ((stop - start == 2 && p[0] == '\r' && p[1] == '\n') || (stop - start == 1 && p[0] == '\n'))
        return;   /* just the blank line of an empty part */
    GMimeStream *sub = g_mime_stream_substream(w->fs, start, stop);
    GMimeDataWrapper *nw =
        g_mime_data_wrapper_new_with_stream(sub, g_mime_part_get_content_encoding(part));
    g_mime_part_set_content(part, nw);
    g_object_unref(nw);
    g_object_unref(sub);
}

/* Where GMime ends a part's content too late:
 * - A closing boundary line with extra dashes ("--b-----") is no boundary
 *   to GMime, so the part before it runs on over it and whatever follows
 *   (the epilogue, the rest of the mail).  The content ends before the line
 *   break that precedes such a line, as at a real closing boundary.
 * - When the closing boundary is the mail's last line, without a line
 *   break of its own, GMime leaves the CR of the CRLF before it in the
 *   content; it is the line break's. */
static void repair_content_end(struct walk *w, GMimePart *part, const char *boundary)
{
    GMimeDataWrapper *dw = g_mime_part_get_content(part);
    GMimeStream *cs = dw ? g_mime_data_wrapper_get_stream(dw) : NULL;
    if (!w->map || !w->fs || !boundary || !cs || !GMIME_IS_STREAM_FS(cs))
        return;
    int64_t bs = cs->bound_start, be = cs->bound_end < 0 ? (int64_t)w->map_len : cs->bound_end;
    if (bs < 0 || be < bs || (size_t)be > w->map_len)
        return;
    size_t bl = strlen(boundary);
    const char *p = w->map + bs, *end = w->map + be, *map_end = w->map + w->map_len;
    const char *released = p, *cut = NULL;
    if (p == w->map || p[-1] == '\n')
        cut = boundary_line(p, map_end, boundary, bl) == CLOSE_BOUNDARY ? p : NULL;
    while (!cut && p < end) {
        if (p - released >= (1 << 22)) {
            attachment_map_release(w->map, (size_t)(released - w->map), (size_t)(p - w->map));
            released = p;
        }
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        p = nl + 1;
        if (p < end && boundary_line(p, map_end, boundary, bl) == CLOSE_BOUNDARY) {
            cut = nl > w->map + bs && nl[-1] == '\r' ? nl - 1 : nl;
            break;
        }
    }
    attachment_map_release(w->map, (size_t)(released - w->map), (size_t)(p - w->map));
    if (!cut && end > w->map + bs && end[-1] == '\r' && end < map_end && end[0] == '\n' &&
        boundary_line(end + 1, map_end, boundary, bl) != NOT_BOUNDARY)
        cut = end - 1;
    if (!cut)
        return;
    GMimeStream *sub = g_mime_stream_substream(w->fs, bs, (int64_t)(cut - w->map));
    GMimeDataWrapper *nw =
        g_mime_data_wrapper_new_with_stream(sub, g_mime_part_get_content_encoding(part));
    g_mime_part_set_content(part, nw);
    g_object_unref(nw);
    g_object_unref(sub);
}

/* A Content-Type whose type is not "type/subtype" ("text", with no
 * subtype) is one a reader cannot read, which RFC 2045 makes text/plain (its
 * parameters kept); GMime makes it application/octet-stream, an attachment
 * that took the body with it. */
static void repair_content_type(GMimeObject *obj)
{
    GMimeHeaderList *hl = g_mime_object_get_header_list(obj);
    GMimeHeader *h = hl ? g_mime_header_list_get_header(hl, "Content-Type") : NULL;
    const char *v = h ? g_mime_header_get_raw_value(h) : NULL;
    if (!v)
        return;
    int slashes = 0;
    for (; *v && *v != ';'; v++)
        slashes += *v == '/';
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    if (slashes == 1 || !ct)
        return;
    g_mime_content_type_set_media_type(ct, "text");
    g_mime_content_type_set_media_subtype(ct, "plain");
}

/* Returns 0 to go on, -1 once a limit is hit (recorded in r). */
static int walk_tree(struct walk *w, GMimeObject *obj, int depth, int collect,
                     const char *parent_boundary)
{
    if (++w->parts > w->t->s.max_parts) {
        set_detail(w->r, TR_LIMITS, "more than %d MIME parts", w->t->s.max_parts);
        return -1;
    }
    if (depth > w->t->s.max_depth) {
        set_detail(w->r, TR_LIMITS, "MIME nesting deeper than %d", w->t->s.max_depth);
        return -1;
    }
    size_t hb = header_bytes(obj);
    if (hb > w->t->s.max_header_bytes) {
        set_detail(w->r, TR_LIMITS, "a header block of %zu bytes (limit %zu)", hb,
                   w->t->s.max_header_bytes);
        return -1;
    }
    if (GMIME_IS_MULTIPART(obj)) {
        GMimeMultipart *mp = GMIME_MULTIPART(obj);
        int n = g_mime_multipart_get_count(mp);
        for (int i = 0; i < n; i++)
            if (walk_tree(w, g_mime_multipart_get_part(mp, i), depth + 1, collect,
                          g_mime_multipart_get_boundary(mp)) < 0)
                return -1;
        return 0;
    }
    if (GMIME_IS_MESSAGE_PART(obj)) {
        /* Its inside counts toward the limits but is not our body. */
        GMimeMessage *m = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
        if (collect) {
            /* The bytes after the part's header block, not from the embedded
             * message's first header: GMime files its Content-* headers
             * under its body, and a message may have no header at all. */
            int64_t start = raw_content_start(w, obj);
            add_att(w, obj, start, start >= 0 ? raw_end_of(w, start, parent_boundary) : -1);
        }
        if (m) {
            if (header_bytes(GMIME_OBJECT(m)) > w->t->s.max_header_bytes) {
                set_detail(w->r, TR_LIMITS, "an embedded message header over %zu bytes",
                           w->t->s.max_header_bytes);
                return -1;
            }
            GMimeObject *body = g_mime_message_get_mime_part(m);
            if (body)
                return walk_tree(w, body, depth + 1, 0, NULL);
        }
        return 0;
    }
    if (!collect || !GMIME_IS_PART(obj))
        return 0;
    repair_content_type(obj);
    repair_headerless_content(w, GMIME_PART(obj), parent_boundary);
    repair_content_end(w, GMIME_PART(obj), parent_boundary);
    if (attachment_is_attachment(obj)) {
        add_att(w, obj, -1, -1);
        return 0;
    }
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    if (ct && g_mime_content_type_is_type(ct, "text", "html")) {
        if (!w->html)
            w->html = obj;
    } else if (!w->plain) {
        w->plain = obj;
    } else {
        g_ptr_array_add(w->extra, obj);
    }
    return 0;
}

struct membuf {
    struct strbuf *b;
    size_t max;
};

static int membuf_write(void *opaque, const void *buf, size_t len)
{
    struct membuf *m = opaque;
    if (m->b->len >= m->max)
        return 0;
    if (len > m->max - m->b->len)
        len = m->max - m->b->len;
    strbuf_append_n(m->b, buf, len);
    return 0;
}

/* The part's text, transfer-decoded, converted to UTF-8 from its declared
 * charset (undeclared: UTF-8 when valid, else Latin-1, as mail readers
 * guess), with CRLF made LF.  malloc'd. */
static char *part_text(struct transform *t, GMimeObject *obj, size_t *outlen)
{
    struct strbuf raw;
    strbuf_init(&raw);
    struct membuf mb = { &raw, t->s.max_body_bytes };
    struct attachment_limits lim = { 0, 0, t->tmp_dir, 1, NULL, -1, -1 };
    char err[128];
    (void)attachment_decode(obj, &lim, membuf_write, &mb, NULL, err, sizeof(err));
    const char *cs = g_mime_object_get_content_type_parameter(obj, "charset");
    char *utf8 = NULL;
    const char *data = raw.data ? raw.data : "";
    if (cs && g_ascii_strcasecmp(cs, "utf-8") != 0 && g_ascii_strcasecmp(cs, "us-ascii") != 0) {
        iconv_t cd = g_mime_iconv_open("UTF-8", cs);
        if (cd != (iconv_t)-1) {
            utf8 = g_mime_iconv_strndup(cd, data, raw.len);
            g_mime_iconv_close(cd);
        }
    }
    if (!utf8) {
        if (g_utf8_validate(data, (gssize)raw.len, NULL) || cs) {
            utf8 = g_utf8_make_valid(data, (gssize)raw.len);
        } else {
            utf8 = g_convert(data, (gssize)raw.len, "UTF-8", "ISO-8859-1", NULL, NULL, NULL);
            if (!utf8)
                utf8 = g_utf8_make_valid(data, (gssize)raw.len);
        }
    } else {
        char *v = g_utf8_make_valid(utf8, -1);
        g_free(utf8);
        utf8 = v;
    }
    strbuf_free(&raw);
    /* CRLF and lone CR to LF. */
    size_t n = strlen(utf8), k = 0;
    char *o = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        if (utf8[i] == '\r') {
            o[k++] = '\n';
            if (i + 1 < n && utf8[i + 1] == '\n')
                i++;
        } else if (utf8[i] != '\0') {
            o[k++] = utf8[i];
        }
    }
    o[k] = '\0';
    g_free(utf8);
    *outlen = k;
    return o;
}

static int extension_blocked(struct transform *t, const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return 0;
    for (size_t i = 0; i < t->n_blocked; i++) {
        const char *b = t->blocked[i];
        if (*b == '.')
            b++;
        if (g_ascii_strcasecmp(dot + 1, b) == 0)
            return 1;
    }
    return 0;
}

static int key_segment_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 64 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return 0;
    return 1;
}

static int store_attachments(struct transform *t, struct walk *w, const struct inbound_info *in,
                             char *err, size_t errlen)
{
    struct transform_result *r = w->r;
    char date[16];
    time_t secs = (time_t)(in->received_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(date, sizeof(date), "%Y-%m-%d", &tm);
    int64_t now_s = now_ms() / 1000;
    uint64_t budget = t->s.max_decoded_bytes;
    r->links = xcalloc(w->atts->len ? w->atts->len : 1, sizeof(*r->links));
    for (guint i = 0; i < w->atts->len; i++) {
        struct att_ref *ar = &g_array_index(w->atts, struct att_ref, i);
        GMimeObject *obj = ar->obj;
        struct transform_link *l = &r->links[r->n_links];
        int n = (int)i + 1;
        l->name = attachment_part_name(obj, n);
        l->content_type = attachment_content_type(obj);
        struct attachment_limits lim = { budget, t->s.max_decoded_ratio, t->tmp_dir, w->crlf,
                                         w->map, ar->raw_start, ar->raw_end };
        int rc;
        char aerr[256] = "";
        r->n_links++;
        if (extension_blocked(t, l->name)) {
            l->blocked = 1;
            set_detail(r, TR_BLOCKED, "attachment type not allowed");
            rc = attachment_hash(obj, &lim, l->sha256, &l->size, aerr, sizeof(aerr));
        } else {
            char *safe = attachment_safe_name(l->name);
            char shard[3];
            id_shard(in->id, shard);
            size_t kl = strlen(date) + strlen(in->id) + strlen(safe) + 64;
            l->key = xmalloc(kl);
            snprintf(l->key, kl, "attachments/%s/%s/%s-%d-%s", date, shard, in->id, n, safe);
            free(safe);
            rc = attachment_store(obj, t->st, l->key, l->content_type, &lim, l->sha256, &l->size,
                                  aerr, sizeof(aerr));
        }
        if (rc == -EFBIG) {
            set_detail(r, TR_LIMITS, "%s", aerr);
            return 0;
        }
        if (rc < 0) {
            snprintf(err, errlen, "attachment %d: %s", n, aerr);
            return rc;
        }
        budget = budget > l->size ? budget - l->size : 1;
        if (l->blocked)
            continue;
        l->expires_s = now_s + t->s.link_expiry_s;
        if (strcmp(t->link_mode, "gateway") == 0) {
            struct strbuf p;
            strbuf_init(&p);
            /* key|inbound id|sha256|name: the gateway serves the key, checks
             * revocation by inbound id, and names the download, all from
             * signed data (the store keeps no names). */
            strbuf_appendf(&p, "%s|%s|%s|%s", l->key, in->id, l->sha256, l->name);
            char *tok = tokens_sign(t->tok, p.data, p.len, l->expires_s);
            strbuf_free(&p);
            if (!tok)
                panic("%s: tokens_sign failed", __func__);
            size_t ul = strlen(t->links_url) + strlen(tok) + 1;
            l->url = xmalloc(ul);
            snprintf(l->url, ul, "%s%s", t->links_url, tok);
            free(tok);
        } else {
            char perr[256];
            l->url = store_presign_get(t->st, l->key, (int)t->s.link_expiry_s, now_s, perr,
                                       sizeof(perr));
            if (!l->url) {
                snprintf(err, errlen, "presign: %s", perr);
                return -EIO;
            }
        }
    }
    return 0;
}

static void choose_recipients(struct transform *t, struct transform_result *r,
                              const struct recipients *rc, const char *const *allowed)
{
    r->marker_found = rc->found;
    for (size_t i = 0; i < rc->n_entries; i++) {
        r->found = xrealloc(r->found, (r->n_found + 1) * sizeof(char *));
        r->found[r->n_found++] = xstrdup(rc->entries[i]);
    }
    for (size_t i = 0; i < rc->n_invalid; i++) {
        r->invalid = xrealloc(r->invalid, (r->n_invalid + 1) * sizeof(char *));
        r->invalid[r->n_invalid++] = xstrdup(rc->invalid[i]);
    }
    const char *const *src = (const char *const *)rc->valid;
    size_t n = rc->n_valid;
    if (!rc->found && t->n_defaults) {
        src = (const char *const *)t->defaults;
        n = t->n_defaults;
    } else if (!rc->found) {
        set_detail(r, TR_NO_RECIPIENT, "no recipient list between two %s markers", t->marker);
        return;
    } else if (rc->n_valid_total > t->s.max_recipients) {
        set_detail(r, TR_TOO_MANY, "more than %zu recipients", t->s.max_recipients);
        return;
    } else if (rc->n_valid == 0) {
        set_detail(r, TR_NO_RECIPIENT, "no valid address in the recipient list");
        return;
    }
    if (rc->n_invalid)
        set_detail(r, TR_SOME_INVALID, "%zu invalid address(es) in the recipient list",
                   rc->n_invalid);
    r->recipients = xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        /* The allow-list binds what the mail codes; default_recipients are
         * the operator's own choice. */
        if (rc->found && !recipients_allowed(allowed, src[i])) {
            r->not_allowed = xrealloc(r->not_allowed, (r->n_not_allowed + 1) * sizeof(char *));
            r->not_allowed[r->n_not_allowed++] = xstrdup(src[i]);
            continue;
        }
        r->recipients[r->n_recipients++] = xstrdup(src[i]);
    }
    if (r->n_not_allowed)
        set_detail(r, TR_NOT_ALLOWED, "%zu coded address(es) outside the rule's allowed_recipients",
                   r->n_not_allowed);
}

static char *header_text(const char *s)
{
    char *o = xstrdup(s ? s : "");
    for (char *p = o; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    char *v = g_utf8_make_valid(o, -1);
    free(o);
    o = xstrdup(v);
    g_free(v);
    if (strlen(o) > 998)
        o[998] = '\0';
    return o;
}

/* Where the mail's header block starts.  A first line that begins with a
 * blank (a continuation of no header) stops GMime's parser, which then
 * reads no message at all, where Python's reader drops the line and goes
 * on.  The blanks are skipped when a header field follows them (it is kept),
 * else the line is dropped, as often as it happens. */
static size_t header_block_start(const char *map, size_t len)
{
    size_t p = 0;
    while (p < len && (map[p] == ' ' || map[p] == '\t')) {
        size_t name = p;
        while (name < len && (map[name] == ' ' || map[name] == '\t'))
            name++;
        size_t colon = name;
        while (colon < len && map[colon] > ' ' && map[colon] < 0x7f && map[colon] != ':')
            colon++;
        if (colon > name && colon < len && map[colon] == ':')
            return name;
        const char *nl = memchr(map + p, '\n', len - p);
        p = nl ? (size_t)(nl - map) + 1 : len;
    }
    return p;
}

/* GMime's parser over fd (the file stream into *fs), from where the header
 * block starts; the top-level message, or NULL when no header could be
 * parsed.  Parts keep reading *fs (persist stream): no copy in memory. */
static GMimeMessage *parse_message(int fd, const struct walk *w, GMimeStream **fs_out)
{
    GMimeStream *fs = g_mime_stream_fs_new(fd);
    /* A substream keeps offsets in the file: the map still applies. */
    size_t skip = w->map ? header_block_start(w->map, w->map_len) : 0;
    GMimeStream *ps = skip ? g_mime_stream_substream(fs, (gint64)skip, -1) : fs;
    GMimeParser *parser = g_mime_parser_new_with_stream(ps);
    if (ps != fs)
        g_object_unref(ps);
    g_mime_parser_set_persist_stream(parser, TRUE);
    g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
    GMimeMessage *msg = g_mime_parser_construct_message(parser, NULL);
    g_object_unref(parser);
    *fs_out = fs;
    return msg;
}

/* Subject and From as display text. */
static void message_headers(GMimeMessage *msg, struct transform_result *out)
{
    const char *subj = g_mime_message_get_subject(msg);
    out->subject = header_text(subj);
    InternetAddressList *from = g_mime_message_get_from(msg);
    if (from && internet_address_list_length(from) > 0) {
        char *f = internet_address_list_to_string(from, NULL, FALSE);
        out->from = header_text(f);
        g_free(f);
    }
}

/* The body text (text/plain preferred, else text/html reduced to text, then
 * the other text parts appended up to max_body_bytes) with the recipient
 * list taken out of it, and the recipients chosen. */
static void body_and_recipients(struct transform *t, const struct walk *w, const struct inbound_info *in,
                                struct transform_result *out)
{
    size_t tlen = 0;
    char *text = NULL;
    if (w->plain) {
        text = part_text(t, w->plain, &tlen);
    } else if (w->html) {
        size_t hl;
        char *h = part_text(t, w->html, &hl);
        text = recipients_html_to_text(h, hl);
        tlen = strlen(text);
        free(h);
    } else {
        text = xstrdup("");
    }
    struct recipients rcp;
    recipients_parse(text, tlen, t->marker, t->s.max_recipients, &rcp);
    out->body_text = recipients_strip(text, tlen, &rcp);
    free(text);
    for (guint i = 0; i < w->extra->len; i++) {
        size_t el;
        char *e = part_text(t, g_ptr_array_index(w->extra, i), &el);
        size_t bl = strlen(out->body_text);
        if (bl + el < t->s.max_body_bytes) {
            out->body_text = xrealloc(out->body_text, bl + el + 2);
            out->body_text[bl] = '\n';
            memcpy(out->body_text + bl + 1, e, el + 1);
        }
        free(e);
    }
    choose_recipients(t, out, &rcp, in->allowed_recipients);
    recipients_free(&rcp);
}

/* The address the recipients see as the mail's origin: the envelope
 * sender (ingest held it to the rule's allowed_senders), else the header
 * From's address; 0, or -1 when neither is a valid address. */
static int original_sender(GMimeMessage *msg, const struct inbound_info *in, char *buf, size_t len)
{
    if (in->mail_from && *in->mail_from && address_normalize(in->mail_from, buf, len) == 0)
        return 0;
    InternetAddressList *from = g_mime_message_get_from(msg);
    InternetAddress *a = from && internet_address_list_length(from) > 0
                             ? internet_address_list_get_address(from, 0) : NULL;
    if (a && INTERNET_ADDRESS_IS_MAILBOX(a) &&
        address_normalize(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a)), buf, len) == 0)
        return 0;
    return -1;
}

/* The outbound MIME message into out->mime. */
static int build_outbound(const struct transform *t, struct transform_result *out, const char *shown,
                          char *err, size_t errlen)
{
    struct outbound_params op = {
        .sender = t->sender,
        .recipients = (const char *const *)out->recipients,
        .n_recipients = out->n_recipients,
        .subject = out->subject,
        .message_id = out->message_id,
        .date_ms = now_ms(),
        .body_text = out->body_text,
        .links = out->links,
        .n_links = out->n_links,
        .original_sender = shown,
    };
    return outbound_build(&op, &out->mime, &out->mime_len, err, errlen);
}

int transform_message(struct transform *t, const char *eml_path, const struct inbound_info *in,
                      struct transform_result *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!key_segment_ok(in->id)) {
        snprintf(err, errlen, "inbound id is not a safe key segment");
        return -EINVAL;
    }
    snprintf(out->message_id, sizeof(out->message_id), "%s@%s", in->id, t->sender_domain);
    struct walk w = { NULL, 0, t, out, 0, NULL, NULL, NULL, NULL, 1 };
    long cts = prescan_content_types(eml_path, t->s.max_parts, &w.crlf, &w.map, &w.map_len);
    if (cts < 0) {
        snprintf(err, errlen, "cannot read %s: %s", eml_path, strerror((int)-cts));
        return (int)cts;
    }
    if (cts > t->s.max_parts) {
        set_detail(out, TR_LIMITS, "more than %d MIME parts", t->s.max_parts);
        if (w.map)
            munmap((void *)w.map, w.map_len);
        return 0;
    }
    int fd = open(eml_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open %s: %s", eml_path, strerror(e));
        if (w.map)
            munmap((void *)w.map, w.map_len);
        return -e;
    }
    GMimeStream *fs;
    GMimeMessage *msg = parse_message(fd, &w, &fs);
    w.fs = fs;
    w.top = msg;
    w.extra = g_ptr_array_new();
    w.atts = g_array_new(FALSE, FALSE, sizeof(struct att_ref));
    if (!msg) {
        g_ptr_array_free(w.extra, TRUE);
        g_array_free(w.atts, TRUE);
        if (w.map)
            munmap((void *)w.map, w.map_len);
        g_object_unref(fs);
        set_detail(out, TR_UNPARSEABLE, "no message header could be parsed");
        return 0;
    }
    message_headers(msg, out);

    int rc = 0;
    if (header_bytes(GMIME_OBJECT(msg)) > t->s.max_header_bytes) {
        set_detail(out, TR_LIMITS, "the message header is over %zu bytes", t->s.max_header_bytes);
        goto done;
    }
    GMimeObject *body = g_mime_message_get_mime_part(msg);
    if (body && walk_tree(&w, body, 1, 1, NULL) < 0)
        goto done;

    body_and_recipients(t, &w, in, out);

    rc = store_attachments(t, &w, in, err, errlen);
    if (rc < 0 || (out->reasons & (TR_LIMITS | TR_TOO_MANY)) || out->n_recipients == 0)
        goto done;

    char shown[ADDRESS_BUFSZ];
    int show = in->show_sender && original_sender(msg, in, shown, sizeof(shown)) == 0;
    rc = build_outbound(t, out, show ? shown : NULL, err, errlen);

done:
    g_ptr_array_free(w.extra, TRUE);
    g_array_free(w.atts, TRUE);
    if (w.map)
        munmap((void *)w.map, w.map_len);
    g_object_unref(msg);
    g_object_unref(fs);
    return rc;
}

static void json_list(struct strbuf *b, char **l, size_t n)
{
    strbuf_append(b, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            strbuf_append(b, ",");
        strbuf_append_json_string(b, l[i]);
    }
    strbuf_append(b, "]");
}

void transform_result_json(const struct transform_result *r, struct strbuf *b)
{
    strbuf_append(b, "{\"reasons\":[");
    const char *seen[8];
    size_t ns = 0;
    for (unsigned bit = 1; bit <= TR_LAST; bit <<= 1) {
        if (!(r->reasons & bit))
            continue;
        const char *name = transform_reason_name(bit, r->n_invalid);
        int dup = 0;
        for (size_t i = 0; i < ns; i++)
            // cppcheck-suppress uninitvar ; seen[i] is read only for i < ns, all set below
            dup |= strcmp(seen[i], name) == 0;
        if (dup)
            continue;
        strbuf_appendf(b, "%s\"%s\"", ns ? "," : "", name);
        seen[ns++] = name;
    }
    strbuf_append(b, "],\"detail\":");
    if (r->detail)
        strbuf_append_json_string(b, r->detail);
    else
        strbuf_append(b, "null");
    strbuf_appendf(b, ",\"marker_found\":%s,\"recipients\":", r->marker_found ? "true" : "false");
    json_list(b, r->recipients, r->n_recipients);
    strbuf_append(b, ",\"invalid\":");
    json_list(b, r->invalid, r->n_invalid);
    strbuf_append(b, ",\"found\":");
    json_list(b, r->found, r->n_found);
    strbuf_append(b, ",\"subject\":");
    strbuf_append_json_string(b, r->subject ? r->subject : "");
    strbuf_append(b, ",\"from\":");
    strbuf_append_json_string(b, r->from ? r->from : "");
    strbuf_append(b, ",\"body_text\":");
    strbuf_append_json_string(b, r->body_text ? r->body_text : "");
    strbuf_append(b, ",\"attachments\":[");
    for (size_t i = 0; i < r->n_links; i++) {
        const struct transform_link *l = &r->links[i];
        strbuf_append(b, i ? ",{\"name\":" : "{\"name\":");
        strbuf_append_json_string(b, l->name);
        strbuf_append(b, ",\"key\":");
        if (l->key)
            strbuf_append_json_string(b, l->key);
        else
            strbuf_append(b, "null");
        strbuf_append(b, ",\"content_type\":");
        strbuf_append_json_string(b, l->content_type);
        strbuf_appendf(b, ",\"size\":%llu,\"sha256\":\"%s\",\"blocked\":%s,\"expires\":%lld,\"url\":",
                       (unsigned long long)l->size, l->sha256, l->blocked ? "true" : "false",
                       (long long)l->expires_s);
        if (l->url)
            strbuf_append_json_string(b, l->url);
        else
            strbuf_append(b, "null");
        strbuf_append(b, "}");
    }
    strbuf_append(b, "],\"message_id\":");
    strbuf_append_json_string(b, r->message_id);
    strbuf_appendf(b, ",\"mime_len\":%zu}", r->mime_len);
}

void transform_derive_id(const char *inbound_id, const char *salt, char out[ID_LEN + 1])
{
    unsigned char d[32];
    unsigned int dl = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        panic("%s: out of memory", __func__);
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, salt, strlen(salt));
    EVP_DigestUpdate(md, "|", 1);
    EVP_DigestUpdate(md, inbound_id, strlen(inbound_id));
    EVP_DigestFinal_ex(md, d, &dl);
    EVP_MD_CTX_free(md);
    int64_t ms = id_time_ms(inbound_id);
    if (ms < 0)
        ms = 0;
    unsigned char b[16];
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (8 * (5 - i)));
    memcpy(b + 6, d, 10);
    b[6] = (unsigned char)(0x70 | (b[6] & 0x0f));
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));
    char hex[33];
    hex_encode(b, 16, hex);
    snprintf(out, ID_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}
