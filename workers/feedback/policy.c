/* policy — RFC 3463 codes to SES bounce types.
 *
 * SES treats a full mailbox, a too-large message and rejected content as
 * transient (the address is fine; this message or this moment is not), and
 * only bad-destination codes (X.1.x) as "NoEmail".  Mirror that, so reports
 * read the same whether they came from SES or from our own relay. */
#include "policy.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *prefix;     /* status code prefix, "" matches any of the class */
    char cls;               /* '4' or '5' */
    const char *type, *subtype;
} codes[] = {
    { "5.1.", '5', "Permanent", "NoEmail" },       /* bad destination mailbox / system */
    { "5.2.2", '5', "Transient", "MailboxFull" },
    { "5.2.3", '5', "Transient", "MessageTooLarge" },
    { "5.3.4", '5', "Transient", "MessageTooLarge" },
    { "5.6.", '5', "Transient", "ContentRejected" },
    { "5.7.", '5', "Transient", "ContentRejected" },
    { "", '5', "Permanent", "General" },
    { "4.2.2", '4', "Transient", "MailboxFull" },
    { "4.3.4", '4', "Transient", "MessageTooLarge" },
    { "", '4', "Transient", "General" },
};

int policy_classify(const char *action, const char *status, const char *diagnostic,
                    struct bounce_class *out)
{
    if (action && action[0] && strcasecmp(action, "failed") != 0 && strcasecmp(action, "delayed") != 0)
        return -1;  /* delivered, relayed, expanded: not a bounce */
    if (diagnostic && strcasestr(diagnostic, "suppress")) {
        out->type = "Permanent";
        out->subtype = "Suppressed";
        return 0;
    }
    if (!status || (status[0] != '4' && status[0] != '5') || status[1] != '.') {
        if (action && strcasecmp(action, "delayed") == 0) {
            out->type = "Transient";
            out->subtype = "General";
        } else {
            out->type = "Undetermined";
            out->subtype = "Undetermined";
        }
        return 0;
    }
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (codes[i].cls == status[0] && strncmp(status, codes[i].prefix, strlen(codes[i].prefix)) == 0) {
            out->type = codes[i].type;
            out->subtype = codes[i].subtype;
            /* a "delayed" action is never permanent, whatever the code says */
            if (action && strcasecmp(action, "delayed") == 0 && strcmp(out->type, "Permanent") == 0) {
                out->type = "Transient";
                out->subtype = "General";
            }
            return 0;
        }
    out->type = "Undetermined";
    out->subtype = "Undetermined";
    return 0;
}

enum policy_verdict policy_for_bounce(const struct bounce_class *c)
{
    if (strcmp(c->type, "Permanent") == 0)
        return VERDICT_SUPPRESS;
    if (strcmp(c->type, "Transient") == 0)
        return VERDICT_COUNT;
    return VERDICT_REVIEW;
}

enum policy_verdict policy_for_complaint(const char *feedback_type)
{
    if (feedback_type && strcasecmp(feedback_type, "not-spam") == 0)
        return VERDICT_IGNORE;
    return VERDICT_SUPPRESS;
}
