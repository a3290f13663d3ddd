/* records: the builders and strict parsers of the record families in
 * common/ (event_record, inbound_record, feedback_record, fallback_record,
 * suppression).  What is built parses back; what a consumer must refuse
 * (duplicate keys, wrong types, another schema) is refused with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "event_record.h"
#include "fallback_record.h"
#include "feedback_record.h"
#include "inbound_record.h"
#include "jsonx.h"
#include "suppression.h"
#include "topics.h"

static const char id[] = "019ac0f2-4000-7123-a456-fedcba987654";
static const char inbound_id[] = "019ac0f2-3b4c-7d5e-8f60-1a2b3c4d5e6f";

static json_t *parse_event(char *s, const size_t *lenp)
{
    char err[256];
    size_t len = *lenp;
    assert_int_equal(len, strlen(s));
    json_t *j = event_record_parse(s, len, err, sizeof(err));
    if (!j)
        fail_msg("%s: %s", s, err);
    free(s);
    return j;
}

static void test_event_shapes(void **state)
{
    const char *dest[] = { "a@x.com", "b@y.org" };
    struct event_mail m = { id, inbound_id, "noreply@iot.localhost", "Hi", 1764151200456LL, dest, 2 };
    size_t len;
    json_t *j = parse_event(event_record_delivery(&m, "a@x.com", "250 2.0.0 Ok", 12, "relay", 1764151201000LL,
                                                  &len), &len);
    assert_string_equal(json_string_value(json_object_get(j, "eventType")), "Delivery");
    assert_string_equal(json_string_value(json_object_get(j, "schema")), SCHEMA_EVENT);
    assert_string_equal(json_string_value(json_object_get(j, "inbound_id")), m.inbound_id);
    json_t *mail = json_object_get(j, "mail");
    assert_string_equal(json_string_value(json_object_get(mail, "messageId")), id);
    assert_string_equal(json_string_value(json_object_get(mail, "timestamp")), "2025-11-26T10:00:00.456Z");
    assert_int_equal(json_array_size(json_object_get(mail, "destination")), 2);
    json_t *d = json_object_get(j, "delivery");
    assert_string_equal(json_string_value(json_object_get(d, "smtpResponse")), "250 2.0.0 Ok");
    assert_int_equal(json_integer_value(json_object_get(d, "processingTimeMillis")), 12);
    json_decref(j);

    struct event_recipient er = { "b@y.org", "failed", "5.1.1", "smtp; 550 5.1.1 unknown \"x\"" };
    j = parse_event(event_record_bounce(&m, &er, "Permanent", "NoEmail", "relay", 1764151201000LL, &len), &len);
    json_t *b = json_object_get(j, "bounce");
    json_t *br = json_array_get(json_object_get(b, "bouncedRecipients"), 0);
    assert_string_equal(json_string_value(json_object_get(br, "action")), "failed");
    assert_string_equal(json_string_value(json_object_get(br, "status")), "5.1.1");
    assert_string_equal(json_string_value(json_object_get(br, "diagnosticCode")), "smtp; 550 5.1.1 unknown \"x\"");
    assert_string_equal(json_string_value(json_object_get(b, "reportingMTA")), "relay");
    assert_null(json_object_get(b, "feedbackId"));
    json_decref(j);

    struct event_recipient dr = { "b@y.org", NULL, "4.2.0", "smtp; 450 busy" };
    j = parse_event(event_record_delay(&m, &dr, 1764237600456LL, "relay", 1764151201000LL, &len), &len);
    json_t *dd = json_object_get(j, "deliveryDelay");
    assert_string_equal(json_string_value(json_object_get(dd, "expirationTime")), "2025-11-27T10:00:00.456Z");
    assert_null(json_object_get(json_array_get(json_object_get(dd, "delayedRecipients"), 0), "action"));
    json_decref(j);

    j = parse_event(event_record_suppressed(&m, "a@x.com", "weird", "alerts", 1764151201000LL, &len), &len);
    json_t *sr = json_array_get(json_object_get(json_object_get(j, "suppressed"), "suppressedRecipients"), 0);
    assert_string_equal(json_string_value(json_object_get(sr, "reason")), "MANUAL");
    assert_string_equal(json_string_value(json_object_get(sr, "list")), "alerts");
    json_decref(j);

    /* Invalid UTF-8 from a server reply still gives valid JSON. */
    j = parse_event(event_record_delivery(&m, "a@x.com", "250 \xff\xfe ok", 1, "relay", 1764151201000LL, &len), &len);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "delivery"), "smtpResponse")),
                        "250 ?? ok");
    json_decref(j);
}

/* feedback's and links' events: a report's mail, no mail at all, an id only. */
static void test_event_report_shapes(void **state)
{
    const char *rcpt = "a@x.com";
    struct event_mail rm = { .message_id = id, .source = "", .destination = &rcpt, .n_destination = 1 };
    size_t len;
    struct event_recipient er = { rcpt, NULL, "5.1.1", NULL };
    json_t *j = parse_event(event_record_bounce(&rm, &er, "Permanent", "General", NULL, 1764151201000LL, &len), &len);
    json_t *br = json_array_get(json_object_get(json_object_get(j, "bounce"), "bouncedRecipients"), 0);
    assert_null(json_object_get(br, "action"));
    assert_null(json_object_get(br, "diagnosticCode"));
    assert_null(json_object_get(json_object_get(j, "bounce"), "reportingMTA"));
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "mail"), "source")), "");
    assert_null(json_object_get(j, "inbound_id"));
    json_decref(j);

    j = parse_event(event_record_complaint(&rm, rcpt, "abuse", 1764151201000LL, &len), &len);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "complaint"), "complaintFeedbackType")),
                        "abuse");
    json_decref(j);

    j = parse_event(event_record_unsubscribe(rcpt, "news", "one-click", "not-an-id", 1764151201000LL, &len), &len);
    assert_null(json_object_get(j, "mail"));
    json_t *u = json_object_get(j, "unsubscribe");
    assert_string_equal(json_string_value(json_object_get(u, "list")), "news");
    assert_null(json_object_get(u, "feedbackId"));   /* only a real id */
    json_decref(j);

    struct event_mail dm = { .message_id = inbound_id, .inbound_id = inbound_id };
    j = parse_event(event_record_download(&dm, "127.0.0.1", NULL, "a.pdf", "att/k", 200, 42, 1764151201000LL,
                                          &len), &len);
    json_t *mail = json_object_get(j, "mail");
    assert_int_equal(json_object_size(mail), 1);   /* messageId only */
    assert_null(json_object_get(json_object_get(j, "download"), "userAgent"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "download"), "bytes")), 42);
    json_decref(j);
}

static void test_inbound_round_trip(void **state)
{
    const char *rcpts[] = { "list@iot.localhost" };
    struct record_envelope env = { "dev@example.com", rcpts, 1, "dev.example", "127.0.0.1", 1, "TLSv1.3",
                                   NULL, NULL };
    struct record_store st = { "2026-11-26/x.eml", 123,
                               "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" };
    struct inbound_fields f = { inbound_id, 1795687200123LL, "capture", &env, &st, "<m@x>", 1 };
    size_t len;
    char *s = inbound_record_build(&f, &len), err[256];
    struct inbound_record in;
    assert_int_equal(inbound_record_parse(s, len, &in, err, sizeof(err)), 0);
    assert_string_equal(in.id, inbound_id);
    assert_string_equal(in.rule, "capture");
    assert_string_equal(in.mail_from, "dev@example.com");
    assert_string_equal(in.key, "2026-11-26/x.eml");
    assert_int_equal(in.received_ms, 1795687200123LL);
    json_t *e = json_object_get(in.root, "envelope");
    assert_string_equal(json_string_value(json_object_get(e, "tls_cipher")), "");
    assert_true(json_is_null(json_object_get(e, "auth_user")));
    assert_true(json_is_true(json_object_get(in.root, "spooled")));
    json_decref(in.root);
    free(s);
}

/* Each family's parser on what it must refuse; err names the reason. */
static void test_parse_refusals(void **state)
{
    enum { INBOUND, FEEDBACK, EVENT, SUPPRESSION };
    static const struct { int family; const char *in; const char *err; } rows[] = {
        { INBOUND, "{\"schema\":\"mailfleet.inbound.v1\",\"id\":\"a\",\"store\":{\"key\":\"k\"}}", NULL },
        { INBOUND, "{\"schema\":\"mailfleet.inbound.v1\",\"id\":\"a\",\"id\":\"b\",\"store\":{\"key\":\"k\"}}",
          "duplicate" },
        { INBOUND, "{\"schema\":\"mailfleet.inbound.v1\",\"id\":\"a\",\"store\":{\"key\":\"k\",\"key\":\"j\"}}",
          "duplicate" },
        { INBOUND, "{\"schema\":\"mailfleet.inbound.v2\",\"id\":\"a\",\"store\":{\"key\":\"k\"}}",
          "unknown schema \"mailfleet.inbound.v2\"" },
        { INBOUND, "{\"schema\":\"mailfleet.inbound.v1\",\"id\":7,\"store\":{\"key\":\"k\"}}",
          "field id is not a string" },
        { INBOUND, "{\"schema\":\"mailfleet.inbound.v1\",\"id\":\"a\",\"rule\":[],\"store\":{\"key\":\"k\"}}",
          "field rule is not a string" },
        { INBOUND, "{\"schema\":\"mailfleet.inbound.v1\",\"id\":\"a\"}", "field store.key is missing" },
        { INBOUND, NULL, "tombstone" },
        { FEEDBACK, "{\"schema\":\"mailfleet.feedback.v1\",\"id\":\"a\",\"kind\":\"sns\"}", NULL },
        { FEEDBACK, "{\"schema\":\"mailfleet.feedback.v1\",\"id\":\"a\",\"kind\":\"sns\",\"kind\":\"dsn\"}",
          "duplicate" },
        { FEEDBACK, "{\"schema\":\"mailfleet.feedback.v0\",\"id\":\"a\",\"kind\":\"sns\"}", "unknown schema" },
        { FEEDBACK, "{\"schema\":\"mailfleet.feedback.v1\",\"id\":\"a\",\"kind\":1}", "field kind is not a string" },
        { FEEDBACK, "{\"schema\":\"mailfleet.feedback.v1\",\"id\":\"a\",\"kind\":\"dsn\",\"envelope\":\"x\"}",
          "field envelope is not an object" },
        { FEEDBACK, "{\"schema\":\"mailfleet.feedback.v1\",\"id\":\"a\",\"kind\":\"dsn\",\"envelope\":"
                    "{\"rcpt_to\":\"a@b.c\"}}", "field envelope.rcpt_to is not an array" },
        { EVENT, "{\"schema\":\"mailfleet.event.v1\",\"eventType\":\"Bounce\"}", NULL },
        { EVENT, "{\"schema\":\"mailfleet.event.v1\",\"eventType\":\"Bounce\",\"eventType\":\"Delivery\"}",
          "duplicate" },
        { EVENT, "{\"schema\":\"mailfleet.event.v2\",\"eventType\":\"Bounce\"}", "unknown schema" },
        { EVENT, "{\"schema\":\"mailfleet.event.v1\",\"eventType\":{}}", "field eventType is not a string" },
        { SUPPRESSION, "{\"schema\":\"mailfleet.suppression.v1\",\"emailAddress\":\"a@b.c\",\"reason\":\"BOUNCE\","
                       "\"lastUpdateTime\":\"2026-11-26T10:00:00.123Z\"}", NULL },
        { SUPPRESSION, "{\"schema\":\"mailfleet.suppression.v1\",\"emailAddress\":\"a@b.c\",\"reason\":\"BOUNCE\","
                       "\"reason\":\"MANUAL\",\"lastUpdateTime\":\"2026-11-26T10:00:00.123Z\"}", "duplicate" },
        { SUPPRESSION, "{\"schema\":\"mailfleet.suppression.v1\",\"emailAddress\":[\"a@b.c\"],\"reason\":\"BOUNCE\","
                       "\"lastUpdateTime\":\"2026-11-26T10:00:00.123Z\"}", "field emailAddress is not a string" },
        { SUPPRESSION, "{\"schema\":\"mailfleet.alarm.v1\",\"emailAddress\":\"a@b.c\",\"reason\":\"BOUNCE\","
                       "\"lastUpdateTime\":\"2026-11-26T10:00:00.123Z\"}", "unknown schema" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char err[256] = "";
        size_t n = rows[i].in ? strlen(rows[i].in) : 0;
        json_t *v = NULL;
        struct inbound_record in;
        switch (rows[i].family) {
        case INBOUND:
            v = inbound_record_parse(rows[i].in, n, &in, err, sizeof(err)) == 0 ? in.root : NULL;
            break;
        case FEEDBACK: v = feedback_record_parse(rows[i].in, n, err, sizeof(err)); break;
        case EVENT: v = event_record_parse(rows[i].in, n, err, sizeof(err)); break;
        case SUPPRESSION: v = suppression_record_parse(rows[i].in, n, err, sizeof(err)); break;
        }
        if ((v != NULL) != (rows[i].err == NULL))
            fail_msg("row %zu: %s", i, v ? "accepted" : err);
        if (!v && !strstr(err, rows[i].err))
            fail_msg("row %zu: error '%s' lacks '%s'", i, err, rows[i].err);
        json_decref(v);
    }
}

static void test_feedback_round_trip(void **state)
{
    const char *rcpts[] = { "unsubscribe+tok@iot.localhost" };
    struct record_envelope env = { "dev@example.com", rcpts, 1, "dev.example", "127.0.0.1", 1, NULL, NULL,
                                   "dev" };
    struct record_store st = { "k.eml", 1, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" };
    struct feedback_unsubscribe u = { .method = "mailto", .token = "a.b" };
    struct feedback_fields f = { id, "unsubscribe", 1795687200123LL, "unsub", &env, &st, &u, NULL };
    size_t len;
    char *s = feedback_record_build(&f, &len), err[256];
    json_t *o = feedback_record_parse(s, len, err, sizeof(err));
    assert_non_null(o);
    assert_string_equal(jsonx_str(o, "unsubscribe.method"), "mailto");
    assert_null(jsonx_path(o, "unsubscribe.list"));
    assert_null(jsonx_path(o, "envelope.tls_version"));
    assert_string_equal(jsonx_str(o, "envelope.auth_user"), "dev");
    assert_null(jsonx_path(o, "notification"));
    json_decref(o);
    free(s);
}

static void test_fallback_shapes(void **state)
{
    /* feedback's: feedback_id instead of inbound_id, the required arrays empty */
    struct fallback_fields f = { .feedback_id = id, .created_ms = 1795687200123LL,
                                 .reason = "undetermined_bounce", .details = "why" };
    json_t *o = fallback_record_new(&f);
    assert_string_equal(jsonx_str(o, "schema"), SCHEMA_FALLBACK);
    assert_string_equal(jsonx_str(o, "feedback_id"), id);
    assert_null(jsonx_path(o, "inbound_id"));
    assert_string_equal(jsonx_str(o, "sender"), "");
    assert_int_equal(json_array_size(jsonx_path(o, "found")), 0);
    assert_int_equal(json_array_size(jsonx_path(o, "invalid")), 0);
    assert_int_equal(json_array_size(jsonx_path(o, "links")), 0);
    assert_null(jsonx_path(o, "sent_to"));
    assert_int_equal(jsonx_time_ms(o, "created_at"), 1795687200123LL);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_shapes),
        cmocka_unit_test(test_event_report_shapes),
        cmocka_unit_test(test_inbound_round_trip),
        cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_feedback_round_trip),
        cmocka_unit_test(test_fallback_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
