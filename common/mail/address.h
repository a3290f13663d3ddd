/* address — strict RFC 5321 mailbox parsing and matching, shared by ingest
 * (RCPT / MAIL FROM rules), transform (coded recipients), send (suppression
 * keys) and feedback (reported recipients).  One definition of "a valid
 * address" means one normalized form, so a suppression written by feedback is
 * found by send.
 *
 * Accepted: local@domain with a dot-atom local part (RFC 5321 atext, no quoted
 * local parts) of <= 64 chars and a domain of >= 2 LDH labels (1..63 chars, no
 * leading/trailing '-', TLD not all digits, no trailing dot, no [address
 * literals]); <= 254 chars in all.  ASCII only: SMTPUTF8 is out of scope, so
 * international domains must be given as A-labels ("xn--...").  No angle
 * brackets, comments, display names or whitespace: callers strip <> first. */
#ifndef MF_ADDRESS_H
#define MF_ADDRESS_H
#include <stddef.h>

#define ADDRESS_MAX 254                 /* RFC 5321 path limit minus <> */
#define ADDRESS_BUFSZ (ADDRESS_MAX + 1)

/* Writes the normalized address (local part as given, domain lower-cased) into
 * out.  Returns 0, -EINVAL for an address that is not acceptable, -ENOSPC when
 * outlen is too small (ADDRESS_BUFSZ always suffices).  in and out may alias. */
int address_normalize(const char *in, char *out, size_t outlen);

/* 1 if addr matches pattern, else 0.  Patterns:
 *   "alerts@iot.localhost"        one address
 *   "bounce+*@iot.localhost"      '*' matches any run of chars (never '@')
 *   "@example.com", "example.com" any address at that domain (no subdomains;
 *                                 write "*.example.com" for those)
 * Comparison is ASCII case-insensitive in both parts, as receipt rules and
 * sender allow-lists are in practice.  addr should be normalized first. */
int address_match(const char *pattern, const char *addr);

/* 1 if p can be a pattern for address_match: at most one '@', no blanks,
 * control characters or list punctuation ('<', '>', ',', ':'). */
int address_pattern_ok(const char *p);

/* Pointer to the domain of a normalized address (after the last '@'). */
const char *address_domain(const char *addr);

#endif
