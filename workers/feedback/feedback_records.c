/* feedback_records — applies one feedback record (DSN or ARF mail, an
 * unsubscribe, an SES notification) or one of send's Bounce events: the
 * token checks that decide which recipient a report may name, the policy
 * verdict, and the outputs (suppressions, events, fallback for review).
 *
 * Every output goes into the loop's batch (wl_output), so it is produced with
 * the batch's other outputs and its offsets (one Kafka transaction, one
 * local-queue commit), never one produce-and-wait per output.  The "seen"
 * state makes a redelivered record change nothing twice: what a batch's
 * records see for the first time is held with the batch (duplicates inside
 * it are caught there) and written once the batch has committed
 * (feedback_records_batch_end), so a batch that is redone is not taken for
 * a duplicate of itself; a record that is not done (retried) has its keys
 * dropped (feedback_records_forget), as the loop drops its outputs.  A crash
 * between the commit and that write loses the keys of one batch: the same
 * report arriving again is then applied again (an event twice, a transient
 * bounce counted twice: at-least-once).  Metrics and log lines are written
 * as records are handled, so a batch that is redone counts twice. */
#include "feedback_int.h"
#include "policy.h"
#include "reports.h"
#include "sns.h"

#include "address.h"
#include "bus.h"
#include "digest.h"
#include "event_record.h"
#include "fallback_record.h"
#include "feedback_record.h"
#include "jsonx.h"
#include "kv.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "strbuf.h"
#include "suppression.h"
#include "suppression_copy.h"
#include "timeutil.h"
#include "tokens.h"
#include "topics.h"
#include "verp.h"
#include "worker_loop.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct bus_header producer_hdr = { "mf.producer", "feedback", 8 };

/* ---- outputs ---------------------------------------------------------- */

/* Adds r to the batch being handled (copied). */
static void output(struct feedback *f, const struct bus_record *r)
{
    if (!f->out)
        panic("%s: no batch", __func__);
    wl_output(f->out, r);
}

static void emit_event(struct feedback *f, char *v, size_t len, const char *key)
{
    struct bus_record r = { .topic = TOPIC_EVENTS, .key = key, .key_len = strlen(key),
                            .value = v, .value_len = len, .headers = &producer_hdr,
                            .n_headers = 1, .partition = -1 };
    output(f, &r);
    free(v);
}

/* The mail a report is about, as far as a report tells. */
static struct event_mail report_mail(const char *message_id, const char **rcpt)
{
    return (struct event_mail){ .message_id = message_id && *message_id ? message_id : "unknown",
                                .source = "", .destination = rcpt, .n_destination = 1 };
}

static void emit_bounce(struct feedback *f, const char *message_id, const char *rcpt,
                        const struct bounce_class *c, const struct report_recipient *rr)
{
    struct event_mail m = report_mail(message_id, &rcpt);
    struct event_recipient er = { rcpt, rr && rr->action[0] ? rr->action : NULL,
                                  rr && rr->status[0] ? rr->status : NULL,
                                  rr && rr->diagnostic[0] ? rr->diagnostic : NULL };
    size_t len;
    char *v = event_record_bounce(&m, &er, c->type, c->subtype, NULL, now_ms(), &len);
    emit_event(f, v, len, message_id && *message_id ? message_id : rcpt);
}

static void emit_review(struct feedback *f, const char *feedback_id, const char *why)
{
    struct fallback_fields ff = { .feedback_id = feedback_id, .created_ms = now_ms(),
                                  .reason = "undetermined_bounce", .details = why };
    json_t *o = fallback_record_new(&ff);
    size_t len;
    char *v = jsonx_dumps(o, &len);
    json_decref(o);
    struct bus_record r = { .topic = TOPIC_FALLBACK, .key = feedback_id,
                            .key_len = strlen(feedback_id), .value = v, .value_len = len,
                            .partition = -1 };
    output(f, &r);
    free(v);
    metric_inc(f->m_review);
}

/* An address that cannot be a suppression key (the callers pass checked
 * ones) is logged and skipped: retrying would not make it valid. */
static void suppress(struct feedback *f, const char *addr, const char *list, const char *reason,
                     const char *source, const char *message_id, const char *feedback_id)
{
    char key[512];
    if (suppression_key(addr, list, key, sizeof(key)) != 0 || !suppression_reason_valid(reason)) {
        log_kv(LOG_ERROR, "not suppressed: not a valid address, list or reason", "reason", reason, NULL);
        return;
    }
    char *v = suppression_record(addr, list, reason, now_ms(), source, message_id, feedback_id);
    struct bus_record r = { .topic = TOPIC_SUPPRESSION, .key = key, .key_len = strlen(key), .value = v,
                            .value_len = strlen(v), .partition = -1 };
    output(f, &r);
    /* read-your-writes; a batch that never commits is undone at the next
     * start, which rebuilds the copy from the topic */
    suppression_copy_apply(f->copy, key, strlen(key), v, strlen(v));
    free(v);
    metric_inc(f->m_suppressed);
    log_kv(LOG_INFO, "suppressed", "reason", reason, "source", source, "message_id",
           message_id ? message_id : "", NULL);
}

/* "message|recipient|what", or its SHA-256 when that is longer than a kv
 * key may be (an SNS message id, a long address and status): a batch's keys
 * are written together, and one too long would refuse them all. */
static void seen_key(char *key, size_t len, const char *message_id, const char *rcpt, const char *what)
{
    snprintf(key, len, "%s|%s|%s", message_id ? message_id : "", rcpt, what);
    if (strlen(key) > 256) {
        char hex[SHA256_HEX_LEN + 1];
        sha256_hex(key, strlen(key), hex);
        snprintf(key, len, "sha256:%s", hex);
    }
}

/* 1 the first time (message, recipient, what) is seen; 0 for a duplicate
 * (in the db, or earlier in this batch).  The key is held with the batch
 * until it commits. */
static int first_time(struct feedback *f, const char *message_id, const char *rcpt, const char *what)
{
    char key[900];
    seen_key(key, sizeof(key), message_id, rcpt, what);
    for (size_t i = 0; i < f->n_seen; i++)
        if (strcmp(f->seen_batch[i].key, key) == 0)
            return 0;
    if (kv_get(f->seen, key, strlen(key), NULL, NULL) == 1)
        return 0;   /* on error, process (at-least-once) */
    if (f->n_seen == f->cap_seen) {
        f->cap_seen = f->cap_seen ? f->cap_seen * 2 : 32;
        f->seen_batch = xrealloc(f->seen_batch, f->cap_seen * sizeof(*f->seen_batch));
    }
    f->seen_batch[f->n_seen++] = (struct seen_held){ xstrdup(key), f->out_index };
    return 1;
}

void feedback_records_forget(struct feedback *f, size_t index)
{
    for (size_t i = f->n_seen; i-- > 0;)
        if (f->seen_batch[i].index == index) {
            free(f->seen_batch[i].key);
            f->seen_batch[i] = f->seen_batch[--f->n_seen];
        }
}

void feedback_records_batch_end(struct feedback *f, size_t committed)
{
    struct kv_item *items = xcalloc(f->n_seen ? f->n_seen : 1, sizeof(*items));
    size_t n = 0;
    int64_t exp = now_ms() + 30LL * 86400000;
    for (size_t i = 0; i < f->n_seen; i++)
        if (f->seen_batch[i].index < committed)
            items[n++] = (struct kv_item){ f->seen_batch[i].key, strlen(f->seen_batch[i].key), "", 0, exp };
    /* a failure only means a redelivery of these records is applied again:
     * suppressions are idempotent, events at-least-once */
    if (kv_put_many(f->seen, items, n) != 0)
        log_kv(LOG_WARN, "cannot record which reports were applied", NULL);
    free(items);
    for (size_t i = 0; i < f->n_seen; i++)
        free(f->seen_batch[i].key);
    f->n_seen = 0;
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
    const char *status = rr && rr->status[0] ? rr->status : c->subtype;
    if (!first_time(f, message_id, rcpt, status))
        return 0;
    metric_inc(f->m_bounce);
    switch (policy_for_bounce(c)) {
    case VERDICT_SUPPRESS:
        suppress(f, rcpt, NULL, "BOUNCE", source, message_id, feedback_id);
        break;
    case VERDICT_COUNT:
        /* a batch that is redone counts this bounce again: at worst one
         * suppression a little early, never a lost one */
        if (count_transient(f, rcpt))
            suppress(f, rcpt, NULL, "BOUNCE", source, message_id, feedback_id);
        break;
    case VERDICT_REVIEW: {
        /* the operator's only word of it: whom, and what the server said */
        char why[1024];
        snprintf(why, sizeof(why), "bounce of undetermined type for %s%s%s", rcpt,
                 rr && rr->diagnostic[0] ? ": " : "", rr ? rr->diagnostic : "");
        const char *id = feedback_id ? feedback_id : message_id && *message_id ? message_id : rcpt;
        emit_review(f, id, why);
        break;
    }
    case VERDICT_IGNORE:
        break;
    }
    if (strcmp(source, "send") != 0)
        emit_bounce(f, message_id, rcpt, c, rr);
    return 0;
}

static int apply_complaint(struct feedback *f, const char *message_id, const char *rcpt,
                           const char *feedback_type, const char *source, const char *feedback_id)
{
    if (!first_time(f, message_id, rcpt, "complaint"))
        return 0;
    metric_inc(f->m_complaint);
    if (policy_for_complaint(feedback_type) == VERDICT_SUPPRESS &&
        config_bool(f->cfg, "feedback", "suppress_on_complaint"))
        suppress(f, rcpt, NULL, "COMPLAINT", source, message_id, feedback_id);
    struct event_mail m = report_mail(message_id, &rcpt);
    size_t len;
    char *v = event_record_complaint(&m, rcpt, feedback_type, now_ms(), &len);
    emit_event(f, v, len, message_id && *message_id ? message_id : rcpt);
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
    return verp_keys_check(f->verp_keys, tag, tok, a, msgid) == 0 ? 0 : -1;
}

/* One-click token "u|rcpt|list" -> address, list. */
int feedback_records_unsub_lookup(struct feedback *f, const char *tok, char *rcpt, size_t rlen, char *list,
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
    if (!first_time(f, fid, rcpt, "unsubscribe"))
        return 0;
    suppress(f, rcpt, list, "UNSUBSCRIBE", "unsubscribe", NULL, fid);
    metric_inc(f->m_unsub);
    size_t len;
    char *v = event_record_unsubscribe(rcpt, list, method, fid, now_ms(), &len);
    emit_event(f, v, len, rcpt);
    return 0;
}

static int handle_unsubscribe(struct feedback *f, json_t *rec, const char *fid)
{
    json_t *u = json_object_get(rec, "unsubscribe");
    const char *method = json_string_value(json_object_get(u, "method"));
    char rcpt[ADDRESS_BUFSZ], list[128] = "", tok[128] = "", msgid[VERP_ID_LEN + 1];
    if (method && strcmp(method, "one-click") == 0) {
        const char *t = json_string_value(json_object_get(u, "token"));
        if (t && feedback_records_unsub_lookup(f, t, rcpt, sizeof(rcpt), list, sizeof(list)) == 0)
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
int feedback_records_handle(struct feedback *f, const struct bus_record *r)
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
int feedback_records_handle_event(struct feedback *f, const struct bus_record *r)
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
            const char *diag = json_string_value(json_object_get(br, "diagnosticCode"));
            if (!a || address_normalize(a, rr.address, sizeof(rr.address)) != 0)
                continue;
            snprintf(rr.status, sizeof(rr.status), "%s", st ? st : "");
            snprintf(rr.diagnostic, sizeof(rr.diagnostic), "%s", diag ? diag : "");
            if ((rc = apply_bounce(f, msgid, rr.address, &c, &rr, "send", NULL)) != 0)
                break;
        }
    }
    json_decref(ev);
    return rc;
}
