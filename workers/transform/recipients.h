/* recipients — the coded recipient list in a mail's body text.
 *
 *   ... :Email_Rxers_Code:[a@x.com, b@y.org]:Email_Rxers_Code: ...
 *
 * The list is what lies between the first two markers.  Brackets, angle
 * brackets, quotes, whitespace, newlines, commas and semicolons separate or
 * wrap entries; each entry is parsed strictly (address_normalize), domains
 * lower-cased, duplicates (compared case-insensitively, as suppression keys
 * are) dropped in first-seen order.  Strict lists: a quoted entry that spans
 * a line break, and an entry using RFC 5322 group syntax ("Bcc: a@x.com",
 * running to the next comma, semicolon or unfolded line break) are invalid
 * entries, never addresses.  Parsing stops at the first distinct address
 * past max: the list is then too long whatever follows. */
#ifndef MF_RECIPIENTS_H
#define MF_RECIPIENTS_H
#include <stddef.h>

struct recipients {
    int found;                /* both markers present */
    char **valid;   size_t n_valid;     /* normalized, unique, at most max kept */
    size_t n_valid_total;     /* unique valid seen; max + 1 means "more than max" */
    char **invalid; size_t n_invalid;   /* sanitized as written, at most 1000 kept */
    char **entries; size_t n_entries;     /* every entry read, as written (sanitized), at most 1000 */
    size_t cut_start, cut_end;          /* byte range removed from the text */
};

/* text: UTF-8 (NUL not required).  Never fails: a missing marker leaves
 * found = 0.  Free with recipients_free(). */
void recipients_parse(const char *text, size_t len, const char *marker, size_t max,
                      struct recipients *out);
void recipients_free(struct recipients *r);

/* The text with [cut_start, cut_end) removed; malloc'd, NUL-terminated. */
char *recipients_strip(const char *text, size_t len, const struct recipients *r);

/* HTML to plain text for marker search: tags dropped (block tags become
 * newlines), the common entities and numeric references decoded.  malloc'd. */
char *recipients_html_to_text(const char *html, size_t len);

/* 1 if addr (normalized) may be sent to under a rule's allow-list:
 * allowed is a NULL-terminated list of address.h patterns (a domain, an
 * address, '*' globs), NULL for a rule with no list (anything goes). */
int recipients_allowed(const char *const *allowed, const char *addr);

#endif
