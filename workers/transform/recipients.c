/* recipients — find and parse the coded recipient list (see recipients.h).
 *
 * The text comes from a device, so every entry is untrusted: an entry that
 * does not normalize is kept only as a sanitized note for the fallback
 * record; nothing from it reaches a header or an SMTP command.  The cost is
 * linear in the list and stops at the limit: a 1 MiB list costs no more than
 * its first max + 1 distinct addresses and the entries between them. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "recipients.h"
#include "strbuf.h"

#define RECIPIENTS_MAX_INVALID 1000
#define RECIPIENTS_MAX_ENTRY 320     /* longer entries are invalid outright */

static const char *find_bytes(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
    if (nlen == 0 || hlen < nlen)
        return NULL;
    return memmem(hay, hlen, needle, nlen);
}

static int is_separator(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',' || c == ';' || c == '\f' ||
           c == '\v';
}

static int is_wrapper(unsigned char c)
{
    return c == '[' || c == ']' || c == '<' || c == '>' || c == '"' || c == '\'' || c == '(' ||
           c == ')' || c == '{' || c == '}';
}

/* An invalid entry as shown to an operator: printable ASCII kept, others
 * replaced by '?', bounded. */
static char *sanitize_entry(const char *s, size_t n)
{
    if (n > 200)
        n = 200;
    char *o = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        o[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    o[n] = '\0';
    return o;
}

/* The distinct valid addresses kept so far, as an open-addressing set of
 * indexes into r->valid: dedupe costs O(1) per entry however long the list.
 * Addresses compare ASCII case-insensitively in both parts, the way
 * suppression keys and receipt rules compare them (address.h), so User@ and
 * user@ are one recipient; the first spelling seen is the one kept. */
struct seen {
    size_t *slot;   /* index + 1; 0 = empty */
    size_t mask;
};

static uint64_t addr_hash(const char *a)
{
    uint64_t h = 1469598103934665603ULL;   /* FNV-1a */
    for (; *a; a++) {
        h ^= (unsigned char)tolower((unsigned char)*a);
        h *= 1099511628211ULL;
    }
    return h;
}

/* The slot holding norm, or the empty slot where it belongs.  The set never
 * fills: it has at least twice as many slots as addresses kept. */
static size_t *seen_find(struct seen *set, char *const *valid, const char *norm)
{
    size_t k = (size_t)addr_hash(norm) & set->mask;
    while (set->slot[k] && strcasecmp(valid[set->slot[k] - 1], norm) != 0)
        k = (k + 1) & set->mask;
    return &set->slot[k];
}

struct parse {
    struct recipients *r;
    size_t max;
    size_t cap_v, cap_i;
    struct seen seen;
};

static void add_invalid(struct parse *ps, const char *s, size_t n)
{
    struct recipients *r = ps->r;
    if (r->n_invalid >= RECIPIENTS_MAX_INVALID)
        return;
    if (r->n_invalid == ps->cap_i) {
        ps->cap_i = ps->cap_i ? ps->cap_i * 2 : 8;
        r->invalid = xrealloc(r->invalid, ps->cap_i * sizeof(char *));
    }
    r->invalid[r->n_invalid++] = sanitize_entry(s, n);
}

/* Returns 1 once the list holds more distinct addresses than max: the list
 * is refused as a whole then, so the rest is not even read. */
static int add_entry(struct parse *ps, const char *s, size_t n, int force_invalid)
{
    struct recipients *r = ps->r;
    if (r->n_entries < RECIPIENTS_MAX_INVALID) {
        r->entries = xrealloc(r->entries, (r->n_entries + 1) * sizeof(char *));
        r->entries[r->n_entries++] = sanitize_entry(s, n);
    }
    char norm[RECIPIENTS_MAX_ENTRY + 1];
    char buf[RECIPIENTS_MAX_ENTRY + 1];
    if (force_invalid || n > RECIPIENTS_MAX_ENTRY) {
        add_invalid(ps, s, n);
        return 0;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (address_normalize(buf, norm, sizeof(norm)) != 0) {
        add_invalid(ps, s, n);
        return 0;
    }
    size_t *slot = seen_find(&ps->seen, r->valid, norm);
    if (*slot)
        return 0;   /* a duplicate */
    if (r->n_valid >= ps->max) {
        r->n_valid_total++;
        return 1;
    }
    *slot = r->n_valid + 1;
    r->n_valid_total++;
    if (r->n_valid == ps->cap_v) {
        ps->cap_v = ps->cap_v ? ps->cap_v * 2 : 8;
        r->valid = xrealloc(r->valid, ps->cap_v * sizeof(char *));
    }
    r->valid[r->n_valid++] = xstrdup(norm);
    return 0;
}

static int is_line_break(unsigned char c)
{
    return c == '\r' || c == '\n';
}

/* A word using RFC 5322 group syntax ("Bcc:", "team: a@x"): any ':' that is
 * not the "mailto:" of an HTML link's text. */
static int is_group_word(const char *s, const char *e)
{
    while (s < e && is_wrapper((unsigned char)*s))
        s++;
    // cppcheck-suppress knownConditionTrueFalse ; false positive: the loop above leaves s <= e, not s == e
    if (e - s > 7 && strncasecmp(s, "mailto:", 7) == 0)
        s += 7;
    return memchr(s, ':', (size_t)(e - s)) != NULL;
}

/* End of a group entry: the next comma or semicolon, or a line break not
 * followed by a blank (a folded line continues the entry, as in a header). */
static const char *group_end(const char *q, const char *b)
{
    while (q < b && *q != ',' && *q != ';') {
        if (is_line_break((unsigned char)*q)) {
            const char *n = q;
            while (n < b && is_line_break((unsigned char)*n))
                n++;
            if (n >= b || (*n != ' ' && *n != '\t'))
                break;
            q = n;
            continue;
        }
        q++;
    }
    return q;
}

/* Entries are split at blanks, line breaks, commas and semicolons, with two
 * exceptions so that a crafted list cannot turn into something a mail
 * client would read as more (or other) recipients:
 *  - a quoted entry ("..." or '...') runs to its closing quote; one that holds a line break
 *    is invalid (it spans a line break: "a@x.com\r\nBcc: evil@y.org");
 *  - a word with ':' starts an RFC 5322 group ("Bcc: evil@y.org"); the
 *    group runs to the next comma, semicolon or unfolded line break and is
 *    one invalid entry, never a list of addresses. */
void recipients_parse(const char *text, size_t len, const char *marker, size_t max,
                      struct recipients *out)
{
    memset(out, 0, sizeof(*out));
    size_t mlen = strlen(marker);
    const char *a = find_bytes(text, len, marker, mlen);
    if (!a)
        return;
    const char *list = a + mlen;
    const char *b = find_bytes(list, len - (size_t)(list - text), marker, mlen);
    if (!b)
        return;
    out->found = 1;
    out->cut_start = (size_t)(a - text);
    out->cut_end = (size_t)(b - text) + mlen;

    struct parse ps = { out, max, 0, 0, { NULL, 0 } };
    size_t slots = 16;
    while (slots < 2 * max + 2)
        slots *= 2;
    ps.seen.slot = xcalloc(slots, sizeof(size_t));
    ps.seen.mask = slots - 1;

    const char *p = list;
    while (p < b) {
        while (p < b && is_separator((unsigned char)*p))
            p++;
        if (p >= b)
            break;
        const char *q = p;
        int bad = 0;
        const char *w = p;   /* a quote may follow other wrappers: ["a@x.com", ...] */
        while (w < b && is_wrapper((unsigned char)*w) && *w != '"' && *w != '\'')
            w++;
        const char *close = NULL;
        if (w < b && (*w == '"' || *w == '\''))
            close = memchr(w + 1, *w, (size_t)(b - w - 1));
        if (close) {
            q = close + 1;
            for (const char *c = p; c < q; c++)
                bad |= is_line_break((unsigned char)*c);
        }
        while (q < b && !is_separator((unsigned char)*q))
            q++;
        if (!close && is_group_word(p, q)) {
            q = group_end(q, b);
            bad = 1;
        }
        const char *s = p, *e = q;
        while (s < e && (is_wrapper((unsigned char)*s) || is_separator((unsigned char)*s)))
            s++;
        while (e > s && (is_wrapper((unsigned char)e[-1]) || is_separator((unsigned char)e[-1])))
            e--;
        /* "mailto:" from an HTML link's text is not part of the address. */
        if (!bad && e - s > 7 && strncasecmp(s, "mailto:", 7) == 0)
            s += 7;
        if (e > s && add_entry(&ps, s, (size_t)(e - s), bad))
            break;
        p = q;
    }
    free(ps.seen.slot);
}

void recipients_free(struct recipients *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_valid; i++)
        free(r->valid[i]);
    for (size_t i = 0; i < r->n_invalid; i++)
        free(r->invalid[i]);
    for (size_t i = 0; i < r->n_entries; i++)
        free(r->entries[i]);
    free(r->entries);
    free(r->valid);
    free(r->invalid);
    memset(r, 0, sizeof(*r));
}

char *recipients_strip(const char *text, size_t len, const struct recipients *r)
{
    struct strbuf b;
    strbuf_init(&b);
    if (!r->found) {
        strbuf_append_n(&b, text, len);
    } else {
        strbuf_append_n(&b, text, r->cut_start);
        strbuf_append_n(&b, text + r->cut_end, len - r->cut_end);
    }
    return strbuf_detach(&b, NULL);
}

static void append_utf8(struct strbuf *b, uint32_t cp)
{
    char u[4];
    if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        cp = 0xfffd;
    if (cp < 0x80) {
        u[0] = (char)cp;
        strbuf_append_n(b, u, 1);
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        strbuf_append_n(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        strbuf_append_n(b, u, 3);
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        strbuf_append_n(b, u, 4);
    }
}

static const struct {
    const char *name;
    uint32_t cp;
} html_entities[] = {
    { "amp", '&' }, { "lt", '<' }, { "gt", '>' }, { "quot", '"' }, { "apos", '\'' },
    { "nbsp", ' ' }, { "commat", '@' }, { "lsqb", '[' }, { "rsqb", ']' }, { "colon", ':' },
    { "comma", ',' }, { "semi", ';' },
};

/* Decodes one entity starting after '&'; returns bytes consumed or 0. */
static size_t html_entity(const char *p, const char *end, struct strbuf *b)
{
    const char *semi = memchr(p, ';', (size_t)(end - p) < 12 ? (size_t)(end - p) : 12);
    if (!semi)
        return 0;
    size_t n = (size_t)(semi - p);
    if (n >= 2 && p[0] == '#') {
        uint32_t cp = 0;
        int hex = p[1] == 'x' || p[1] == 'X';
        const char *d = p + 1 + hex;
        if (d == semi)
            return 0;
        for (; d < semi; d++) {
            int v;
            if (isdigit((unsigned char)*d))
                v = *d - '0';
            else if (hex && isxdigit((unsigned char)*d))
                v = (tolower((unsigned char)*d) - 'a') + 10;
            else
                return 0;
            cp = cp * (hex ? 16 : 10) + (uint32_t)v;
            if (cp > 0x10ffff)
                cp = 0x110000;
        }
        append_utf8(b, cp);
        return n + 1;
    }
    for (size_t i = 0; i < sizeof(html_entities) / sizeof(html_entities[0]); i++)
        if (strlen(html_entities[i].name) == n && strncasecmp(p, html_entities[i].name, n) == 0) {
            append_utf8(b, html_entities[i].cp);
            return n + 1;
        }
    return 0;
}

static int tag_is_block(const char *t, size_t n)
{
    static const char *const blocks[] = { "br", "p", "div", "tr", "li", "table", "h1", "h2",
                                          "h3", "h4", "h5", "h6", "pre", "blockquote", "hr" };
    if (n && t[0] == '/') {
        t++;
        n--;
    }
    size_t w = 0;
    while (w < n && isalnum((unsigned char)t[w]))
        w++;
    for (size_t i = 0; i < sizeof(blocks) / sizeof(blocks[0]); i++)
        if (strlen(blocks[i]) == w && strncasecmp(t, blocks[i], w) == 0)
            return 1;
    return 0;
}

char *recipients_html_to_text(const char *html, size_t len)
{
    struct strbuf b;
    strbuf_init(&b);
    const char *p = html, *end = html + len;
    while (p < end) {
        if (*p == '<') {
            /* Comments, script and style carry no visible text. */
            if (end - p >= 4 && memcmp(p, "<!--", 4) == 0) {
                const char *c = find_bytes(p + 4, (size_t)(end - p - 4), "-->", 3);
                p = c ? c + 3 : end;
                continue;
            }
            const char *gt = memchr(p, '>', (size_t)(end - p));
            if (!gt)
                break;
            const char *t = p + 1;
            size_t tn = (size_t)(gt - t);
            int skip = 0;
            if (tn >= 6 && strncasecmp(t, "script", 6) == 0)
                skip = 1;
            else if (tn >= 5 && strncasecmp(t, "style", 5) == 0)
                skip = 2;
            if (skip) {
                const char *close = skip == 1 ? "</script" : "</style";
                const char *q = gt + 1;
                const char *c = NULL;
                for (; q + strlen(close) <= end; q++)
                    if (strncasecmp(q, close, strlen(close)) == 0) {
                        c = q;
                        break;
                    }
                if (!c)
                    break;
                const char *g2 = memchr(c, '>', (size_t)(end - c));
                p = g2 ? g2 + 1 : end;
                continue;
            }
            if (tag_is_block(t, tn))
                strbuf_append(&b, "\n");
            p = gt + 1;
        } else if (*p == '&') {
            size_t n = html_entity(p + 1, end, &b);
            if (n) {
                p += 1 + n;
            } else {
                strbuf_append_n(&b, p, 1);
                p++;
            }
        } else {
            const char *q = p;
            while (q < end && *q != '<' && *q != '&')
                q++;
            strbuf_append_n(&b, p, (size_t)(q - p));
            p = q;
        }
    }
    strbuf_append_n(&b, "", 0);
    if (!b.data)
        return xstrdup("");
    return strbuf_detach(&b, NULL);
}

int recipients_allowed(const char *const *allowed, const char *addr)
{
    if (!allowed)
        return 1;
    for (; *allowed; allowed++)
        if (address_match(*allowed, addr))
            return 1;
    return 0;
}
