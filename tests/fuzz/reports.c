/* reports — delivery status notifications (RFC 3464) and abuse reports
 * (RFC 5965, ARF) read from a whole message, then classified as feedback
 * classifies them.
 *
 * Input: the message.  It goes through report_parse_mem() and, written to
 * the private directory, report_parse_file(): both must read it the same
 * way.  report_fields() also runs over the raw bytes.
 *
 * Checked: the two entry points agree; n_rcpt is within REPORT_MAX_RCPT;
 * every field is NUL-terminated inside its array; a recipient address is
 * normalized; the classification of each recipient and of the feedback
 * type is one of the documented verdicts. */
#include "fuzz.h"

#include "address.h"
#include "feedback/policy.h"
#include "feedback/reports.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

#define TERMINATED(a) FUZZ_CHECK(memchr((a), 0, sizeof(a)) != NULL)

static void check_report(const struct report *r)
{
    FUZZ_CHECK(r->kind == REPORT_UNKNOWN || r->kind == REPORT_DSN || r->kind == REPORT_ARF);
    FUZZ_CHECK(r->n_rcpt <= REPORT_MAX_RCPT);
    TERMINATED(r->reporting_mta);
    TERMINATED(r->feedback_type);
    TERMINATED(r->original_rcpt);
    TERMINATED(r->orig_message_id);
    TERMINATED(r->orig_return_path);
    TERMINATED(r->orig_to);
    for (size_t i = 0; i < r->n_rcpt; i++) {
        const struct report_recipient *x = &r->rcpt[i];
        TERMINATED(x->address);
        TERMINATED(x->action);
        TERMINATED(x->status);
        TERMINATED(x->diagnostic);
        TERMINATED(x->remote_mta);
        if (x->address[0]) {
            char again[ADDRESS_BUFSZ];
            FUZZ_CHECK(address_normalize(x->address, again, sizeof(again)) == 0);
            FUZZ_CHECK(strcmp(again, x->address) == 0);
        }
        struct bounce_class bc;
        if (policy_classify(x->action, x->status, x->diagnostic, &bc) == 0) {
            FUZZ_CHECK(bc.type && bc.subtype);
            enum policy_verdict v = policy_for_bounce(&bc);
            FUZZ_CHECK(v == VERDICT_SUPPRESS || v == VERDICT_COUNT || v == VERDICT_REVIEW);
        }
    }
    enum policy_verdict v = policy_for_complaint(r->feedback_type);
    FUZZ_CHECK(v == VERDICT_SUPPRESS || v == VERDICT_IGNORE);
}

static void count_field(void *opaque, int block, const char *name, const char *value)
{
    FUZZ_CHECK(block >= 0 && name && value);
    ++*(size_t *)opaque;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct report a, b;   /* large: kept off the stack */
    char err[256], path[512];
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    int ra = report_parse_mem((const char *)data, size, &a, err, sizeof(err));
    fuzz_write_file("report.eml", data, size, path, sizeof(path));
    int rb = report_parse_file(path, &b, err, sizeof(err));
    FUZZ_CHECK(ra == rb);
    if (ra == 0) {
        check_report(&a);
        FUZZ_CHECK(memcmp(&a, &b, sizeof(a)) == 0);
    }
    size_t n = 0;
    report_fields((const char *)data, size, count_field, &n);
    return 0;
}
