/* ses_errors — see ses_errors.h for the table.
 *
 * Exception names decide where they can; the message is read only where
 * one name covers causes of both kinds: MessageRejected (an unverified
 * sender or sandbox recipient, SES names the identities that failed) and
 * the rate limits (a per-second rate or the daily quota). */
#include "ses_errors.h"
#include "address.h"

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
    { "AccessDeniedException", "credentials" },
    { "AccessDenied", "credentials" },
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
    return s && strcasestr(s, needle) != NULL;
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

/* "Email address is not verified. The following identities failed the
 * check in region EU-WEST-1: a@x, b@y": 1 if a listed identity is ours
 * (From, feedback address, or their domains), 0 if only others are listed,
 * -1 if the message lists none. */
static int names_our_identity(const struct ses_answer *a)
{
    const char *p = a->message ? strcasestr(a->message, "failed the check") : NULL;
    p = p ? strchr(p, ':') : NULL;
    if (!p)
        return -1;
    int listed = 0;
    for (p++; *p;) {
        p += strspn(p, " ,\t");
        size_t len = strcspn(p, " ,\t");
        while (len > 0 && p[len - 1] == '.')
            len--;
        if (len > 0) {
            listed = 1;
            if (is_identity_of(p, len, a->from_addr) || is_identity_of(p, len, a->feedback_addr))
                return 1;
        }
        p += strcspn(p, " ,\t");
    }
    return listed ? 0 : -1;
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

/* MessageRejected: ours or the recipient's fault, as the message says.
 * SES v1 also rejects this way for a paused or suspended account. */
static enum transport_result rejected(const struct ses_answer *a, const char **hold_reason)
{
    if (contains(a->message, "not verified") && names_our_identity(a) == 1)
        return hold("sender_not_verified", hold_reason);
    if (contains(a->message, "sending paused"))
        return hold("sending_paused", hold_reason);
    if (contains(a->message, "sending suspended"))
        return hold("account_suspended", hold_reason);
    return TRANSPORT_PERM;
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
    if (a->status == 401 || a->status == 403)
        return hold("credentials", hold_reason);
    if (a->status == 408 || a->status >= 500)
        return TRANSPORT_TEMP;
    if (strcmp(name, "MessageRejected") == 0)
        return rejected(a, hold_reason);
    return TRANSPORT_PERM;
}
