/* ses_errors — what an Amazon SES v2 SendEmail answer means for one recipient.
 *
 *   2xx                                      TRANSPORT_OK
 *   408, 5xx                                 TRANSPORT_TEMP (retry tier)
 *   the recipient's address is malformed:    TRANSPORT_PERM (Bounce Permanent,
 *     an address-syntax rejection that          then suppression)
 *     names the recipient and nothing of ours
 *   this message to this recipient failed,   TRANSPORT_UNDETERMINED (Bounce
 *     but nothing shows the address is bad:     Undetermined: feedback sends it
 *     a sandbox recipient not verified,         to review, mailfleet.fallback,
 *     content or size rejected,                 and suppresses nobody)
 *     BadRequestException, an address-syntax
 *     rejection that names nobody, any other 4xx
 *   we are at fault, not the recipient       TRANSPORT_HOLD with a reason:
 *     SendingPaused / AccountSendingPaused /   sending_paused
 *       ConfigurationSetSendingPaused
 *     AccountSuspendedException                account_suspended
 *     LimitExceeded / Throttling /             quota ("quota" in the message,
 *       TooManyRequests, any 429                 or LimitExceeded), else
 *                                                throttled
 *     MessageRejected "not verified" naming    sender_not_verified
 *       the From or feedback address or domain
 *     MessageRejected "not verified" with a    identity_not_verified
 *       list SES cut short ("..."), naming an
 *       identity we cannot place, or no list
 *     MailFromDomainNotVerifiedException       mail_from_not_verified
 *     NotFoundException (configuration set),   configuration
 *       ConfigurationSetDoesNotExist
 *     AccessDenied, any other 403              access_denied
 *     401, SignatureDoesNotMatch, Expired-     credentials
 *       Token, UnrecognizedClient, ...
 *
 * Why so little is Permanent: a Permanent bounce makes feedback suppress the
 * recipient for good.  A sandbox rejection is the account's state, which
 * ends when the account leaves the sandbox; a message-level or request-level
 * rejection would suppress every recipient of the message; and every address
 * we send passed address_normalize, which is narrower than SES's rules, so a
 * syntax rejection that names nobody may as well be about the From (and
 * would then suppress every recipient of that sender).  Undetermined still
 * ends the recipient's attempt and reaches an operator.  An AccessDenied can
 * come from an IAM condition on the recipients; send caps how long one
 * record may hold for it ([send] access_denied_max).
 *
 * The exception name comes from the x-amzn-ErrorType header or the body's
 * __type / code field.  Pure functions: no I/O, no state. */
#ifndef MF_SEND_SES_ERRORS_H
#define MF_SEND_SES_ERRORS_H
#include "transport.h"

#include <stddef.h>

struct ses_answer {
    long status;                  /* HTTP status */
    const char *error_type;       /* exception name as sent, may be NULL */
    const char *message;          /* the body's message, may be NULL */
    const char *from_addr;        /* the FromEmailAddress sent */
    const char *feedback_addr;    /* the FeedbackForwardingEmailAddress sent, may be NULL */
    const char *rcpt;             /* the one ToAddresses entry sent */
};

/* The result for a; *hold_reason is set (one of transport_hold_reasons)
 * for TRANSPORT_HOLD, else NULL. */
enum transport_result ses_errors_classify(const struct ses_answer *a, const char **hold_reason);

/* The bare exception name of an x-amzn-ErrorType value or __type field:
 * "SendingPausedException:http://internal.amazon.com/..." and
 * "com.amazonaws.ses#SendingPausedException" -> "SendingPausedException".
 * Empty when raw is NULL or holds no name. */
void ses_errors_name(const char *raw, char *out, size_t outlen);

#endif
