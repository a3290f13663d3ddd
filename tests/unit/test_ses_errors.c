/* ses_errors: which SES answers hold the transport (our account or sender
 * is refused), which bounce without suppressing (Undetermined: sandbox,
 * message-level, unknown) and the one that bounces Permanent (SES names the
 * recipient's address as malformed), one row per answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "send/ses_errors.h"

#define FROM "noreply@iot.localhost"
#define FEEDBACK "bounce+abc@iot.localhost"
#define RCPT "ops@example.com"
#define NOT_VERIFIED "Email address is not verified. The following identities failed the check in region EU-WEST-1: "

static const struct {
    long status;
    const char *type, *message;
    enum transport_result want;
    const char *reason;
} rows[] = {
    { 200, NULL, NULL, TRANSPORT_OK, NULL },
    /* our account */
    { 400, "SendingPausedException:http://internal.amazon.com/coral/com.amazon.ses/",
      "Sending paused for this account.", TRANSPORT_HOLD, "sending_paused" },
    { 400, "com.amazonaws.ses.v2#AccountSuspendedException", "", TRANSPORT_HOLD, "account_suspended" },
    { 400, "AccountSuspendedException", NULL, TRANSPORT_HOLD, "account_suspended" },
    { 400, "LimitExceededException", "Daily message quota exceeded.", TRANSPORT_HOLD, "quota" },
    { 400, "LimitExceededException", "Maximum sending rate exceeded.", TRANSPORT_HOLD, "throttled" },
    { 400, "LimitExceededException", NULL, TRANSPORT_HOLD, "quota" },
    { 400, "Throttling", "Daily message quota exceeded.", TRANSPORT_HOLD, "quota" },
    { 429, "TooManyRequestsException", "Too many requests.", TRANSPORT_HOLD, "throttled" },
    { 429, NULL, "Maximum sending rate exceeded.", TRANSPORT_HOLD, "throttled" },
    { 400, "MailFromDomainNotVerifiedException", "MAIL FROM domain not verified", TRANSPORT_HOLD,
      "mail_from_not_verified" },
    { 404, "NotFoundException", "Configuration set mf does not exist.", TRANSPORT_HOLD, "configuration" },
    { 301, NULL, NULL, TRANSPORT_HOLD, "configuration" },
    { 403, "SignatureDoesNotMatch", "The request signature we calculated does not match", TRANSPORT_HOLD,
      "credentials" },
    { 401, NULL, NULL, TRANSPORT_HOLD, "credentials" },
    { 400, "ExpiredTokenException", "The security token included in the request is expired",
      TRANSPORT_HOLD, "credentials" },
    /* access: possibly an IAM condition on the recipients, so its own reason */
    { 403, "AccessDeniedException", "User: arn:aws:iam::123456789012:user/mf is not authorized to perform: "
      "ses:SendEmail", TRANSPORT_HOLD, "access_denied" },
    { 403, NULL, NULL, TRANSPORT_HOLD, "access_denied" },
    /* an unverified identity: ours (From, feedback address, their domain) */
    { 400, "MessageRejected", NOT_VERIFIED FROM, TRANSPORT_HOLD, "sender_not_verified" },
    { 400, "MessageRejected", NOT_VERIFIED "IOT.LOCALHOST.", TRANSPORT_HOLD, "sender_not_verified" },
    { 400, "MessageRejected", NOT_VERIFIED FEEDBACK, TRANSPORT_HOLD, "sender_not_verified" },
    { 400, "MessageRejected", NOT_VERIFIED RCPT ", " FROM, TRANSPORT_HOLD, "sender_not_verified" },
    { 400, "MessageRejected", NOT_VERIFIED RCPT ", " FROM ", ...", TRANSPORT_HOLD, "sender_not_verified" },
    /* ... the recipient's alone: the sandbox, an account state, not the address */
    { 400, "MessageRejected", NOT_VERIFIED RCPT, TRANSPORT_UNDETERMINED, NULL },
    { 400, "MessageRejected", NOT_VERIFIED "OPS@example.com.", TRANSPORT_UNDETERMINED, NULL },
    { 400, "MessageRejected", NOT_VERIFIED "example.com", TRANSPORT_UNDETERMINED, NULL },
    /* ... or not fully known: a list cut short, an identity we cannot
     * place, no list at all (whatever is cut off may be ours) */
    { 400, "MessageRejected", NOT_VERIFIED RCPT ", ...", TRANSPORT_HOLD, "identity_not_verified" },
    { 400, "MessageRejected", NOT_VERIFIED RCPT ", bounce+abc@iot.loc...", TRANSPORT_HOLD, "identity_not_verified" },
    { 400, "MessageRejected", NOT_VERIFIED RCPT "\xe2\x80\xa6", TRANSPORT_HOLD, "identity_not_verified" },
    { 400, "MessageRejected", NOT_VERIFIED "ops@iot.localhost", TRANSPORT_HOLD, "identity_not_verified" },
    { 400, "MessageRejected", NOT_VERIFIED RCPT ", other@example.net", TRANSPORT_HOLD, "identity_not_verified" },
    { 400, "MessageRejected", NOT_VERIFIED, TRANSPORT_HOLD, "identity_not_verified" },
    { 400, "MessageRejected", "Email address is not verified.", TRANSPORT_HOLD, "identity_not_verified" },
    { 400, "MessageRejected", "Sending paused for this account.", TRANSPORT_HOLD, "sending_paused" },
    { 400, "MessageRejected", "Sending suspended for this account.", TRANSPORT_HOLD, "account_suspended" },
    /* the message or the request, not the address: nobody is suppressed */
    { 400, "MessageRejected", "Message length is more than 10485760 bytes long: '10485761'.",
      TRANSPORT_UNDETERMINED, NULL },
    { 400, "MessageRejected", "Transaction failed: content rejected.", TRANSPORT_UNDETERMINED, NULL },
    { 400, "BadRequestException", "Missing final '@domain'", TRANSPORT_UNDETERMINED, NULL },
    { 400, "MessageRejected", "Illegal address", TRANSPORT_UNDETERMINED, NULL },
    { 400, "SomethingNewException", "?", TRANSPORT_UNDETERMINED, NULL },
    { 400, NULL, NULL, TRANSPORT_UNDETERMINED, NULL },
    { 413, NULL, NULL, TRANSPORT_UNDETERMINED, NULL },
    { 400, NULL, "Email address is not verified.", TRANSPORT_UNDETERMINED, NULL },
    /* an address SES calls malformed: the recipient's only when it is named
     * and nothing of ours is */
    { 400, "BadRequestException", "Illegal address: " RCPT, TRANSPORT_PERM, NULL },
    { 400, "BadRequestException", "Domain contains illegal character in " RCPT ".", TRANSPORT_PERM, NULL },
    { 400, "BadRequestException", "Illegal address: x" RCPT, TRANSPORT_UNDETERMINED, NULL },
    { 400, "BadRequestException", "Illegal address: " RCPT ".net", TRANSPORT_UNDETERMINED, NULL },
    { 400, "BadRequestException", "Illegal address: " FROM ", " RCPT, TRANSPORT_UNDETERMINED, NULL },
    { 400, "BadRequestException", "Bad request for " RCPT, TRANSPORT_UNDETERMINED, NULL },
    /* SES itself */
    { 408, NULL, NULL, TRANSPORT_TEMP, NULL },
    { 500, "InternalFailure", "", TRANSPORT_TEMP, NULL },
    { 503, "ServiceUnavailable", NULL, TRANSPORT_TEMP, NULL },
};

static void test_classify(void **state)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct ses_answer a = { rows[i].status, rows[i].type, rows[i].message, FROM, FEEDBACK, RCPT };
        const char *reason = "unset";
        enum transport_result got = ses_errors_classify(&a, &reason);
        if (got != rows[i].want || (reason == NULL) != (rows[i].reason == NULL) ||
            (reason && strcmp(reason, rows[i].reason) != 0))
            fail_msg("row %zu (%ld %s %s): result %d reason %s, want %d %s", i, rows[i].status,
                     rows[i].type ? rows[i].type : "-", rows[i].message ? rows[i].message : "-", got,
                     reason ? reason : "-", rows[i].want, rows[i].reason ? rows[i].reason : "-");
    }
}

/* Without a feedback address only From counts as ours: the feedback
 * address is then an identity we cannot place (held, not bounced). */
static void test_classify_without_feedback_address(void **state)
{
    const char *reason = NULL;
    struct ses_answer a = { 400, "MessageRejected", NOT_VERIFIED FEEDBACK, "noreply@other.example", NULL, RCPT };
    assert_int_equal(ses_errors_classify(&a, &reason), TRANSPORT_HOLD);
    assert_string_equal(reason, "identity_not_verified");
    a.message = NOT_VERIFIED RCPT;
    assert_int_equal(ses_errors_classify(&a, &reason), TRANSPORT_UNDETERMINED);
    assert_null(reason);
}

/* Every hold reason is a metric label send knows. */
static void test_reasons_are_known(void **state)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        if (!rows[i].reason)
            continue;
        int found = 0;
        for (size_t k = 0; transport_hold_reasons[k]; k++)
            found |= strcmp(transport_hold_reasons[k], rows[i].reason) == 0;
        assert_true(found);
    }
}

static void test_name(void **state)
{
    static const struct { const char *raw, *want; } names[] = {
        { "SendingPausedException:http://internal.amazon.com/coral/com.amazon.ses/", "SendingPausedException" },
        { "com.amazonaws.ses.v2#AccountSuspendedException", "AccountSuspendedException" },
        { " MessageRejected \r\n", "MessageRejected" },
        { "", "" },
        { NULL, "" },
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char out[96] = "x";
        ses_errors_name(names[i].raw, out, sizeof(out));
        assert_string_equal(out, names[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_classify_without_feedback_address),
        cmocka_unit_test(test_reasons_are_known),
        cmocka_unit_test(test_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
