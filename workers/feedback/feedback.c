/* feedback — turns reports about sent mail into suppression-list changes.
 *
 * Consumes: mailfleet.feedback (group "feedback": DSN and ARF mail and mailto
 * unsubscribes from ingest, SNS notifications and one-click unsubscribes from
 * our own HTTP side) and mailfleet.events (group "feedback-events": send's
 * synchronous bounces).  Produces: mailfleet.suppression (compacted) and
 * mailfleet.events (Bounce, Complaint, Unsubscribe; header mf.producer =
 * feedback so we never re-read our own), mailfleet.fallback for reports that
 * need a human.  Serves on the public HTTP server: /u/<token> (RFC 8058),
 * /sns, and the SES v2-shaped suppression API behind a bearer token.
 *
 * Guarantees: only recipients that a verified token names are suppressed — a
 * forged bounce or complaint changes nothing; duplicate and out-of-order input
 * is idempotent (suppression is last-write-wins per key; transient counts and
 * events are deduplicated on message + recipient + status).  Offsets are
 * committed after outputs are durable.
 * Security: GET /u/ never unsubscribes; SNS certificate URLs are never
 * fetched; the API compares its token in constant time. */
#include "feedback.h"
#include "policy.h"
#include "reports.h"
#include "sns.h"

#include "address.h"
#include "bus.h"
#include "common_config.h"
#include "event_record.h"
#include "fallback_record.h"
#include "feedback_record.h"
#include "http.h"
#include "ids.h"
#include "jsonx.h"
#include "kv.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "strbuf.h"
#include "suppression.h"
#include "timeutil.h"
#include "tokens.h"
#include "topics.h"
#include "suppression_copy.h"
#include "topics.h"
#include "verp.h"
#include "worker_loop.h"

#include <ctype.h>
#include <gmime/gmime.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const struct config_key feedback_config_keys[] = {
    { "feedback", "metrics_listen", CONFIG_STR, "127.0.0.1:9104", "metrics/health when run alone" },
    { "feedback", "public_listen", CONFIG_STR, "127.0.0.1:8025", "unsubscribe, SNS and API when run alone" },
    { "feedback", "api_token", CONFIG_SECRET, NULL,
      "bearer token of the suppression API (/v2/email/suppression/...); unset = API off" },
    { "feedback", "sns_topic_arns", CONFIG_LIST, NULL, "SNS topics allowed to post to /sns; unset = none" },
    { "feedback", "sns_cert_file", CONFIG_STR, NULL,
      "PEM certificate that signs SNS messages (from the SigningCertURL, fetched by the operator)" },
    { "feedback", "sns_allow_unsigned", CONFIG_BOOL, "false",
      "accept SNS posts without checking signatures (tests only: anyone who knows the topic ARN "
      "could suppress any address)" },
    { "feedback", "sns_allow_sha1", CONFIG_BOOL, "false",
      "accept SignatureVersion 1 (SHA1withRSA); SNS signs with SHA256 (version 2) when the topic asks" },
    { "feedback", "sns_max_age", CONFIG_DURATION, "1h",
      "refuse signed SNS messages whose Timestamp is older (replays); covers SNS's delivery retries" },
    { "feedback", "transient_threshold", CONFIG_INT, "3", "suppress after this many transient bounces" },
    { "feedback", "transient_window", CONFIG_DURATION, "7d", "... within this window" },
    { "feedback", "suppress_on_complaint", CONFIG_BOOL, "true", "complaints (except not-spam) suppress" },
    CONFIG_KEYS_END
};

struct feedback {
    const struct config *cfg;
    struct bus *bus;
    struct store *incoming;
    struct tokens *tokens;
    char *verp_key;
    struct suppression_copy *copy;
    struct kv *transient, *seen;
    struct bus_consumer *fc, *ec;
    struct worker_loop *floop, *eloop;
    char *api_token;
    char **arns;
    size_t n_arns;
    const char *cert_file;
    long transient_threshold;
    int64_t transient_window_ms;
    struct metric *m_bounce, *m_complaint, *m_unsub, *m_forged, *m_review, *m_suppressed,
                  *m_sns_rejected;
};

static const struct bus_header producer_hdr = { "mf.producer", "feedback", 8 };

/* ---- outputs ---------------------------------------------------------- */

static int emit_event(struct feedback *f, char *v, size_t len, const char *key, char *err, size_t errlen)
{
    struct bus_record r = { .topic = TOPIC_EVENTS, .key = key, .key_len = strlen(key),
                            .value = v, .value_len = len, .headers = &producer_hdr,
                            .n_headers = 1, .partition = -1 };
    int rc = bus_produce(f->bus, &r, 1, 30000, err, errlen);
    free(v);
    return rc;
}

/* The mail a report is about, as far as a report tells. */
static struct event_mail report_mail(const char *message_id, const char **rcpt)
{
    return (struct event_mail){ .message_id = message_id && *message_id ? message_id : "unknown",
                                .source = "", .destination = rcpt, .n_destination = 1 };
}

static int emit_bounce(struct feedback *f, const char *message_id, const char *rcpt,
                       const struct bounce_class *c, const struct report_recipient *rr,
                       char *err, size_t errlen)
{
    struct event_mail m = report_mail(message_id, &rcpt);
    struct event_recipient er = { rcpt, rr && rr->action[0] ? rr->action : NULL,
                                  rr && rr->status[0] ? rr->status : NULL,
                                  rr && rr->diagnostic[0] ? rr->diagnostic : NULL };
    size_t len;
    char *v = event_record_bounce(&m, &er, c->type, c->subtype, NULL, now_ms(), &len);
    return emit_event(f, v, len, message_id && *message_id ? message_id : rcpt, err, errlen);
}

static int emit_review(struct feedback *f, const char *feedback_id, const char *why)
{
    char err[256];
    struct fallback_fields ff = { .feedback_id = feedback_id, .created_ms = now_ms(),
                                  .reason = "undetermined_bounce", .details = why };
    json_t *o = fallback_record_new(&ff);
    size_t len;
    char *v = jsonx_dumps(o, &len);
    json_decref(o);
    struct bus_record r = { .topic = TOPIC_FALLBACK, .key = feedback_id,
                            .key_len = strlen(feedback_id), .value = v, .value_len = len,
                            .partition = -1 };
    int rc = bus_produce(f->bus, &r, 1, 30000, err, sizeof(err));
    free(v);
    metric_inc(f->m_review);
    return rc;
}

static int suppress(struct feedback *f, const char *addr, const char *list, const char *reason,
                    const char *source, const char *message_id, const char *feedback_id)
{
    char err[256], key[512];
    int rc = suppression_publish(f->bus, addr, list, reason, source, message_id, feedback_id, err,
                                 sizeof(err));
    if (rc != 0) {
        log_kv(LOG_ERROR, "cannot publish a suppression", "reason", reason, "error", err, NULL);
        return rc;
    }
    if (suppression_key(addr, list, key, sizeof(key)) == 0) {
        char *v = suppression_record(addr, list, reason, now_ms(), source, message_id, feedback_id);
        suppression_copy_apply(f->copy, key, strlen(key), v, strlen(v));   /* read-your-writes */
        free(v);
    }
    metric_inc(f->m_suppressed);
    log_kv(LOG_INFO, "suppressed", "reason", reason, "source", source, "message_id",
           message_id ? message_id : "", NULL);
    return 0;
}

static void seen_key(char *key, size_t len, const char *message_id, const char *rcpt, const char *what)
{
    snprintf(key, len, "%s|%s|%s", message_id ? message_id : "", rcpt, what);
}

/* 1 the first time (message, recipient, what) is seen; 0 for a duplicate.
 * A caller whose outputs then fail calls forget(), so the retry of the same
 * record is not mistaken for a duplicate. */
static int first_time(struct feedback *f, const char *message_id, const char *rcpt, const char *what)
{
    char key[900];
    seen_key(key, sizeof(key), message_id, rcpt, what);
    int rc = kv_put_new(f->seen, key, strlen(key), "", 0, now_ms() + 30LL * 86400000);
    return rc != 0;   /* on error, process (at-least-once) */
}

static int forget(struct feedback *f, const char *message_id, const char *rcpt, const char *what)
{
    char key[900];
    seen_key(key, sizeof(key), message_id, rcpt, what);
    kv_del(f->seen, key, strlen(key));
    return -EIO;
}

/* Counts a transient bounce; returns 1 when the threshold is reached. */
static int count_transient(struct feedback *f, const char *rcpt)
{
    char key[512];
    if (suppression_key(rcpt, NULL, key, sizeof(key)) != 0)
        return 0;
    int64_t now = now_ms(), stamps[64];
    size_t n = 0, vlen = 0;
    void *val = NULL;
    if (kv_get(f->transient, key, strlen(key), &val, &vlen) == 1) {
        for (size_t i = 0; i + 8 <= vlen && n < 63; i += 8) {
            int64_t t;
            memcpy(&t, (char *)val + i, 8);
            if (now - t <= f->transient_window_ms)
                stamps[n++] = t;
        }
    }
    free(val);
    stamps[n++] = now;
    kv_put(f->transient, key, strlen(key), stamps, n * 8, now + f->transient_window_ms);
    return (long)n >= f->transient_threshold;
}

/* Applies one bounce for a recipient the token vouches for. */
static int apply_bounce(struct feedback *f, const char *message_id, const char *rcpt,
                        const struct bounce_class *c, const struct report_recipient *rr,
                        const char *source, const char *feedback_id)
{
    char err[256];
    const char *status = rr && rr->status[0] ? rr->status : c->subtype;
    if (!first_time(f, message_id, rcpt, status))
        return 0;
    metric_inc(f->m_bounce);
    switch (policy_for_bounce(c)) {
    case VERDICT_SUPPRESS:
        if (suppress(f, rcpt, NULL, "BOUNCE", source, message_id, feedback_id) != 0)
            return forget(f, message_id, rcpt, status);
        break;
    case VERDICT_COUNT:
        /* after a failed suppress the retry counts this bounce again: at
         * worst one suppression a little early, never a lost one */
        if (count_transient(f, rcpt) &&
            suppress(f, rcpt, NULL, "BOUNCE", source, message_id, feedback_id) != 0)
            return forget(f, message_id, rcpt, status);
        break;
    case VERDICT_REVIEW:
        emit_review(f, feedback_id ? feedback_id : message_id, "bounce of undetermined type");
        break;
    case VERDICT_IGNORE:
        break;
    }
    if (strcmp(source, "send") != 0 && emit_bounce(f, message_id, rcpt, c, rr, err, sizeof(err)) != 0)
        return forget(f, message_id, rcpt, status);
    return 0;
}

static int apply_complaint(struct feedback *f, const char *message_id, const char *rcpt,
                           const char *feedback_type, const char *source, const char *feedback_id)
{
    char err[256];
    if (!first_time(f, message_id, rcpt, "complaint"))
        return 0;
    metric_inc(f->m_complaint);
    if (policy_for_complaint(feedback_type) == VERDICT_SUPPRESS &&
        config_bool(f->cfg, "feedback", "suppress_on_complaint") &&
        suppress(f, rcpt, NULL, "COMPLAINT", source, message_id, feedback_id) != 0)
        return forget(f, message_id, rcpt, "complaint");
    struct event_mail m = report_mail(message_id, &rcpt);
    size_t len;
    char *v = event_record_complaint(&m, rcpt, feedback_type, now_ms(), &len);
    if (emit_event(f, v, len, message_id && *message_id ? message_id : rcpt, err, sizeof(err)) != 0)
        return forget(f, message_id, rcpt, "complaint");
    return 0;
}

/* ---- tokens ----------------------------------------------------------- */

/* The token of "prefix+TOKEN@domain" into tok; -1 when addr has no such form. */
static int token_of(const char *addr, const char *prefix, char *tok, size_t len)
{
    const char *a = addr;
    size_t pl = strlen(prefix);
    if (*a == '<')
        a++;
    if (strncasecmp(a, prefix, pl) != 0)
        return -1;
    const char *at = strchr(a + pl, '@');
    if (!at || (size_t)(at - a - pl) >= len)
        return -1;
    memcpy(tok, a + pl, (size_t)(at - a - pl));
    tok[at - a - pl] = '\0';
    return 0;
}

/* 0 and the message id when tok is a VERP token (tag) for rcpt. */
static int verp_for(struct feedback *f, const char *tag, const char *tok, const char *rcpt,
                    char msgid[VERP_ID_LEN + 1])
{
    char a[ADDRESS_BUFSZ];
    if (!tok[0] || address_normalize(rcpt, a, sizeof(a)) != 0)
        return -1;
    return verp_check(f->verp_key, strlen(f->verp_key), tag, tok, a, msgid) == 0 ? 0 : -1;
}

/* One-click token "u|rcpt|list" -> address, list. */
static int unsub_lookup(struct feedback *f, const char *tok, char *rcpt, size_t rlen, char *list,
                        size_t llen)
{
    char *payload = NULL;
    size_t len = 0;
    int64_t exp;
    if (tokens_verify(f->tokens, tok, now_ms() / 1000, &payload, &len, &exp) != TOKEN_OK)
        return -1;
    int rc = -1;
    char *bar = strncmp(payload, "u|", 2) == 0 ? strchr(payload + 2, '|') : NULL;
    if (bar) {
        *bar = '\0';
        if (address_normalize(payload + 2, rcpt, rlen) == 0 && strlen(bar + 1) < llen) {
            snprintf(list, llen, "%s", bar + 1);
            rc = 0;
        }
    }
    free(payload);
    return rc;
}

/* ---- feedback records ------------------------------------------------- */

static int read_report(struct feedback *f, json_t *rec, struct report *rep, char *err, size_t errlen)
{
    const char *key = jsonx_str(rec, "store.key");
    if (!key) {
        snprintf(err, errlen, "feedback record has no store key");
        return -EINVAL;
    }
    char *path = store_local_path(f->incoming, key);
    if (path) {
        int rc = report_parse_file(path, rep, err, errlen);
        free(path);
        return rc;
    }
    char tmp[] = "/tmp/mailfleet-feedback-XXXXXX";
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a temporary file");
        return -EIO;
    }
    unlink(tmp);
    int rc = store_get_fd(f->incoming, key, fd, err, errlen);
    if (rc == 0) {
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        rc = report_parse_file(proc, rep, err, errlen);
    }
    close(fd);
    return rc;
}

/* The first address in a header value ("Name <a@b>, ..." -> a@b). */
static void first_address(const char *v, char *out, size_t len)
{
    const char *lt = strchr(v, '<');
    const char *s = lt ? lt + 1 : v;
    size_t n = strcspn(s, lt ? ">" : ", ");
    while (*s == ' ' && n)
        s++, n--;
    snprintf(out, len, "%.*s", (int)n, s);
}

static int handle_mail_report(struct feedback *f, json_t *rec, const char *fid)
{
    char err[256], msgid[VERP_ID_LEN + 1], toks[2][128] = { "", "" };
    json_t *to = json_object_get(json_object_get(rec, "envelope"), "rcpt_to");
    size_t i;
    json_t *v;
    json_array_foreach(to, i, v) {
        const char *a = json_string_value(v);
        if (a && token_of(a, "bounce+", toks[0], sizeof(toks[0])) == 0)
            break;
    }
    struct report rep;
    int rc = read_report(f, rec, &rep, err, sizeof(err));
    if (rc == -ENOENT || rc == -EIO)
        return rc;   /* store trouble: retry */
    if (rc != 0 || rep.kind == REPORT_UNKNOWN) {
        log_kv(LOG_WARN, "feedback mail is neither a DSN nor an ARF report", "feedback_id", fid, NULL);
        emit_review(f, fid, "mail to a feedback address that is neither a DSN nor an ARF report");
        return 0;
    }
    /* ARF reports usually go to a fixed abuse address: the token is then in
     * the Return-Path of the returned message. */
    if (rep.orig_return_path[0])
        token_of(rep.orig_return_path, "bounce+", toks[1], sizeof(toks[1]));

    if (rep.kind == REPORT_ARF) {
        char to_addr[320] = "";
        first_address(rep.orig_to, to_addr, sizeof(to_addr));
        const char *cands[] = { rep.original_rcpt, to_addr };
        for (size_t k = 0; k < 4; k++)
            if (cands[k / 2][0] && verp_for(f, "verp", toks[k % 2], cands[k / 2], msgid) == 0) {
                char a[ADDRESS_BUFSZ];
                address_normalize(cands[k / 2], a, sizeof(a));
                return apply_complaint(f, msgid, a, rep.feedback_type, "arf", fid);
            }
        metric_inc(f->m_forged);
        log_kv(LOG_WARN, "ARF report without a token for its recipient: nothing suppressed",
               "feedback_id", fid, NULL);
        return 0;
    }
    /* Only recipients the report names AND the token vouches for. */
    int verified = 0;
    for (size_t k = 0; k < rep.n_rcpt; k++) {
        struct report_recipient *rr = &rep.rcpt[k];
        if (!rr->address[0] || (verp_for(f, "verp", toks[0], rr->address, msgid) != 0 &&
                                verp_for(f, "verp", toks[1], rr->address, msgid) != 0))
            continue;
        verified = 1;
        struct bounce_class c;
        if (policy_classify(rr->action, rr->status, rr->diagnostic, &c) != 0)
            continue;   /* delivered / relayed: not a bounce */
        if (apply_bounce(f, msgid, rr->address, &c, rr, "dsn", fid) != 0)
            return -EIO;
    }
    if (!verified) {
        metric_inc(f->m_forged);
        log_kv(LOG_WARN, "DSN without a valid VERP token for a named recipient: nothing suppressed",
               "feedback_id", fid, NULL);
    }
    return 0;
}

static int apply_unsubscribe(struct feedback *f, const char *rcpt, const char *list,
                             const char *method, const char *fid)
{
    char err[256];
    if (!first_time(f, fid, rcpt, "unsubscribe"))
        return 0;
    if (suppress(f, rcpt, list, "UNSUBSCRIBE", "unsubscribe", NULL, fid) != 0)
        return forget(f, fid, rcpt, "unsubscribe");
    metric_inc(f->m_unsub);
    size_t len;
    char *v = event_record_unsubscribe(rcpt, list, method, fid, now_ms(), &len);
    if (emit_event(f, v, len, rcpt, err, sizeof(err)) != 0)
        return forget(f, fid, rcpt, "unsubscribe");
    return 0;
}

static int handle_unsubscribe(struct feedback *f, json_t *rec, const char *fid)
{
    json_t *u = json_object_get(rec, "unsubscribe");
    const char *method = json_string_value(json_object_get(u, "method"));
    char rcpt[ADDRESS_BUFSZ], list[128] = "", tok[128] = "", msgid[VERP_ID_LEN + 1];
    if (method && strcmp(method, "one-click") == 0) {
        const char *t = json_string_value(json_object_get(u, "token"));
        if (t && unsub_lookup(f, t, rcpt, sizeof(rcpt), list, sizeof(list)) == 0)
            return apply_unsubscribe(f, rcpt, list, "one-click", fid);
    } else {
        /* mailto: unsubscribe+TOKEN@ from the address that got the mail */
        json_t *env = json_object_get(rec, "envelope");
        const char *from = json_string_value(json_object_get(env, "mail_from"));
        const char *t = json_string_value(json_object_get(u, "token"));
        if (t)
            snprintf(tok, sizeof(tok), "%s", t);
        else
            token_of(json_string_value(json_array_get(json_object_get(env, "rcpt_to"), 0)) ?: "",
                     "unsubscribe+", tok, sizeof(tok));
        if (from && verp_for(f, "unsubscribe", tok, from, msgid) == 0 &&
            address_normalize(from, rcpt, sizeof(rcpt)) == 0)
            return apply_unsubscribe(f, rcpt, NULL, "mailto", fid);
    }
    metric_inc(f->m_forged);
    log_kv(LOG_WARN, "unsubscribe with an invalid token ignored", "feedback_id", fid, NULL);
    return 0;
}

static int handle_sns(struct feedback *f, json_t *rec, const char *fid)
{
    char err[256];
    const char *msg = json_string_value(json_object_get(json_object_get(rec, "notification"), "Message"));
    struct ses_outcome o;
    if (!msg || sns_ses_outcome(msg, &o, err, sizeof(err)) != 0) {
        log_kv(LOG_WARN, "SES notification not understood", "feedback_id", fid, "error", err, NULL);
        emit_review(f, fid, "SES notification not understood");
        return 0;
    }
    for (size_t i = 0; i < o.n; i++) {
        char rcpt[ADDRESS_BUFSZ];
        if (address_normalize(o.addresses[i], rcpt, sizeof(rcpt)) != 0)
            continue;
        int rc = 0;
        if (strcmp(o.kind, "Bounce") == 0) {
            struct bounce_class c = { o.bounce_type, o.bounce_subtype[0] ? o.bounce_subtype : "General" };
            if (strcmp(c.type, "Permanent") && strcmp(c.type, "Transient"))
                c.type = "Undetermined";
            rc = apply_bounce(f, o.message_id, rcpt, &c, NULL, "sns", fid);
        } else if (strcmp(o.kind, "Complaint") == 0) {
            rc = apply_complaint(f, o.message_id, rcpt, o.feedback_type, "sns", fid);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* OK = 0, RETRY < 0.  Bad records are logged and skipped, never retried. */
static int handle_feedback(struct feedback *f, const struct bus_record *r)
{
    char err[256];
    json_t *rec = feedback_record_parse(r->value, r->value_len, err, sizeof(err));
    const char *kind = jsonx_str(rec, "kind"), *fid = jsonx_str(rec, "id");
    int rc = 0;
    if (!rec) {
        log_kv(LOG_WARN, "malformed feedback record skipped", "error", err, NULL);
    } else if (strcmp(kind, "dsn") == 0 || strcmp(kind, "arf") == 0) {
        rc = handle_mail_report(f, rec, fid);
    } else if (strcmp(kind, "unsubscribe") == 0) {
        rc = handle_unsubscribe(f, rec, fid);
    } else if (strcmp(kind, "sns") == 0) {
        rc = handle_sns(f, rec, fid);
    } else {
        log_kv(LOG_WARN, "unknown feedback kind skipped", "kind", kind, NULL);
    }
    json_decref(rec);
    return rc;
}

/* send's synchronous bounces: a Bounce event send produced. */
static int handle_event(struct feedback *f, const struct bus_record *r)
{
    const struct bus_header *h = bus_record_header(r, "mf.producer");
    if (h && h->value_len == 8 && memcmp(h->value, "feedback", 8) == 0)
        return 0;
    char err[256];
    json_t *ev = r->value ? event_record_parse(r->value, r->value_len, err, sizeof(err)) : NULL;
    const char *type = json_string_value(json_object_get(ev, "eventType"));
    int rc = 0;
    if (r->value && !ev)
        log_kv(LOG_WARN, "malformed event record skipped", "error", err, NULL);
    if (type && strcmp(type, "Bounce") == 0) {
        json_t *b = json_object_get(ev, "bounce");
        const char *msgid = json_string_value(json_object_get(json_object_get(ev, "mail"), "messageId"));
        struct bounce_class c = { json_string_value(json_object_get(b, "bounceType")),
                                  json_string_value(json_object_get(b, "bounceSubType")) };
        if (!c.type || (strcmp(c.type, "Permanent") && strcmp(c.type, "Transient")))
            c.type = "Undetermined";
        if (!c.subtype)
            c.subtype = "General";
        size_t i;
        json_t *br;
        json_array_foreach(json_object_get(b, "bouncedRecipients"), i, br) {
            struct report_recipient rr = { 0 };
            const char *a = json_string_value(json_object_get(br, "emailAddress"));
            const char *st = json_string_value(json_object_get(br, "status"));
            if (!a || address_normalize(a, rr.address, sizeof(rr.address)) != 0)
                continue;
            snprintf(rr.status, sizeof(rr.status), "%s", st ? st : "");
            if ((rc = apply_bounce(f, msgid, rr.address, &c, &rr, "send", NULL)) != 0)
                break;
        }
    }
    json_decref(ev);
    return rc;
}

/* ---- HTTP ------------------------------------------------------------- */

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

static void serve_unsubscribe(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct feedback *f = opaque;
    const char *tok = req->path + 3;   /* "/u/" */
    char rcpt[ADDRESS_BUFSZ], list[128], id[ID_LEN + 1];
    if (unsub_lookup(f, tok, rcpt, sizeof(rcpt), list, sizeof(list)) != 0) {
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

static void serve_sns(void *opaque, const struct http_request *req, struct http_response *resp)
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

static void api_error(struct http_response *resp, int status, const char *type, const char *msg)
{
    json_t *o = json_pack("{s:s, s:s}", "__type", type, "message", msg);
    resp->status = status;
    resp->content_type = "application/json";
    resp->body = json_dumps(o, JSON_COMPACT);
    resp->body_len = strlen(resp->body);
    json_decref(o);
}

static void api_json(struct http_response *resp, json_t *o)
{
    resp->status = 200;
    resp->content_type = "application/json";
    resp->body = json_dumps(o, JSON_COMPACT);
    resp->body_len = strlen(resp->body);
    json_decref(o);
}

struct page {
    json_t *items;
    size_t want;
    const char *reason;
    int64_t start, end;
    char last[512];
    int more;
};

static int page_one(void *opaque, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct page *p = opaque;
    if (json_array_size(p->items) == p->want) {
        p->more = 1;
        return 1;
    }
    char err[128];
    json_t *o = suppression_record_parse(val, vlen, err, sizeof(err));
    if (!o)
        return 0;
    const char *reason = json_string_value(json_object_get(o, "reason"));
    const char *ts = json_string_value(json_object_get(o, "lastUpdateTime"));
    int64_t t = ts ? rfc3339_parse(ts) : 0;
    int keep = (!p->reason || (reason && strcmp(reason, p->reason) == 0)) &&
               (!p->start || t >= p->start) && (!p->end || t <= p->end);
    if (keep) {
        json_t *s = json_pack("{s:O, s:O, s:O}", "EmailAddress", json_object_get(o, "emailAddress"),
                              "Reason", json_object_get(o, "reason"), "LastUpdateTime",
                              json_object_get(o, "lastUpdateTime"));
        if (json_object_get(o, "list"))
            json_object_set(s, "List", json_object_get(o, "list"));
        json_array_append_new(p->items, s);
    }
    size_t n = klen < sizeof(p->last) - 1 ? klen : sizeof(p->last) - 1;
    memcpy(p->last, key, n);
    p->last[n] = '\0';
    json_decref(o);
    return 0;
}

static int64_t api_time(const char *s)
{
    if (!s)
        return 0;
    char *end;
    double d = strtod(s, &end);   /* SES accepts epoch seconds or ISO 8601 */
    if (*s && !*end)
        return (int64_t)(d * 1000);
    return rfc3339_parse(s);
}

static void api_list(struct feedback *f, const struct http_request *req, struct http_response *resp)
{
    const char *ps = http_query(req, "PageSize"), *nt = http_query(req, "NextToken");
    long size = ps ? strtol(ps, NULL, 10) : 100;
    if (size < 1 || size > 1000) {
        api_error(resp, 400, "BadRequestException", "PageSize must be 1..1000");
        return;
    }
    struct page p = { json_array(), (size_t)size, http_query(req, "Reason"),
                      api_time(http_query(req, "StartDate")), api_time(http_query(req, "EndDate")),
                      "", 0 };
    if (p.reason && !suppression_reason_valid(p.reason)) {
        api_error(resp, 400, "BadRequestException", "Reason must be BOUNCE, COMPLAINT, UNSUBSCRIBE or MANUAL");
        json_decref(p.items);
        return;
    }
    unsigned char *start = NULL;
    size_t slen = 0;
    if (nt && b64url_decode(nt, &start, &slen) != 0) {
        api_error(resp, 400, "BadRequestException", "bad NextToken");
        json_decref(p.items);
        return;
    }
    /* NextToken is the last key returned: resume after it.  kv_iter starts at
     * the key itself, so append a NUL, the smallest byte that sorts after. */
    if (start) {
        start = xrealloc(start, slen + 1);
        start[slen++] = '\0';
    }
    kv_iter(suppression_copy_kv(f->copy), start, slen, page_one, &p);
    free(start);
    json_t *out = json_pack("{s:o}", "SuppressedDestinationSummaries", p.items);
    if (p.more) {
        char *tok = b64url_encode(p.last, strlen(p.last));
        json_object_set_new(out, "NextToken", json_string(tok));
        free(tok);
    }
    api_json(resp, out);
}

static void serve_api(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct feedback *f = opaque;
    const char *auth = http_header(req, "Authorization");
    char err[256], key[512];
    if (!f->api_token) {
        api_error(resp, 403, "AccessDeniedException", "the suppression API is not enabled");
        return;
    }
    size_t tl = strlen(f->api_token);
    if (!auth || strncmp(auth, "Bearer ", 7) != 0 || strlen(auth + 7) != tl ||
        CRYPTO_memcmp(auth + 7, f->api_token, tl) != 0) {
        http_response_header(resp, "WWW-Authenticate", "Bearer");
        api_error(resp, 401, "UnauthorizedException", "missing or wrong bearer token");
        return;
    }
    const char *base = "/v2/email/suppression/addresses";
    const char *rest = req->path + strlen(base);
    if (strncmp(req->path, base, strlen(base)) != 0 || (*rest && *rest != '/')) {
        api_error(resp, 404, "NotFoundException", "no such resource");
        return;
    }
    if (*rest == '/')
        rest++;
    if (!*rest && strcmp(req->method, "GET") == 0) {
        api_list(f, req, resp);
        return;
    }
    /* PUT /addresses with a JSON body (SES v2) or PUT|GET|DELETE /addresses/<addr> */
    char jerr[160];
    json_t *body = req->body_len ? jsonx_loads(req->body, req->body_len, jerr, sizeof(jerr)) : NULL;
    const char *addr = *rest ? rest : json_string_value(json_object_get(body, "EmailAddress"));
    if (!addr || suppression_key(addr, NULL, key, sizeof(key)) != 0) {
        api_error(resp, 400, "BadRequestException", "not a valid email address");
        json_decref(body);
        return;
    }
    if (strcmp(req->method, "GET") == 0) {
        void *v = NULL;
        size_t vl = 0;
        if (kv_get(suppression_copy_kv(f->copy), key, strlen(key), &v, &vl) != 1) {
            api_error(resp, 404, "NotFoundException", "not on the suppression list");
        } else {
            char perr[128];
            json_t *o = suppression_record_parse(v, vl, perr, sizeof(perr));
            if (!o) {
                log_kv(LOG_ERROR, "unreadable suppression entry", "error", perr, NULL);
                api_error(resp, 500, "InternalFailure", "unreadable suppression entry");
                free(v);
                json_decref(body);
                return;
            }
            json_t *attrs = json_object();
            if (json_object_get(o, "messageId"))
                json_object_set(attrs, "MessageId", json_object_get(o, "messageId"));
            if (json_object_get(o, "feedbackId"))
                json_object_set(attrs, "FeedbackId", json_object_get(o, "feedbackId"));
            api_json(resp, json_pack("{s:{s:O, s:O, s:O, s:o}}", "SuppressedDestination",
                                     "EmailAddress", json_object_get(o, "emailAddress"), "Reason",
                                     json_object_get(o, "reason"), "LastUpdateTime",
                                     json_object_get(o, "lastUpdateTime"), "Attributes", attrs));
            json_decref(o);
        }
        free(v);
    } else if (strcmp(req->method, "PUT") == 0) {
        const char *reason = json_string_value(json_object_get(body, "Reason"));
        if (!suppression_reason_valid(reason)) {
            api_error(resp, 400, "BadRequestException", "Reason must be BOUNCE, COMPLAINT, UNSUBSCRIBE or MANUAL");
        } else if (suppression_publish(f->bus, addr, NULL, reason, "api", NULL, NULL, err, sizeof(err)) != 0) {
            api_error(resp, 503, "ServiceUnavailableException", "cannot record the change");
        } else {
            char *v = suppression_record(addr, NULL, reason, now_ms(), "api", NULL, NULL);
            suppression_copy_apply(f->copy, key, strlen(key), v, strlen(v));
            free(v);
            api_json(resp, json_object());
        }
    } else if (strcmp(req->method, "DELETE") == 0) {
        if (suppression_remove(f->bus, addr, NULL, err, sizeof(err)) != 0) {
            api_error(resp, 503, "ServiceUnavailableException", "cannot record the change");
        } else {
            suppression_copy_apply(f->copy, key, strlen(key), NULL, 0);
            api_json(resp, json_object());
        }
    } else {
        api_error(resp, 405, "MethodNotAllowed", "GET, PUT or DELETE");
    }
    json_decref(body);
}

static int ready(void *opaque, char *why, size_t len)
{
    struct feedback *f = opaque;
    if (!suppression_copy_ready(f->copy)) {
        snprintf(why, len, "suppression copy is catching up");
        return 0;
    }
    return 1;
}

/* ---- loop ------------------------------------------------------------- */

/* Both consumers run on the common loop.  The handlers publish their own
 * outputs (suppressions, events) and dedupe through the "seen" state, so
 * they report only OK or "try again": store or bus trouble is an
 * environment error, retried after half a second for as long as it lasts.
 * Malformed records are logged and skipped by the handlers themselves. */
static void on_feedback(void *opaque, const struct bus_record *r, size_t index, struct wl_batch *out,
                        struct wl_result *res)
{
    if (handle_feedback(opaque, r) != 0) {
        wl_result_set(res, WL_RETRY, WL_CAUSE_ENVIRONMENT, "feedback.apply", "store",
                      "cannot apply a feedback record (store or bus)");
        res->retry_ms = 500;
    }
}

static void on_event(void *opaque, const struct bus_record *r, size_t index, struct wl_batch *out,
                     struct wl_result *res)
{
    if (handle_event(opaque, r) != 0) {
        wl_result_set(res, WL_RETRY, WL_CAUSE_ENVIRONMENT, "feedback.event", "store",
                      "cannot apply a bounce event (store or bus)");
        res->retry_ms = 500;
    }
}

static const struct wl_handler feedback_handler = { .handle = on_feedback };
static const struct wl_handler event_handler = { .handle = on_event };

static int feedback_run(struct worker_env *env)
{
    const struct config *cfg = env->cfg;
    struct feedback *f = xcalloc(1, sizeof(*f));
    char err[512], dir[1024];
    int rc = 1;

    f->cfg = cfg;
    f->transient_threshold = (long)config_int(cfg, "feedback", "transient_threshold");
    f->transient_window_ms = config_duration_ms(cfg, "feedback", "transient_window");
    f->api_token = config_secret(cfg, "feedback", "api_token");
    f->n_arns = config_list(cfg, "feedback", "sns_topic_arns", &f->arns);
    f->cert_file = config_str(cfg, "feedback", "sns_cert_file");
    f->m_bounce = metric_counter("mailfleet_feedback_bounces_total", "Bounces applied.", NULL);
    f->m_complaint = metric_counter("mailfleet_feedback_complaints_total", "Complaints applied.", NULL);
    f->m_unsub = metric_counter("mailfleet_feedback_unsubscribes_total", "Unsubscribes applied.", NULL);
    f->m_forged = metric_counter("mailfleet_feedback_unverified_total",
                                 "Reports or unsubscribes without a valid token (ignored).", NULL);
    f->m_review = metric_counter("mailfleet_feedback_review_total", "Reports sent to fallback for review.", NULL);
    f->m_suppressed = metric_counter("mailfleet_feedback_suppressions_total", "Suppressions published.", NULL);
    f->m_sns_rejected = metric_counter("mailfleet_feedback_sns_rejected_total", "SNS posts rejected.", NULL);

    if (!(f->tokens = common_tokens(cfg, err, sizeof(err))) ||
        !(f->verp_key = verp_key_derive(f->tokens)) ||
        !(f->incoming = common_store(cfg, "store_incoming", err, sizeof(err)))) {
        log_kv(LOG_ERROR, "cannot start feedback", "error", err, NULL);
        goto out;
    }
    struct bus_options bo = { .client_id = "mailfleet-feedback" };
    if (!(f->bus = common_bus(cfg, &bo, err, sizeof(err)))) {
        log_kv(LOG_ERROR, "cannot open the bus", "error", err, NULL);
        goto out;
    }
    snprintf(dir, sizeof(dir), "%s/feedback", config_str(cfg, "mailfleet", "state_dir"));
    if (!(f->transient = kv_open(dir, "transient", 0, err, sizeof(err))) ||
        !(f->seen = kv_open(dir, "seen", 0, err, sizeof(err)))) {
        log_kv(LOG_ERROR, "cannot open feedback state", "error", err, NULL);
        goto out;
    }
    snprintf(dir, sizeof(dir), "%s/feedback/suppression", config_str(cfg, "mailfleet", "state_dir"));
    /* the copy is rebuilt from the topic at each start: its group never
     * commits, and is per host so pods don't share one */
    char host[128] = "local", group[256];
    gethostname(host, sizeof(host) - 1);
    snprintf(group, sizeof(group), "feedback.suppression.%s", host);
    if (!(f->copy = suppression_copy_open(dir, err, sizeof(err))) ||
        suppression_copy_start(f->copy, f->bus, group, env->stop, err, sizeof(err)) != 0) {
        log_kv(LOG_ERROR, "cannot follow the suppression list", "error", err, NULL);
        goto out;
    }
    const char *ft[] = { TOPIC_FEEDBACK, NULL }, *et[] = { TOPIC_EVENTS, NULL };
    if (!(f->fc = bus_consumer_new(f->bus, GROUP_FEEDBACK, ft, 1, err, sizeof(err))) ||
        !(f->ec = bus_consumer_new(f->bus, GROUP_FEEDBACK_EVENTS, et, 1, err, sizeof(err)))) {
        log_kv(LOG_ERROR, "cannot consume", "error", err, NULL);
        goto out;
    }
    http_route(env->public_http, "/u/", serve_unsubscribe, f);
    http_route(env->public_http, "/sns", serve_sns, f);
    http_route(env->public_http, "/v2/email/suppression/", serve_api, f);
    http_ready_add(env->http, "feedback", ready, f);
    worker_started(env);
    log_kv(LOG_INFO, "feedback started", NULL);
    size_t batch_max = worker_loop_batch_max(cfg, NULL);
    struct worker_loop_options fo = {
        .worker = "feedback", .group = GROUP_FEEDBACK, .batch_max = batch_max, .backoff_ms = 500,
        .poll_timeout_ms = 0, .stop = env->stop, .handler = &feedback_handler, .opaque = f,
    };
    struct worker_loop_options eo = fo;
    eo.group = GROUP_FEEDBACK_EVENTS;
    eo.handler = &event_handler;
    f->floop = worker_loop_new(f->fc, &fo);
    f->eloop = worker_loop_new(f->ec, &eo);
    int64_t next_expire = mono_ms() + 60000;
    while (!*env->stop) {
        /* One thread, two topics: a batch of each in turn, a short nap
         * when neither had anything. */
        int busy = worker_loop_step(f->floop) != 0;
        busy |= worker_loop_step(f->eloop) != 0;
        if (mono_ms() > next_expire) {
            kv_expire(f->seen, now_ms());
            kv_expire(f->transient, now_ms());
            next_expire = mono_ms() + 3600000;
        }
        if (!busy)
            sleep_unless_stopped(20, env->stop);
    }
    rc = 0;
out:
    /* no handler may run on f once it is freed */
    http_route_remove(env->public_http, "/u/", f);
    http_route_remove(env->public_http, "/sns", f);
    http_route_remove(env->public_http, "/v2/email/suppression/", f);
    http_ready_remove(env->http, "feedback", f);
    worker_loop_free(f->floop);
    worker_loop_free(f->eloop);
    bus_consumer_free(f->fc);
    bus_consumer_free(f->ec);
    suppression_copy_free(f->copy);
    kv_close(f->transient);
    kv_close(f->seen);
    store_close(f->incoming);
    tokens_free(f->tokens);
    free(f->verp_key);
    bus_close(f->bus);
    config_list_free(f->arns, f->n_arns);
    free(f->api_token);
    free(f);
    log_kv(LOG_INFO, "feedback stopped", NULL);
    return rc;
}

const struct worker_def feedback_worker = { "feedback", feedback_config_keys, feedback_run, 1 };
