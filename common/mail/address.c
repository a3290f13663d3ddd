/* address — the one parser of mailboxes.
 *
 * Deliberately narrower than RFC 5322: no quoted strings, comments, address
 * literals or non-ASCII.  Everything accepted here can be written into an SMTP
 * command, a header or a file name fragment without further quoting, which is
 * what protects the pipeline from CR/LF and quote injection through coded
 * recipients.  The price is refusing a few legal but exotic addresses. */
#include "address.h"

#include <errno.h>
#include <string.h>

#define ADDRESS_LOCAL_MAX 64
#define ADDRESS_LABEL_MAX 63

/* RFC 5321 atext: ALPHA / DIGIT / "!#$%&'*+-/=?^_`{|}~" */
static int is_atext(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static int is_ldh(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int local_valid(const char *s, size_t n)
{
    if (n == 0 || n > ADDRESS_LOCAL_MAX || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.')
                return 0;
        } else if (!is_atext((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

static int domain_valid(const char *s, size_t n)
{
    size_t labels = 0, i = 0, start;
    int all_digits = 0;

    if (n == 0)
        return 0;
    while (i <= n) {
        start = i;
        all_digits = 1;
        while (i < n && s[i] != '.') {
            if (!is_ldh((unsigned char)s[i]))
                return 0;
            if (s[i] < '0' || s[i] > '9')
                all_digits = 0;
            i++;
        }
        size_t len = i - start;
        if (len == 0 || len > ADDRESS_LABEL_MAX || s[start] == '-' || s[i - 1] == '-')
            return 0;   /* also catches "a..b", a leading and a trailing dot */
        labels++;
        i++;            /* past the dot (or past the end) */
    }
    /* One label ("localhost") is almost always a typo in a coded recipient, and
     * an all-numeric TLD would be an IP address without brackets. */
    return labels >= 2 && !all_digits;
}

int address_normalize(const char *in, char *out, size_t outlen)
{
    char buf[ADDRESS_BUFSZ];
    size_t n = strnlen(in, ADDRESS_BUFSZ);

    if (n == 0 || n > ADDRESS_MAX)
        return -EINVAL;
    const char *at = memchr(in, '@', n);
    if (!at || memchr(at + 1, '@', n - (size_t)(at - in) - 1))
        return -EINVAL;
    size_t ll = (size_t)(at - in), dl = n - ll - 1;
    if (!local_valid(in, ll) || !domain_valid(at + 1, dl))
        return -EINVAL;
    if (outlen < n + 1)
        return -ENOSPC;
    memcpy(buf, in, ll + 1);
    for (size_t i = 0; i < dl; i++)
        buf[ll + 1 + i] = lower(at[1 + i]);
    buf[n] = '\0';
    memcpy(out, buf, n + 1);
    return 0;
}

const char *address_domain(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : addr + strlen(addr);
}

/* Glob with '*' only, ASCII case-insensitive, over [s, s+sn).  The classic
 * single-backtrack walk: after a '*' only the latest star is retried, which
 * is enough for '*' (any run) and keeps it O(len(p) * len(s)) worst case. */
static int glob(const char *p, size_t pn, const char *s, size_t sn)
{
    size_t pi = 0, si = 0, star = (size_t)-1, mark = 0;

    while (si < sn) {
        if (pi < pn && p[pi] == '*') {
            star = pi++;
            mark = si;
        } else if (pi < pn && lower(p[pi]) == lower(s[si])) {
            pi++;
            si++;
        } else if (star != (size_t)-1) {
            pi = star + 1;
            si = ++mark;
        } else {
            return 0;
        }
    }
    while (pi < pn && p[pi] == '*')
        pi++;
    return pi == pn;
}

int address_pattern_ok(const char *p)
{
    const char *at = strchr(p, '@');
    if (at && strchr(at + 1, '@'))
        return 0;
    for (; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>' || *p == ',' || *p == ':')
            return 0;
    return 1;
}

int address_match(const char *pattern, const char *addr)
{
    const char *aat = strchr(addr, '@');
    if (!aat || strchr(aat + 1, '@') || !*pattern)
        return 0;   /* not one mailbox: never let a '*' span two of them */
    const char *dom = aat + 1;
    const char *pat = strrchr(pattern, '@');

    if (!pat)   /* "example.com": a domain pattern */
        return glob(pattern, strlen(pattern), dom, strlen(dom));
    if (pat == pattern)   /* "@example.com" */
        return glob(pat + 1, strlen(pat + 1), dom, strlen(dom));
    return glob(pattern, (size_t)(pat - pattern), addr, (size_t)(aat - addr))
        && glob(pat + 1, strlen(pat + 1), dom, strlen(dom));
}
