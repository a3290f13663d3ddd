/* ses_errors — what an Amazon SES v2 SendEmail answer means for one recipient.
 *
 *   2xx                                      TRANSPORT_OK
 *   408, 5xx                                 TRANSPORT_TEMP (retry tier)
 *   the recipient is at fault                TRANSPORT_PERM (bounce, then
 *     (MessageRejected naming the recipient,  suppression)
 *     BadRequestException, any other 4xx)
 *   we are at fault, not the recipient       TRANSPORT_HOLD with a reason:
 *     SendingPaused / AccountSendingPaused /   sending_paused
 *       ConfigurationSetSendingPaused
 *     AccountSuspendedException                account_suspended
 *     LimitExceeded / Throttling /             quota ("quota" in the message,
 *       TooManyRequests, any 429                 or LimitExceeded), else
 *                                                throttled
 *     MessageRejected "not verified" naming    sender_not_verified
 *       the From or feedback address or domain
 *     MailFromDomainNotVerifiedException       mail_from_not_verified
 *     NotFoundException (configuration set),   configuration
 *       ConfigurationSetDoesNotExist
 *     401, 403, AccessDenied, SignatureDoes-   credentials
 *       NotMatch, ExpiredToken, ...
 *
 * The exception name comes from the x-amzn-ErrorType header or the body's
 * __type / code field.  A "not verified" rejection that names no identity
 * is not one SES writes and stays permanent, as does any 4xx not listed:
 * a new SES error then shows up as bounces rather than as a silent hold.
 * Pure functions: no I/O, no state. */
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
