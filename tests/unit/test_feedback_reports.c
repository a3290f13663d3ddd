/* feedback reports: every tests/data/feedback/NAME.eml against NAME.expect
 * (written by hand from RFC 3464 / RFC 5965 examples), and the policy table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <gmime/gmime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "process.h"
#include "feedback/policy.h"
#include "feedback/reports.h"

#ifndef DATA_DIR
#define DATA_DIR "tests/data/feedback"
#endif

static void check_one(const char *name)
{
    char path[512], line[1024], err[256];
    struct report r;
    snprintf(path, sizeof(path), "%s/%s.eml", DATA_DIR, name);
    assert_int_equal(report_parse_file(path, &r, err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/%s.expect", DATA_DIR, name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t rcpt_i = 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        const char *k = line, *v = eq + 1;
        if (strcmp(k, "kind") == 0) {
            const char *got = r.kind == REPORT_DSN ? "dsn" : r.kind == REPORT_ARF ? "arf" : "unknown";
            if (strcmp(got, v) != 0)
                fail_msg("%s: kind %s, want %s", name, got, v);
        } else if (strcmp(k, "reporting") == 0) {
            assert_string_equal(r.reporting_mta, v);
        } else if (strcmp(k, "return_path") == 0) {
            assert_string_equal(r.orig_return_path, v);
        } else if (strcmp(k, "message_id") == 0) {
            assert_string_equal(r.orig_message_id, v);
        } else if (strcmp(k, "feedback_type") == 0) {
            assert_string_equal(r.feedback_type, v);
        } else if (strcmp(k, "original_rcpt") == 0) {
            assert_string_equal(r.original_rcpt, v);
        } else if (strcmp(k, "complaint") == 0) {
            enum policy_verdict pv = policy_for_complaint(r.feedback_type);
            assert_string_equal(pv == VERDICT_SUPPRESS ? "suppress" : "ignore", v);
        } else if (strcmp(k, "rcpt") == 0) {
            /* address|action|status|Type/SubType|diagnostic */
            char want[1024], cls[80];
            snprintf(want, sizeof(want), "%s", v);
            if (rcpt_i >= r.n_rcpt)
                fail_msg("%s: only %zu recipients parsed", name, r.n_rcpt);
            struct report_recipient *p = &r.rcpt[rcpt_i++];
            struct bounce_class c;
            if (policy_classify(p->action, p->status, p->diagnostic, &c) == 0)
                snprintf(cls, sizeof(cls), "%s/%s", c.type, c.subtype);
            else
                snprintf(cls, sizeof(cls), "none");
            char got[1400];
            snprintf(got, sizeof(got), "%s|%s|%s|%s|%s", p->address, p->action, p->status, cls,
                     p->diagnostic);
            if (strcmp(got, want) != 0)
                fail_msg("%s:\n got  %s\n want %s", name, got, want);
        }
    }
    fclose(f);
    if (rcpt_i != r.n_rcpt)
        fail_msg("%s: %zu recipients parsed, %zu expected", name, r.n_rcpt, rcpt_i);
}

static void test_corpus(void **state)
{
    DIR *d = opendir(DATA_DIR);
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 4 && strcmp(e->d_name + l - 4, ".eml") == 0) {
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)(l - 4), e->d_name);
            check_one(name);
            n++;
        }
    }
    closedir(d);
    assert_true(n >= 15);
}

static void test_classify_table(void **state)
{
    static const struct { const char *action, *status, *diag, *type, *sub; int rc; } t[] = {
        { "failed", "5.1.1", "", "Permanent", "NoEmail", 0 },
        { "failed", "5.1.10", "", "Permanent", "NoEmail", 0 },
        { "failed", "5.2.2", "", "Transient", "MailboxFull", 0 },
        { "failed", "5.2.1", "", "Permanent", "General", 0 },
        { "failed", "5.3.4", "", "Transient", "MessageTooLarge", 0 },
        { "failed", "5.7.1", "", "Transient", "ContentRejected", 0 },
        { "failed", "5.4.4", "", "Permanent", "General", 0 },
        { "failed", "4.2.2", "", "Transient", "MailboxFull", 0 },
        { "failed", "4.4.7", "", "Transient", "General", 0 },
        { "delayed", "5.1.1", "", "Transient", "General", 0 },
        { "delayed", "", "", "Transient", "General", 0 },
        { "failed", "", "", "Undetermined", "Undetermined", 0 },
        { "failed", "9.9.9", "", "Undetermined", "Undetermined", 0 },
        { "failed", "5.1.1", "address is suppressed", "Permanent", "Suppressed", 0 },
        { "delivered", "2.0.0", "", NULL, NULL, -1 },
        { "relayed", "", "", NULL, NULL, -1 },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct bounce_class c;
        int rc = policy_classify(t[i].action, t[i].status, t[i].diag, &c);
        assert_int_equal(rc, t[i].rc);
        if (rc == 0) {
            if (strcmp(c.type, t[i].type) || strcmp(c.subtype, t[i].sub))
                fail_msg("row %zu: %s/%s, want %s/%s", i, c.type, c.subtype, t[i].type, t[i].sub);
        }
    }
    struct bounce_class perm = { "Permanent", "General" }, tr = { "Transient", "General" },
                        und = { "Undetermined", "Undetermined" };
    assert_int_equal(policy_for_bounce(&perm), VERDICT_SUPPRESS);
    assert_int_equal(policy_for_bounce(&tr), VERDICT_COUNT);
    assert_int_equal(policy_for_bounce(&und), VERDICT_REVIEW);
    assert_int_equal(policy_for_complaint("abuse"), VERDICT_SUPPRESS);
    assert_int_equal(policy_for_complaint(NULL), VERDICT_SUPPRESS);
    assert_int_equal(policy_for_complaint("NOT-SPAM"), VERDICT_IGNORE);
}

static void test_fields_unfold_and_bound(void **state)
{
    /* a 100 KB folded value is cut, not grown without bound */
    size_t n = 100000;
    char *buf = malloc(n + 64);
    strcpy(buf, "Diagnostic-Code: smtp;");
    size_t l = strlen(buf);
    while (l < n) {
        memcpy(buf + l, "\n x", 3);
        l += 3;
    }
    buf[l] = '\0';
    struct report r;
    char err[64];
    assert_int_equal(report_parse_mem(buf, l, &r, err, sizeof(err)), 0);
    assert_int_equal(r.kind, REPORT_UNKNOWN);
    free(buf);
}

int main(void)
{
    process_init(0);   /* GMime, libcurl, OpenSSL: before any test */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_classify_table),
        cmocka_unit_test(test_fields_unfold_and_bound),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    process_shutdown();
    return rc;
}
