/* policy — what a bounce or complaint means for the suppression list.
 *
 * Classification follows the SES bounce types: the enhanced status code
 * (RFC 3463) picks bounceType / bounceSubType; the configured policy then
 * says suppress, count, review or ignore.  Pure functions, table driven. */
#ifndef MF_POLICY_H
#define MF_POLICY_H

struct bounce_class {
    const char *type;      /* "Permanent", "Transient", "Undetermined" */
    const char *subtype;   /* "General", "NoEmail", "Suppressed", "MailboxFull",
                              "MessageTooLarge", "ContentRejected", "AttachmentRejected" */
};

/* action: DSN Action ("failed", "delayed", ...); status "5.1.1" or "".
 * Returns 0 and fills out for a bounce, -1 for a non-bounce (delivered,
 * relayed, expanded). */
int policy_classify(const char *action, const char *status, const char *diagnostic,
                    struct bounce_class *out);

enum policy_verdict { VERDICT_SUPPRESS, VERDICT_COUNT, VERDICT_REVIEW, VERDICT_IGNORE };

/* For a bounce class: Permanent -> SUPPRESS, Transient -> COUNT (suppress
 * after the threshold), Undetermined -> REVIEW. */
enum policy_verdict policy_for_bounce(const struct bounce_class *c);
/* For an ARF Feedback-Type or an SES complaintFeedbackType (may be NULL or
 * ""): abuse/fraud/virus/other and unknown -> SUPPRESS; not-spam -> IGNORE. */
enum policy_verdict policy_for_complaint(const char *feedback_type);

#endif
