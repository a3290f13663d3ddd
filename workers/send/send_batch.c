/* send_batch — what a lane does with one batch from the common loop.
 *
 * batch_begin parses every record, decides per recipient (sent marker ->
 * the Delivery event again, suppressed -> Suppressed event, else a transport
 * job), delivers every job of the batch at once, and builds each event and
 * retry-tier record; handle() then gives the loop each record's outcome and
 * its share of the outputs.  The sent marker is journaled in the
 * transport's done callback, and flushed to its db before any output or
 * commit (send_before_commit).
 *
 * A transfer the transport held (TRANSPORT_HOLD: the service refuses our
 * account, not the recipient) bounces nobody and makes no event: the batch
 * is cut at the first record with a held (or, after the hold, unstarted)
 * transfer, which the loop retries as an environment error once the hold
 * (send_hold.h) ends; records before it commit as usual.  Recipients of the
 * cut records that were delivered meanwhile have their sent markers, so
 * the retry only produces their Delivery events again.  One exception: a
 * record SES has denied access (AccessDenied) for longer than [send]
 * access_denied_max is that record's failure and goes to the DLQ, since an
 * IAM condition on its recipients would otherwise hold its partition for
 * ever.
 *
 * TRANSPORT_UNDETERMINED (SES refused the message for this recipient
 * without showing the address is bad: sandbox, content, size, a bad
 * request) is a Bounce of type Undetermined: feedback sends it to review
 * and suppresses nobody. */
#include "send_int.h"
#include "bus.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "send_hold.h"
#include "strbuf.h"
#include "suppression_copy.h"
#include "timeutil.h"
#include "topics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/* Outputs of a batch, each tagged with the record it belongs to; handle()
 * hands a record's share to the loop. */
struct outputs {
    struct bus_record *recs;
    size_t *owner;
    size_t n, cap;
    void **owned;
    size_t n_owned, cap_owned;
};

static void *own(struct outputs *o, void *p)
{
    if (o->n_owned == o->cap_owned) {
        o->cap_owned = o->cap_owned ? o->cap_owned * 2 : 64;
        o->owned = xrealloc(o->owned, o->cap_owned * sizeof(void *));
    }
    o->owned[o->n_owned++] = p;
    return p;
}

static void out_add(struct outputs *o, size_t owner, const char *topic, const char *key, char *value,
                    size_t vlen, struct bus_header *hs, size_t nh)
{
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 64;
        o->recs = xrealloc(o->recs, o->cap * sizeof(*o->recs));
        o->owner = xrealloc(o->owner, o->cap * sizeof(*o->owner));
    }
    o->owner[o->n] = owner;
    own(o, value);
    if (hs)
        own(o, hs);
    o->recs[o->n++] = (struct bus_record){
        .topic = topic, .key = key, .key_len = key ? strlen(key) : 0, .value = value,
        .value_len = vlen, .headers = hs, .n_headers = nh, .partition = -1,
    };
}

static void outputs_free(struct outputs *o)
{
    for (size_t i = 0; i < o->n_owned; i++)
        free(o->owned[i]);
    free(o->owned);
    free(o->recs);
    free(o->owner);
}

/* The transport refused our account: every lane waits (send_hold.h).  One
 * log line per wait, with the service's one-line reply (transport_ses keeps
 * no message that could quote credentials; the mail is never in it). */
static void note_hold(struct lane *l, const struct transport_job *job, int64_t started)
{
    int64_t wait = send_hold_refused(l->w->hold, job->hold_reason, started, mono_ms());
    if (wait <= 0)
        return;
    char ms[24];
    snprintf(ms, sizeof(ms), "%lld", (long long)wait);
    log_kv(LOG_ERROR, "the transport refuses our account, not the recipient: sending held, nobody bounced",
           "transport", transport_name(l->t), "reason", job->hold_reason, "reply", job->response,
           "retry_in_ms", ms, NULL);
}

/* Called by the transport the moment one recipient's transfer ends. */
static void on_job_done(void *opaque, struct transport_job *job)
{
    struct job_ctx *j = opaque;
    struct sender *w = j->lane->w;
    j->done_ms = now_ms();
    worker_loop_progress(j->lane->loop);   /* a long batch of transfers is not a stuck one */
    metric_observe(w->m.attempt_seconds, (double)job->elapsed_us / 1e6);
    int64_t started = (mono_us() - job->elapsed_us) / 1000;
    if (job->result == TRANSPORT_HOLD)
        note_hold(j->lane, job, started);
    else if (job->code != 0 && send_hold_answered(w->hold, started))
        /* any answer but a refusal (a delivery, a recipient's bounce, a
         * 5xx) shows the service takes our requests again */
        log_kv(LOG_INFO, "the transport answers our requests again: hold ended", "transport",
               transport_name(j->lane->t), NULL);
    if (job->result != TRANSPORT_OK)
        return;
    int rc = sent_journal_add(j->lane->journal, j->rc->id, j->rcpt, job->response);
    if (rc < 0)
        log_kv(LOG_ERROR, "cannot journal a sent marker; it reaches the db with the batch", "id", j->rc->id,
               "error", strerror(-rc), NULL);
}

/* ---- outputs ---- */

static const char *bounce_subtype(const char *status)
{
    return strncmp(status, "5.1.", 4) == 0 ? "NoEmail" : "General";
}

static void add_event(struct outputs *o, struct rec_ctx *rc, char *ev, size_t len)
{
    out_add(o, rc->idx, TOPIC_EVENTS, rc->id, ev, len, NULL, 0);
}

/* Tier for a record that has made `attempt` attempts before this one. */
static size_t tier_for(const struct sender *w, int attempt)
{
    size_t t = attempt < 0 ? 0 : (size_t)attempt;
    return t >= w->n_tiers ? w->n_tiers - 1 : t;
}

/* Re-publishes the record for the recipients that got a 4xx: same id,
 * created_at and links; attempt + 1; first_attempt_at kept or set; not_before
 * = now + the tier's delay.  Keyed like the input (inbound_id). */
static void add_retry(struct lane *l, struct outputs *o, struct rec_ctx *rc)
{
    struct sender *w = l->w;
    size_t tier = tier_for(w, rc->attempt);
    int64_t nb = now_ms() + w->tier_ms[tier];
    char buf[32];
    json_t *d = json_deep_copy(rc->doc);
    json_object_set(d, "recipients", rc->retry);
    json_object_set_new(d, "attempt", json_integer(rc->attempt + 1));
    json_object_set_new(d, "first_attempt_at", json_string(rfc3339_ms(rc->first_ms, buf, sizeof(buf))));
    json_object_set_new(d, "not_before", json_string(rfc3339_ms(nb, buf, sizeof(buf))));
    char *v = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    if (!v)
        panic("%s: json_dumps failed", __func__);
    struct bus_header *hs = xcalloc(1, sizeof(*hs));
    char *nbs = own(o, xmalloc(24));
    snprintf(nbs, 24, "%lld", (long long)nb);
    hs[0] = (struct bus_header){ "mf.not_before", nbs, strlen(nbs) };
    char *topic = own(o, xmalloc(strlen(TOPIC_OUTBOUND_RETRY) + strlen(w->tiers[tier]) + 1));
    sprintf(topic, "%s%s", TOPIC_OUTBOUND_RETRY, w->tiers[tier]);
    char *key = rc->r->key ? own(o, xstrndup(rc->r->key, rc->r->key_len))
                           : (char *)(rc->inbound_id ? rc->inbound_id : rc->id);
    out_add(o, rc->idx, topic, key, v, strlen(v), hs, 1);
}

/* Decides per recipient: already sent (event again), suppressed (event), or
 * a transport job with its envelope and per-recipient headers.  Returns the
 * number of jobs filled in. */
static size_t plan_jobs(struct lane *l, struct rec_ctx *rcs, size_t n_rcs, struct outputs *o,
                        struct transport_job *jobs, struct job_ctx *jcs)
{
    struct sender *w = l->w;
    size_t n_jobs = 0;
    int64_t now = now_ms();
    char err[256], reason[128];

    for (size_t i = 0; i < n_rcs; i++) {
        struct rec_ctx *rc = &rcs[i];
        if (rc->dead_class)
            continue;
        rc->retry = json_array();
        for (size_t k = 0; k < rc->n_rcpts; k++) {
            struct job_ctx *j = &jcs[n_jobs];
            size_t len;
            snprintf(j->rcpt, sizeof(j->rcpt), "%s", rc->rcpts[k]);
            /* The same outbound record twice in one batch (a redelivery under
             * at-least-once): its markers are not written yet, so only this
             * batch knows the recipient is already planned. */
            int planned = 0;
            for (size_t x = 0; x < n_jobs && !planned; x++)
                planned = strcmp(jcs[x].rc->id, rc->id) == 0 && strcmp(jcs[x].rcpt, j->rcpt) == 0;
            if (planned) {
                log_kv(LOG_INFO, "duplicate in this batch; sent once", "id", rc->id, NULL);
                continue;
            }
            char *prev = NULL;
            if (sent_journal_get(l->journal, rc->id, j->rcpt, &prev) == 1) {
                /* Delivered before a crash or redelivery: never again.  The
                 * Delivery event may have been lost with the crash, so it is
                 * produced again (consumers treat events as at-least-once). */
                char resp[512];
                snprintf(resp, sizeof(resp), "%s", prev);
                free(prev);
                char *ev = event_record_delivery(&rc->mail, j->rcpt, resp, now - rc->created_ms,
                                                 transport_peer(l->t), now, &len);
                add_event(o, rc, ev, len);
                log_kv(LOG_INFO, "already delivered; not sent again", "id", rc->id, NULL);
                continue;
            }
            int per_list = 0;
            if (suppression_copy_check(w->supp, j->rcpt, rc->list, reason, sizeof(reason), &per_list) == 1) {
                char *ev = event_record_suppressed(&rc->mail, j->rcpt, reason, per_list ? rc->list : NULL, now,
                                                   &len);
                add_event(o, rc, ev, len);
                metric_inc(w->m.suppressed);
                metric_inc(w->m.suppressed_res);
                continue;
            }
            char *tok = send_record_verp_token(w, rc->id, j->rcpt, "verp");
            snprintf(j->mail_from, sizeof(j->mail_from), "%s+%s@%s", config_str(w->cfg, "send", "bounce_prefix"),
                     tok, config_str(w->cfg, "send", "bounce_domain"));
            free(tok);
            if (send_record_prefix(w, rc, j, err, sizeof(err)) != 0) {
                /* A signing failure is ours, not the recipient's: retry later. */
                log_kv(LOG_ERROR, "cannot build the message copy", "id", rc->id, "error", err, NULL);
                json_array_append_new(rc->retry, json_string(j->rcpt));
                continue;
            }
            j->lane = l;
            j->rc = rc;
            jobs[n_jobs] = (struct transport_job){
                .id = rc->id, .mail_from = j->mail_from, .rcpt = j->rcpt, .from_addr = rc->from_addr,
                .prefix = j->prefix, .prefix_len = j->prefix_len, .body = rc->body, .body_len = rc->body_len,
                .opaque = j,
            };
            n_jobs++;
        }
    }
    return n_jobs;
}

/* The index of the first record with a held transfer (TRANSPORT_HOLD, or
 * not run after one), n_rcs if none; -1 when a job never ran because send
 * is stopping. */
static ssize_t find_cut(struct sender *w, struct transport_job *jobs, struct job_ctx *jcs, size_t n_jobs,
                        size_t n_rcs)
{
    int held = 0;
    for (size_t i = 0; i < n_jobs; i++)
        held |= jobs[i].result == TRANSPORT_HOLD;
    size_t cut = n_rcs;
    for (size_t i = 0; i < n_jobs; i++) {
        if (jobs[i].result == TRANSPORT_NOT_RUN && (!held || *w->stop))
            return -1;
        if ((jobs[i].result == TRANSPORT_NOT_RUN || jobs[i].result == TRANSPORT_HOLD) && jcs[i].rc->idx < cut)
            cut = jcs[i].rc->idx;
    }
    return (ssize_t)cut;
}

/* One event per finished job of the records before cut (the rest come
 * again; only their deliveries, which are not redone, count now); 4xx
 * recipients collected for the next tier unless the max retry age is used
 * up. */
static void report_outcomes(struct lane *l, struct transport_job *jobs, struct job_ctx *jcs, size_t n_jobs,
                            size_t cut, struct outputs *o)
{
    struct sender *w = l->w;
    int64_t now = now_ms();
    for (size_t i = 0; i < n_jobs; i++) {
        struct transport_job *job = &jobs[i];
        struct rec_ctx *rc = jcs[i].rc;
        if (rc->idx >= cut) {
            if (job->result == TRANSPORT_OK)
                metric_inc(w->m.delivered);
            continue;
        }
        const char *peer = transport_peer(l->t);
        size_t len = 0;
        char *ev = NULL, diag[600];
        snprintf(diag, sizeof(diag), "smtp; %s", job->response);
        struct event_recipient er = { job->rcpt, "failed", job->status, diag };
        if (job->result == TRANSPORT_OK) {
            ev = event_record_delivery(&rc->mail, job->rcpt, job->response, jcs[i].done_ms - rc->created_ms,
                                       peer, jcs[i].done_ms, &len);
            metric_inc(w->m.delivered);
        } else if (job->result == TRANSPORT_PERM) {
            ev = event_record_bounce(&rc->mail, &er, "Permanent", bounce_subtype(job->status), peer, now, &len);
            metric_inc(w->m.bounced_perm);
        } else if (job->result == TRANSPORT_UNDETERMINED) {
            ev = event_record_bounce(&rc->mail, &er, "Undetermined", "Undetermined", peer, now, &len);
            metric_inc(w->m.bounced_undetermined);
        } else {
            int64_t expires = rc->first_ms + w->max_age_ms;
            if (now + w->tier_ms[tier_for(w, rc->attempt)] > expires) {
                ev = event_record_bounce(&rc->mail, &er, "Transient", "General", peer, now, &len);
                metric_inc(w->m.bounced_trans);
            } else {
                er.action = NULL;   /* not failed (yet) */
                ev = event_record_delay(&rc->mail, &er, expires, peer, now, &len);
                json_array_append_new(rc->retry, json_string(job->rcpt));
                metric_inc(w->m.deferred);
            }
        }
        add_event(o, rc, ev, len);
    }
}

/* What batch_begin worked out for the batch, read by handle(). */
struct send_batch {
    struct rec_ctx *rcs;
    size_t n, upto;                /* records from upto on were not parsed (transient) */
    struct transport_job *jobs;
    struct job_ctx *jcs;
    size_t n_jobs;
    size_t cut;                    /* the first record with a held transfer; n if none */
    const char *denied;            /* SES's reply when the cut record is denied for too long */
    struct outputs o;
};

/* The job of record idx that the transport refused itself; NULL when none
 * was (its transfers were not started after another record's refusal). */
static const struct transport_job *record_refusal(const struct send_batch *b, size_t idx)
{
    for (size_t i = 0; i < b->n_jobs; i++)
        if (b->jcs[i].rc->idx == idx && b->jobs[i].result == TRANSPORT_HOLD)
            return &b->jobs[i];
    return NULL;
}

/* An AccessDenied can be an IAM condition on one record's recipients
 * rather than on the account.  The lane remembers since when SES has
 * denied the record it is cut at; once that is access_denied_max, SES's
 * reply (the record then goes to the DLQ), else NULL.  The clock restarts
 * when that record goes through or is refused for another reason, and when
 * send restarts.  Batches of other partitions in between leave it be. */
static const char *denied_too_long(struct lane *l, const struct send_batch *b)
{
    for (size_t i = 0; i < b->cut && l->denied_id[0]; i++)
        if (b->rcs[i].id && strcmp(b->rcs[i].id, l->denied_id) == 0)
            l->denied_id[0] = '\0';
    const struct transport_job *job = b->cut < b->upto ? record_refusal(b, b->cut) : NULL;
    if (!job)
        return NULL;   /* no cut, or behind another record's refusal: nothing new */
    const char *id = b->rcs[b->cut].id;
    int same = strcmp(l->denied_id, id) == 0;
    if (strcmp(job->hold_reason, "access_denied") != 0) {
        if (same)
            l->denied_id[0] = '\0';
        return NULL;
    }
    int64_t now = mono_ms();
    if (!same) {
        snprintf(l->denied_id, sizeof(l->denied_id), "%s", id);
        l->denied_since = now;
    }
    return now - l->denied_since >= l->w->denied_max_ms ? job->response : NULL;
}

static void send_batch_end(void *opaque, size_t committed)
{
    struct lane *l = opaque;
    struct send_batch *b = l->b;
    if (!b)
        return;
    for (size_t i = 0; i < b->n_jobs; i++)
        free(b->jcs[i].prefix);
    for (size_t i = 0; i < b->n; i++)
        send_record_free(&b->rcs[i]);
    free(b->jobs);
    free(b->jcs);
    free(b->rcs);
    outputs_free(&b->o);
    free(b);
    l->b = NULL;
}

/* Parses every record (a transient store error stops there: handle() asks
 * the loop to retry from that record), delivers all recipients at once,
 * then builds every event and retry record.  Non-zero when stopping left
 * transfers not run: the loop commits nothing and the batch comes back
 * after the restart, where the sent markers skip whoever already got it. */
static int send_batch_begin(void *opaque, struct bus_record *const *recs, size_t n)
{
    struct lane *l = opaque;
    struct sender *w = l->w;
    char err[256];
    /* markers of a batch that was not committed (cut, redone) reach the db
     * first; a failure here leaves them where the lookups still see them */
    if (sent_journal_flush(l->journal, err, sizeof(err)) != 0)
        log_kv(LOG_WARN, "cannot flush sent markers; retried at the commit", "error", err, NULL);
    struct send_batch *b = xcalloc(1, sizeof(*b));
    size_t cap_jobs = 0;
    l->b = b;
    b->rcs = xcalloc(n, sizeof(*b->rcs));
    b->n = n;
    b->upto = n;
    for (size_t i = 0; i < n; i++) {
        b->rcs[i].r = recs[i];
        b->rcs[i].idx = i;
        int pr = send_record_parse(l, &b->rcs[i]);
        if (pr < 0) {
            b->upto = i;
            break;
        }
        if (pr == 0)
            cap_jobs += b->rcs[i].n_rcpts;
    }
    b->jobs = xcalloc(cap_jobs ? cap_jobs : 1, sizeof(*b->jobs));
    b->jcs = xcalloc(cap_jobs ? cap_jobs : 1, sizeof(*b->jcs));
    int64_t began = mono_ms();
    b->n_jobs = plan_jobs(l, b->rcs, b->upto, &b->o, b->jobs, b->jcs);
    if (b->n_jobs)
        transport_send(l->t, b->jobs, b->n_jobs, w->rl, on_job_done, w->stop);
    ssize_t cut = find_cut(w, b->jobs, b->jcs, b->n_jobs, b->upto);
    if (cut < 0)
        return -1;
    b->cut = (size_t)cut;
    b->denied = denied_too_long(l, b);
    int refused = 0;
    for (size_t i = 0; i < b->n_jobs; i++)
        refused |= b->jobs[i].result == TRANSPORT_HOLD;
    /* A batch after the wait that met no refusal ends the hold, also when
     * it made no transfer (its recipients suppressed or delivered
     * meanwhile): nothing says the transport still refuses us. */
    if (!refused && send_hold_batch_done(w->hold, began))
        log_kv(LOG_INFO, "a batch went through without a refusal: hold ended", "transport", transport_name(l->t),
               NULL);
    report_outcomes(l, b->jobs, b->jcs, b->n_jobs, b->cut, &b->o);
    for (size_t i = 0; i < b->cut; i++)
        if (!b->rcs[i].dead_class && b->rcs[i].retry && json_array_size(b->rcs[i].retry) > 0)
            add_retry(l, &b->o, &b->rcs[i]);
    return 0;
}

static void send_handle(void *opaque, const struct bus_record *r, size_t index, struct wl_batch *out,
                        struct wl_result *res)
{
    struct lane *l = opaque;
    struct send_batch *b = l->b;
    struct rec_ctx *rc = &b->rcs[index];
    if (index >= b->upto) {
        /* The message could not be read (store trouble): not the record's
         * fault, so retried until it works, never dead-lettered. */
        wl_result_set(res, WL_RETRY, WL_CAUSE_ENVIRONMENT, "send.store", "store",
                      "cannot read the message; will retry");
        res->retry_ms = 1000;
        return;
    }
    if (index == b->cut && b->denied) {
        /* Denied for access_denied_max: this record's failure (retry, and
         * with send's one attempt the DLQ), so its partition moves on. */
        wl_result_set(res, WL_RETRY, WL_CAUSE_RECORD, "send.transport", "policy",
                      "SES denied access for this record for %lld s or more (access_denied_max; an IAM "
                      "condition on its recipients?); nobody bounced: %s",
                      (long long)(l->w->denied_max_ms / 1000), b->denied);
        l->denied_id[0] = '\0';   /* replayed from the DLQ, it gets the whole time again */
        return;
    }
    if (index >= b->cut) {
        /* Not the record's fault: retried for ever, never dead-lettered. */
        int64_t wait = send_hold_wait(l->w->hold, mono_ms());
        wl_result_set(res, WL_RETRY, WL_CAUSE_ENVIRONMENT, "send.transport", "transport",
                      "the transport refuses our account; no recipient bounced; will retry after the hold");
        res->retry_ms = wait > 0 ? wait : 1;
        return;
    }
    if (rc->dead_class) {
        wl_result_set(res, WL_DEAD, WL_CAUSE_RECORD, rc->dead_stage ? rc->dead_stage : "send.parse",
                      rc->dead_class, "%s", rc->dead_msg);
        res->attempts = rc->attempt + 1;
        metric_inc(l->w->m.dead);
        return;
    }
    for (size_t i = 0; i < b->o.n; i++)
        if (b->o.owner[i] == index)
            wl_output(out, &b->o.recs[i]);
}

/* Only retry tiers wait: a record is due at its mf.not_before. */
static int64_t not_before(const struct bus_record *r)
{
    const struct bus_header *h = bus_record_header(r, "mf.not_before");
    if (h && h->value_len > 0 && h->value_len < 24) {
        char b[24];
        memcpy(b, h->value, h->value_len);
        b[h->value_len] = '\0';
        return strtoll(b, NULL, 10);
    }
    return 0;
}

static int64_t send_not_before(void *opaque, const struct bus_record *r)
{
    const struct lane *l = opaque;
    return l->tier < 0 ? 0 : not_before(r);
}

/* The sent markers of the batch are durable before any of its outputs or
 * offsets: a failure is an environment error, and the batch comes again
 * (its delivered recipients skipped by their markers). */
static int send_before_commit(void *opaque, char *err, size_t errlen)
{
    struct lane *l = opaque;
    return sent_journal_flush(l->journal, err, errlen);
}

const struct wl_handler send_batch_handler = {
    .batch_begin = send_batch_begin, .handle = send_handle, .batch_end = send_batch_end,
    .before_commit = send_before_commit,
    .not_before = send_not_before,
};
