/* feedback_http — feedback's routes on the public HTTP server: the one-click
 * unsubscribe page /u/<token> (RFC 8058) and the SNS endpoint /sns.
 *
 * Neither applies anything itself: a valid request becomes a feedback.v1
 * record on mailfleet.feedback, which the consumer applies like ingest's, so
 * one code path suppresses and a 200 means the request is durable.
 * Security: GET /u/ only shows a page (link scanners fetch URLs); an SNS post
 * must come from an allowed topic and, unless sns_allow_unsigned, carry a
 * fresh signature by the configured certificate; certificate and subscribe
 * URLs are never fetched. */
#include "feedback_int.h"
#include "sns.h"

#include "address.h"
#include "bus.h"
#include "config.h"
#include "feedback_record.h"
#include "http.h"
#include "ids.h"
#include "log.h"
#include "metrics.h"
#include "strbuf.h"
#include "timeutil.h"
#include "topics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void html(struct http_response *resp, int status, const char *title, const char *body_html)
{
    struct strbuf b;
    strbuf_init(&b);
    strbuf_appendf(&b, "<!doctype html><html><head><meta charset=\"utf-8\"><title>%s</title>"
                       "</head><body><h1>%s</h1>%s</body></html>\n", title, title, body_html);
    resp->status = status;
    resp->content_type = "text/html; charset=utf-8";
    resp->body = strbuf_detach(&b, &resp->body_len);
    http_response_header(resp, "Cache-Control", "no-store");
}

/* Publishes a feedback.v1 record of f (id and received_at set here). */
static int publish_feedback(struct feedback *f, struct feedback_fields *ff, char *idbuf)
{
    char err[256];
    ff->id = id_new(idbuf);
    ff->received_ms = now_ms();
    size_t len;
    char *v = feedback_record_build(ff, &len);
    struct bus_record r = { .topic = TOPIC_FEEDBACK, .key = idbuf, .key_len = strlen(idbuf),
                            .value = v, .value_len = len, .partition = -1 };
    int rc = bus_produce(f->bus, &r, 1, 30000, err, sizeof(err));
    if (rc != 0)
        log_kv(LOG_ERROR, "cannot publish feedback", "error", err, NULL);
    free(v);
    return rc;
}

void feedback_http_unsubscribe(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct feedback *f = opaque;
    const char *tok = req->path + 3;   /* "/u/" */
    char rcpt[ADDRESS_BUFSZ], list[128], id[ID_LEN + 1];
    if (feedback_records_unsub_lookup(f, tok, rcpt, sizeof(rcpt), list, sizeof(list)) != 0) {
        html(resp, 403, "Invalid link", "<p>This unsubscribe link is not valid.</p>");
        return;
    }
    if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0) {
        /* Never unsubscribes: link scanners fetch URLs.  The button POSTs the
         * same body an RFC 8058 one-click client sends. */
        html(resp, 200, "Unsubscribe",
             "<p>Stop receiving these messages?</p><form method=\"post\">"
             "<input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">"
             "<button type=\"submit\">Unsubscribe</button></form>");
        return;
    }
    if (strcmp(req->method, "POST") != 0) {
        html(resp, 405, "Method not allowed", "");
        return;
    }
    if (!strstr(req->body, "List-Unsubscribe=One-Click")) {
        html(resp, 400, "Bad request", "<p>Expected List-Unsubscribe=One-Click.</p>");
        return;
    }
    struct feedback_unsubscribe u = { .method = "one-click", .token = tok, .address = rcpt,
                                      .list = list, .client_ip = req->client_ip };
    struct feedback_fields ff = { .kind = "unsubscribe", .unsubscribe = &u };
    if (publish_feedback(f, &ff, id) != 0) {
        html(resp, 503, "Try again later", "<p>We could not record your request.</p>");
        return;
    }
    html(resp, 200, "Unsubscribed", "<p>You will not receive these messages any more.</p>");
}

void feedback_http_sns(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct feedback *f = opaque;
    struct sns_msg m;
    char err[256], id[ID_LEN + 1];
    if (strcmp(req->method, "POST") != 0) {
        http_response_text(resp, 405, NULL, "POST only\n");
        return;
    }
    if (sns_parse(req->body, req->body_len, &m, err, sizeof(err)) != 0) {
        metric_inc(f->m_sns_rejected);
        http_response_text(resp, 400, NULL, "not an SNS message\n");
        return;
    }
    int allowed = 0;
    err[0] = '\0';
    for (size_t i = 0; i < f->n_arns; i++)
        allowed |= strcmp(f->arns[i], m.topic_arn) == 0;
    const char *why = NULL;
    if (!allowed)
        why = "topic not allowed";
    else if (!f->cert_file && !config_bool(f->cfg, "feedback", "sns_allow_unsigned"))
        why = "no sns_cert_file configured: signatures cannot be checked";
    else if (f->cert_file && !sns_cert_url_ok(m.signing_cert_url))
        why = "signing certificate URL is not an SNS address";
    else if (f->cert_file && m.signature_version && strcmp(m.signature_version, "1") == 0 &&
             !config_bool(f->cfg, "feedback", "sns_allow_sha1"))
        why = "SignatureVersion 1 (SHA1) is not accepted (sns_allow_sha1)";
    else if (f->cert_file && sns_verify(&m, f->cert_file, err, sizeof(err)) != 0)
        why = "signature does not verify";
    /* Checked only with signatures: unsigned (test) posts can claim any time. */
    else if (f->cert_file &&
             sns_check_fresh(&m, now_ms(), config_duration_ms(f->cfg, "feedback", "sns_max_age"), err,
                             sizeof(err)) != 0)
        why = "stale Timestamp (a replay?)";
    if (why) {
        metric_inc(f->m_sns_rejected);
        log_kv(LOG_WARN, "SNS message rejected", "reason", why, "detail", err, "topic", m.topic_arn, NULL);
        http_response_text(resp, 403, NULL, "rejected\n");
        sns_msg_clear(&m);
        return;
    }
    if (strcmp(m.type, "SubscriptionConfirmation") == 0) {
        /* Never fetched automatically: the operator confirms by hand. */
        log_kv(LOG_WARN, "SNS subscription awaits confirmation: open SubscribeURL to confirm",
               "topic", m.topic_arn, "subscribe_url", m.subscribe_url ? m.subscribe_url : "", NULL);
        http_response_text(resp, 200, NULL, "logged for the operator\n");
    } else if (strcmp(m.type, "Notification") == 0) {
        struct feedback_sns n = { m.type, m.message_id, m.topic_arn, m.message };
        struct feedback_fields ff = { .kind = "sns", .sns = &n };
        if (publish_feedback(f, &ff, id) != 0)
            http_response_text(resp, 503, NULL, "try again\n");
        else
            http_response_text(resp, 200, NULL, "ok\n");
    } else {
        http_response_text(resp, 200, NULL, "ignored\n");
    }
    sns_msg_clear(&m);
}
