/* ses_errors — see ses_errors.h for the table.
 *
 * Exception names decide where they can; the message is read only where
 * one name covers causes of several kinds: MessageRejected (an unverified
 * sender or sandbox recipient, SES names the identities that failed), the
 * rate limits (a per-second rate or the daily quota) and a rejection that
 * calls an address malformed (the only one that may blame the recipient). */
#include "ses_errors.h"
#include "address.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Names that decide on their own; the reason is a transport_hold_reasons entry. */
static const struct {
    const char *name;
    const char *reason;
} hold_names[] = {
    { "SendingPausedException", "sending_paused" },
    { "AccountSendingPausedException", "sending_paused" },
    { "ConfigurationSetSendingPausedException", "sending_paused" },
    { "AccountSuspendedException", "account_suspended" },
    { "MailFromDomainNotVerifiedException", "mail_from_not_verified" },
    { "NotFoundException", "configuration" },
    { "ConfigurationSetDoesNotExistException", "configuration" },
    { "ConfigurationSetDoesNotExist", "configuration" },
    { "AccessDeniedException", "access_denied" },
    { "AccessDenied", "access_denied" },
    { "UnrecognizedClientException", "credentials" },
    { "InvalidClientTokenId", "credentials" },
    { "SignatureDoesNotMatch", "credentials" },
    { "IncompleteSignature", "credentials" },
    { "InvalidSignatureException", "credentials" },
    { "MissingAuthenticationToken", "credentials" },
    { "MissingAuthenticationTokenException", "credentials" },
    { "ExpiredToken", "credentials" },
    { "ExpiredTokenException", "credentials" },
};

/* Names of a rate or quota limit: the message says which. */
static const char *const limit_names[] = {
    "LimitExceededException", "Throttling", "ThrottlingException", "TooManyRequestsException",
};

void ses_errors_name(const char *raw, char *out, size_t outlen)
{
    if (outlen == 0)
        return;
    out[0] = '\0';
    if (!raw)
        return;
    /* "ns#Name:uri": the name follows the last '#' before any ':'. */
    size_t end = strcspn(raw, ":");
    size_t start = end;
    while (start > 0 && raw[start - 1] != '#')
        start--;
    while (start < end && (raw[start] == ' ' || raw[start] == '\t'))
        start++;
    while (end > start && (raw[end - 1] == ' ' || raw[end - 1] == '\t' || raw[end - 1] == '\r' ||
                           raw[end - 1] == '\n'))
        end--;
    snprintf(out, outlen, "%.*s", (int)(end - start), raw + start);
}

static int contains(const char *s, const char *needle)
{
    return s && needle && *needle && strcasestr(s, needle) != NULL;
}

/* 1 if identity is addr or addr's domain. */
static int is_identity_of(const char *identity, size_t len, const char *addr)
{
    if (!addr || !*addr)
        return 0;
    if (strlen(addr) == len && strncasecmp(identity, addr, len) == 0)
        return 1;
    if (!strchr(addr, '@'))
        return 0;
    const char *d = address_domain(addr);
    return strlen(d) == len && strncasecmp(identity, d, len) == 0;
}

/* SES shortens a long identity list: "a@x, b@y, ..." or "a@x, b@y...". */
static int cut_short(const char *tok, size_t len)
{
    for (size_t i = 0; i + 3 <= len; i++)
        if (memcmp(tok + i, "...", 3) == 0 || memcmp(tok + i, "\xe2\x80\xa6", 3) == 0)   /* U+2026 */
            return 1;
    return 0;
}

enum listed { LISTED_OURS, LISTED_RECIPIENT, LISTED_UNKNOWN };

#define LIST_SEPARATORS " ,\t"

/* "Email address is not verified. The following identities failed the
 * check in region EU-WEST-1: a@x, b@y": OURS if a listed identity is ours
 * (From, feedback address, or their domains); RECIPIENT if every listed one
 * is the recipient or its domain (the account is in the sandbox); UNKNOWN
 * when there is no list, SES cut it short (the rest could be ours), or it
 * names an identity that is neither. */
static enum listed listed_identities(const struct ses_answer *a)
{
    const char *p = a->message ? strcasestr(a->message, "failed the check") : NULL;
    p = p ? strchr(p, ':') : NULL;
    if (!p)
        return LISTED_UNKNOWN;
    int recipient = 0, unknown = 0;
    for (p++; *p;) {
        p += strspn(p, LIST_SEPARATORS);
        const char *tok = p;
        size_t len = strcspn(p, LIST_SEPARATORS);
        p += len;
        if (len == 0)
            break;
        if (cut_short(tok, len)) {
            unknown = 1;
            continue;
        }
        while (len > 0 && tok[len - 1] == '.')   /* the sentence's full stop */
            len--;
        if (is_identity_of(tok, len, a->from_addr) || is_identity_of(tok, len, a->feedback_addr))
            return LISTED_OURS;
        if (len > 0 && is_identity_of(tok, len, a->rcpt))
            recipient = 1;
        else
            unknown = 1;
    }
    return recipient && !unknown ? LISTED_RECIPIENT : LISTED_UNKNOWN;
}

static int is_addr_char(char c)
{
    return isalnum((unsigned char)c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~@", c) != NULL);
}

/* 1 if addr appears in s as a whole address (not inside a longer one; a
 * full stop may follow). */
static int mentions(const char *s, const char *addr)
{
    size_t n = addr ? strlen(addr) : 0;
    for (const char *p = s && n ? strcasestr(s, addr) : NULL; p; p = strcasestr(p + 1, addr)) {
        char before = p > s ? p[-1] : ' ', after = p[n];
        if (after == '.' && !is_addr_char(p[n + 1]) && p[n + 1] != '.')
            after = ' ';
        if (!is_addr_char(before) && before != '.' && !is_addr_char(after) && after != '.')
            return 1;
    }
    return 0;
}

/* SES's wording for an address it cannot parse. */
static const char *const syntax_phrases[] = {
    "illegal address", "missing final '@domain'", "local address contains", "domain contains",
    "domain starts with", "domain ends with", "invalid domain", "invalid email address",
};

/* A rejection of this message that is not ours: PERM only when SES calls
 * an address malformed and names the recipient, not the From or feedback
 * address; anything else (content, size, a bad request, an unnamed
 * address) says nothing against the recipient. */
static enum transport_result message_refused(const struct ses_answer *a)
{
    int syntax = 0;
    for (size_t i = 0; i < sizeof(syntax_phrases) / sizeof(syntax_phrases[0]); i++)
        syntax |= contains(a->message, syntax_phrases[i]);
    if (syntax && mentions(a->message, a->rcpt) && !mentions(a->message, a->from_addr) &&
        !mentions(a->message, a->feedback_addr))
        return TRANSPORT_PERM;
    return TRANSPORT_UNDETERMINED;
}

/* "Daily message quota exceeded." or "Maximum sending rate exceeded.";
 * without either, LimitExceeded is taken for the quota (the longer wait). */
static const char *limit_reason(const char *name, const char *message)
{
    if (contains(message, "quota"))
        return "quota";
    if (contains(message, "sending rate"))
        return "throttled";
    return strcmp(name, "LimitExceededException") == 0 ? "quota" : "throttled";
}

static enum transport_result hold(const char *reason, const char **hold_reason)
{
    *hold_reason = reason;
    return TRANSPORT_HOLD;
}

/* MessageRejected: ours, the account's or the message's, as the message
 * says.  SES v1 also rejects this way for a paused or suspended account. */
static enum transport_result rejected(const struct ses_answer *a, const char **hold_reason)
{
    if (contains(a->message, "not verified")) {
        switch (listed_identities(a)) {
        case LISTED_OURS:
            return hold("sender_not_verified", hold_reason);
        case LISTED_RECIPIENT:
            return TRANSPORT_UNDETERMINED;   /* the sandbox: the account's state, not the address */
        case LISTED_UNKNOWN:
            break;
        }
        return hold("identity_not_verified", hold_reason);
    }
    if (contains(a->message, "sending paused"))
        return hold("sending_paused", hold_reason);
    if (contains(a->message, "sending suspended"))
        return hold("account_suspended", hold_reason);
    return message_refused(a);
}

enum transport_result ses_errors_classify(const struct ses_answer *a, const char **hold_reason)
{
    char name[96];
    *hold_reason = NULL;
    ses_errors_name(a->error_type, name, sizeof(name));
    if (a->status >= 200 && a->status < 300)
        return TRANSPORT_OK;
    for (size_t i = 0; i < sizeof(hold_names) / sizeof(hold_names[0]); i++)
        if (strcmp(name, hold_names[i].name) == 0)
            return hold(hold_names[i].reason, hold_reason);
    for (size_t i = 0; i < sizeof(limit_names) / sizeof(limit_names[0]); i++)
        if (strcmp(name, limit_names[i]) == 0)
            return hold(limit_reason(name, a->message), hold_reason);
    if (a->status == 429)
        return hold(limit_reason(name, a->message), hold_reason);
    if (a->status == 401)
        return hold("credentials", hold_reason);
    if (a->status == 403)
        return hold("access_denied", hold_reason);
    if (a->status == 408 || a->status >= 500)
        return TRANSPORT_TEMP;
    if (a->status < 400)
        return hold("configuration", hold_reason);   /* a redirect: not SES's API at this endpoint */
    if (strcmp(name, "MessageRejected") == 0)
        return rejected(a, hold_reason);
    return message_refused(a);
}
