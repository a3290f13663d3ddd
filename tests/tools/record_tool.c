/* record_tool — prints one record of every shape the record builders in
 * common/ make (event_record, inbound_record, feedback_record,
 * fallback_record, suppression), one per line as "<schema name> <json>",
 * so tests/integration/test_schemas.py can check each against its schema. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "event_record.h"
#include "fallback_record.h"
#include "feedback_record.h"
#include "inbound_record.h"
#include "jsonx.h"
#include "suppression.h"

#define ID1 "019ac0f2-4000-7123-a456-fedcba987654"
#define ID2 "019ac0f2-3b4c-7d5e-8f60-1a2b3c4d5e6f"
#define SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define NOW 1795687200123LL

static void out(const char *name, char *v)
{
    printf("%s %s\n", name, v);
    free(v);
}

static void out_json(const char *name, json_t *o)
{
    out(name, jsonx_dumps(o, NULL));
    json_decref(o);
}

int main(void)
{
    const char *dest[] = { "a@x.example", "b@y.example" };
    struct event_mail m = { ID1, ID2, "noreply@iot.localhost", "Hi \"there\"", NOW - 5000, dest, 2 };
    struct event_recipient perm = { "b@y.example", "failed", "5.1.1", "smtp; 550 5.1.1 unknown" };
    struct event_recipient delay = { "b@y.example", NULL, "4.2.0", "smtp; 450 busy" };
    out("event", event_record_delivery(&m, "a@x.example", "250 2.0.0 Ok \xff", 12, "relay.example", NOW, NULL));
    out("event", event_record_bounce(&m, &perm, "Permanent", "NoEmail", "relay.example", NOW, NULL));
    out("event", event_record_delay(&m, &delay, NOW + 86400000, "relay.example", NOW, NULL));
    out("event", event_record_suppressed(&m, "a@x.example", "BOUNCE", "alerts", NOW, NULL));

    const char *rcpt = "a@x.example";
    struct event_mail rm = { .message_id = ID1, .source = "", .destination = &rcpt, .n_destination = 1 };
    struct event_recipient dsn = { rcpt, "failed", "5.1.1", "smtp; 550 no such user" };
    struct event_recipient bare = { rcpt, NULL, NULL, NULL };
    out("event", event_record_bounce(&rm, &dsn, "Permanent", "General", NULL, NOW, NULL));
    out("event", event_record_bounce(&rm, &bare, "Undetermined", "General", NULL, NOW, NULL));
    out("event", event_record_complaint(&rm, rcpt, "abuse", NOW, NULL));
    out("event", event_record_complaint(&rm, rcpt, NULL, NOW, NULL));
    out("event", event_record_unsubscribe(rcpt, "news", "one-click", ID2, NOW, NULL));
    out("event", event_record_unsubscribe(rcpt, NULL, "mailto", NULL, NOW, NULL));
    struct event_mail dm = { .message_id = ID2, .inbound_id = ID2 };
    out("event", event_record_download(&dm, "192.0.2.1", "curl/8 \xc3\xa9", "report.pdf",
                                       "attachments/2026-11-26/" ID2 "/0", 206, 1024, NOW, NULL));

    const char *rcpts[] = { "list@iot.localhost", "other@iot.localhost" };
    struct record_envelope env = { "dev@example.com", rcpts, 2, "dev.example", "192.0.2.7", 1, "TLSv1.3",
                                   "TLS_AES_256_GCM_SHA384", "device1" };
    struct record_store st = { "2026-11-26/" ID2 ".eml", 2048, SHA };
    struct inbound_fields in = { ID2, NOW, "capture", &env, &st, "<abc@dev.example>", 1 };
    out("inbound", inbound_record_build(&in, NULL));
    struct record_envelope plain = { "", rcpts, 1, "dev.example", "::1", 0, NULL, NULL, NULL };
    struct inbound_fields in2 = { ID2, NOW, "capture", &plain, &st, NULL, 0 };
    out("inbound", inbound_record_build(&in2, NULL));

    struct record_envelope fenv = { "", rcpts, 1, "mx.example", "192.0.2.9", 1, NULL, NULL, NULL };
    struct feedback_fields dsnf = { ID2, "dsn", NOW, "bounces", &fenv, &st, NULL, NULL };
    out("feedback", feedback_record_build(&dsnf, NULL));
    struct feedback_unsubscribe mailto = { .method = "mailto", .token = "abc.def" };
    struct feedback_fields mf = { ID2, "unsubscribe", NOW, "unsubscribe", &fenv, &st, &mailto, NULL };
    out("feedback", feedback_record_build(&mf, NULL));
    struct feedback_unsubscribe click = { .method = "one-click", .token = "abc.def", .address = rcpt,
                                          .list = "news", .client_ip = "192.0.2.1" };
    struct feedback_fields cf = { .id = ID2, .kind = "unsubscribe", .received_ms = NOW, .unsubscribe = &click };
    out("feedback", feedback_record_build(&cf, NULL));
    struct feedback_sns sns = { "Notification", "mid-1", "arn:aws:sns:eu-west-1:123456789012:ses", "{}" };
    struct feedback_fields sf = { .id = ID2, .kind = "sns", .received_ms = NOW, .sns = &sns };
    out("feedback", feedback_record_build(&sf, NULL));

    struct fallback_fields review = { .feedback_id = ID2, .created_ms = NOW, .reason = "undetermined_bounce",
                                      .details = "bounce of undetermined type" };
    out_json("fallback", fallback_record_new(&review));
    const char *found[] = { "a@x.example", "not an address\r\n" }, *invalid[] = { "not an address\r\n" };
    struct fallback_fields some = { .id = ID1, .inbound_id = ID2, .created_ms = NOW,
                                    .reason = "invalid_recipients", .details = "1 failed", .rule = "capture",
                                    .sender = "dev@example.com", .subject = "Report", .found = found,
                                    .n_found = 2, .invalid = invalid, .n_invalid = 1, .sent_to = found,
                                    .n_sent_to = 1 };
    out_json("fallback", fallback_record_new(&some));

    out("suppression", suppression_record("A@X.example", "news", "UNSUBSCRIBE", NOW, "unsubscribe", NULL, ID2));
    out("suppression", suppression_record("a@x.example", NULL, "BOUNCE", NOW, "send", ID1, NULL));
    return 0;
}
