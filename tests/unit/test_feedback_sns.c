/* SNS: string to sign per message type, signature versions 1 and 2 with a
 * certificate made here, certificate URL pattern, SES notification reading. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "feedback/sns.h"

static char cert_path[] = "/tmp/mf-sns-cert-XXXXXX";
static EVP_PKEY *key;

static int setup(void **state)
{
    key = EVP_RSA_gen(2048);
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"sns.test", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_sign(x, key, EVP_sha256());
    int fd = mkstemp(cert_path);
    FILE *f = fdopen(fd, "w");
    PEM_write_X509(f, x);
    fclose(f);
    X509_free(x);
    return 0;
}

static int teardown(void **state)
{
    unlink(cert_path);
    EVP_PKEY_free(key);
    return 0;
}

static char *sign(const char *data, const EVP_MD *md)
{
    unsigned char sig[512];
    size_t sl = sizeof(sig);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestSignInit(c, NULL, md, NULL, key);
    EVP_DigestSign(c, sig, &sl, (const unsigned char *)data, strlen(data));
    EVP_MD_CTX_free(c);
    char *b64 = malloc(4 * sl / 3 + 8);
    EVP_EncodeBlock((unsigned char *)b64, sig, (int)sl);
    return b64;
}

static const char *notification =
    "{\"Type\":\"Notification\",\"MessageId\":\"22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\","
    "\"TopicArn\":\"arn:aws:sns:us-west-2:123456789012:ses-feedback\",\"Subject\":\"bounce\","
    "\"Message\":\"{\\\"notificationType\\\":\\\"Bounce\\\",\\\"bounce\\\":{\\\"bounceType\\\":\\\"Permanent\\\","
    "\\\"bounceSubType\\\":\\\"General\\\",\\\"bouncedRecipients\\\":[{\\\"emailAddress\\\":\\\"a@example.com\\\"}]},"
    "\\\"mail\\\":{\\\"messageId\\\":\\\"m1\\\"}}\","
    "\"Timestamp\":\"2026-11-26T10:00:00.000Z\",\"SignatureVersion\":\"%s\",\"Signature\":\"%s\","
    "\"SigningCertURL\":\"https://sns.us-west-2.amazonaws.com/SimpleNotificationService-abc.pem\"}";

static void test_string_to_sign(void **state)
{
    struct sns_msg m = { "Notification", "id1", "arn:t", "subj", "msg", "2026-11-26T10:00:00Z" };
    char *s = sns_string_to_sign(&m);
    assert_string_equal(s, "Message\nmsg\nMessageId\nid1\nSubject\nsubj\nTimestamp\n2026-11-26T10:00:00Z\n"
                           "TopicArn\narn:t\nType\nNotification\n");
    free(s);
    m.subject = NULL;
    s = sns_string_to_sign(&m);
    assert_null(strstr(s, "Subject"));
    free(s);
    struct sns_msg c = { "SubscriptionConfirmation", "id2", "arn:t", NULL, "msg", "ts" };
    c.subscribe_url = "https://sns.example/confirm";
    c.token = "tok";
    s = sns_string_to_sign(&c);
    assert_string_equal(s, "Message\nmsg\nMessageId\nid2\nSubscribeURL\nhttps://sns.example/confirm\n"
                           "Timestamp\nts\nToken\ntok\nTopicArn\narn:t\nType\nSubscriptionConfirmation\n");
    free(s);
}

static void verify_version(const char *ver, const EVP_MD *md)
{
    char body[4096], err[256];
    struct sns_msg m;
    /* sign the canonical string of the message with its real fields */
    snprintf(body, sizeof(body), notification, ver, "x");
    assert_int_equal(sns_parse(body, strlen(body), &m, err, sizeof(err)), 0);
    char *tosign = sns_string_to_sign(&m);
    char *sig = sign(tosign, md);
    sns_msg_clear(&m);
    free(tosign);
    snprintf(body, sizeof(body), notification, ver, sig);
    assert_int_equal(sns_parse(body, strlen(body), &m, err, sizeof(err)), 0);
    assert_int_equal(sns_verify(&m, cert_path, err, sizeof(err)), 0);
    /* one changed byte of the message breaks it */
    m.message[10] ^= 1;
    assert_int_not_equal(sns_verify(&m, cert_path, err, sizeof(err)), 0);
    sns_msg_clear(&m);
    free(sig);
}

static void test_verify_v1_v2(void **state)
{
    verify_version("1", EVP_sha1());
    verify_version("2", EVP_sha256());
    char body[4096], err[256];
    struct sns_msg m;
    snprintf(body, sizeof(body), notification, "3", "AAAA");
    assert_int_equal(sns_parse(body, strlen(body), &m, err, sizeof(err)), 0);
    assert_int_not_equal(sns_verify(&m, cert_path, err, sizeof(err)), 0);
    sns_msg_clear(&m);
}

static void test_cert_url(void **state)
{
    static const struct { const char *url; int ok; } t[] = {
        { "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1234.pem", 1 },
        { "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem", 1 },
        { "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1234.pem", 0 },
        { "https://sns.us-east-1.amazonaws.com.evil.example/x.pem", 0 },
        { "https://evil.example/sns.us-east-1.amazonaws.com/x.pem", 0 },
        { "https://sns.us-east-1.amazonaws.com/x.pem?redirect=evil", 0 },
        { "https://sns.us-east-1.amazonaws.com/x.txt", 0 },
        { NULL, 0 },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (sns_cert_url_ok(t[i].url) != t[i].ok)
            fail_msg("row %zu: %s", i, t[i].url ? t[i].url : "(null)");
}

static void test_ses_outcome(void **state)
{
    struct ses_outcome o;
    char err[128];
    assert_int_equal(sns_ses_outcome("{\"notificationType\":\"Complaint\",\"complaint\":{\"complaintFeedbackType\":"
                                     "\"abuse\",\"complainedRecipients\":[{\"emailAddress\":\"x@example.com\"},"
                                     "{\"emailAddress\":\"y@example.com\"}]},\"mail\":{\"messageId\":\"m2\"},"
                                     "\"futureField\":{\"a\":1}}", &o, err, sizeof(err)), 0);
    assert_string_equal(o.kind, "Complaint");
    assert_string_equal(o.feedback_type, "abuse");
    assert_string_equal(o.message_id, "m2");
    assert_int_equal(o.n, 2);
    assert_string_equal(o.addresses[1], "y@example.com");
    assert_int_equal(sns_ses_outcome("{\"eventType\":\"Delivery\",\"delivery\":{\"recipients\":[\"d@example.com\"]},"
                                     "\"mail\":{\"messageId\":\"m3\"}}", &o, err, sizeof(err)), 0);
    assert_string_equal(o.kind, "Delivery");
    assert_int_equal(o.n, 1);
    assert_int_not_equal(sns_ses_outcome("{\"notificationType\":\"Surprise\"}", &o, err, sizeof(err)), 0);
    assert_int_not_equal(sns_ses_outcome("not json", &o, err, sizeof(err)), 0);
    assert_int_not_equal(sns_ses_outcome("{\"eventType\":\"Delivery\",\"eventType\":\"Bounce\"}", &o, err,
                                         sizeof(err)), 0);
    assert_non_null(strstr(err, "duplicate"));
}

static void test_timestamp_freshness(void **state)
{
    /* now = 2026-11-26T12:00:00Z; window one hour */
    const int64_t now = 1795694400000LL, hour = 3600 * 1000;
    static const struct {
        const char *ts;
        int ok;
    } t[] = {
        { "2026-11-26T12:00:00.000Z", 1 },
        { "2026-11-26T11:00:00.000Z", 1 },     /* exactly the window */
        { "2026-11-26T10:59:59.999Z", 0 },     /* a replay past it */
        { "2026-11-25T12:00:00Z", 0 },
        { "2026-11-26T12:04:00Z", 1 },         /* clock skew */
        { "2026-11-26T13:00:00Z", 0 },         /* far in the future */
        { "2026-11-26T13:00:00+02:00", 1 },    /* 11:00Z */
        { "yesterday", 0 },
        { "", 0 },
        { NULL, 0 },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct sns_msg m = { .timestamp = (char *)t[i].ts };
        char err[128] = "";
        int rc = sns_check_fresh(&m, now, hour, err, sizeof(err));
        if ((rc == 0) != t[i].ok)
            fail_msg("%s: rc %d (%s)", t[i].ts ? t[i].ts : "(none)", rc, err);
    }
}

static void test_parse_rejects(void **state)
{
    struct sns_msg m;
    char err[128];
    assert_int_not_equal(sns_parse("[]", 2, &m, err, sizeof(err)), 0);
    assert_int_not_equal(sns_parse("{\"Type\":\"Notification\"}", 24, &m, err, sizeof(err)), 0);
    /* a second Message could differ from the one the signature covers */
    static const char dup[] = "{\"Type\":\"Notification\",\"MessageId\":\"1\",\"TopicArn\":\"t\","
                              "\"Message\":\"a\",\"Message\":\"b\",\"Timestamp\":\"x\","
                              "\"SignatureVersion\":\"1\",\"Signature\":\"s\",\"SigningCertURL\":\"u\"}";
    assert_int_not_equal(sns_parse(dup, sizeof(dup) - 1, &m, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "duplicate"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_string_to_sign),
        cmocka_unit_test(test_verify_v1_v2),
        cmocka_unit_test(test_cert_url),
        cmocka_unit_test(test_ses_outcome),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_timestamp_freshness),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
