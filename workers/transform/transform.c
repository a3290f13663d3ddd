/* transform — consumes mailfleet.inbound (group "transform"), reads each raw
 * mail from store:incoming, and produces:
 *   mailfleet.outbound  the mail to send (outbound.v1, key = inbound id)
 *   mailfleet.fallback  one record per problem found (fallback.v1)
 *   store:attachments   every attachment, decoded, under a key we build
 * through the common worker loop (worker_loop.h): a batch's outputs and its
 * input offsets commit together (one transaction in Kafka transactional
 * mode).  The stores' puts skip their own fsyncs; one store_sync per batch,
 * before that commit, makes them durable together.
 *
 * Guarantees: every inbound record ends as outbound and/or fallback, or in
 * mailfleet.inbound.dlq after bounded retries with mf.error.* headers.
 * Redelivery is idempotent: attachment keys, the outbound id and the
 * Message-ID derive from the inbound id, so a replay overwrites the same
 * objects and send's sent markers absorb the repeated record.
 *
 * Security posture: the mail is hostile input.  It is parsed under limits
 * (parts, depth, header bytes, decoded size), never executed or rendered;
 * object keys never contain user text beyond [A-Za-z0-9._-]; nothing from
 * the body reaches a header unencoded.  Writes only to the stores, the bus
 * and unlinked temp files in tmp_dir.  Never logs bodies or link keys. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>

#include "address.h"
#include "bus.h"
#include "ids.h"
#include "common_config.h"
#include "fallback_record.h"
#include "http.h"
#include "inbound_record.h"
#include "jsonx.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "strbuf.h"
#include "timeutil.h"
#include "tokens.h"
#include "topics.h"
#include "transform.h"
#include "topics.h"
#include "transform_worker.h"
#include "worker.h"
#include "worker_loop.h"

/* --- the worker ------------------------------------------------------ */

struct tw {
    const struct config *cfg;
    struct transform_settings_owned so;
    struct transform *t;
    struct tokens *tok;
    struct store *incoming, *attachments;
    struct bus *bus;
    struct bus_consumer *cons;
    struct worker_loop *loop;
    uint64_t inline_max;
    struct metric *m_ok, *m_fallback, *m_att, *m_att_bytes;
};

static void json_set_str(json_t *o, const char *k, const char *v)
{
    json_object_set_new(o, k, json_string(v ? v : ""));
}

static json_t *links_json(const struct transform_result *r)
{
    json_t *a = json_array();
    char ts[32];
    for (size_t i = 0; i < r->n_links; i++) {
        const struct transform_link *l = &r->links[i];
        if (l->blocked || !l->url)   /* not linked, or cut short by a limit */
            continue;
        json_t *o = json_object();
        json_set_str(o, "name", l->name);
        json_set_str(o, "content_type", l->content_type);
        json_object_set_new(o, "size", json_integer((json_int_t)l->size));
        json_set_str(o, "sha256", l->sha256);
        json_set_str(o, "key", l->key);
        json_set_str(o, "expires_at", rfc3339_ms(l->expires_s * 1000, ts, sizeof(ts)));
        json_set_str(o, "url", l->url);
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *str_array(char **l, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(l[i]));
    return a;
}

static json_t *fallback_json(const struct inbound_record *in, const struct transform_result *r,
                             unsigned bit, const char *reason, int sent)
{
    char id[ID_LEN + 1], salt[64], buf[512];
    snprintf(salt, sizeof(salt), "fallback|%s", reason);
    transform_derive_id(in->id, salt, id);
    const char *details = r->detail;
    if (bit == TR_SOME_INVALID || (bit == TR_NO_RECIPIENT && r->n_invalid)) {
        snprintf(buf, sizeof(buf), "%zu coded address(es) failed validation%s", r->n_invalid,
                 sent ? "; sent to the valid ones" : "");
        details = buf;
    } else if (bit == TR_BLOCKED) {
        details = "an attachment has a blocked file extension and was not linked";
    } else if (bit == TR_NOT_ALLOWED) {
        snprintf(buf, sizeof(buf), "%zu coded address(es) outside rule %s's allowed_recipients%s",
                 r->n_not_allowed, in->rule ? in->rule : "", sent ? "; sent to the allowed ones" : "");
        details = buf;
    }
    json_t *flagged = NULL;
    if (bit == TR_BLOCKED) {
        flagged = json_array();
        for (size_t i = 0; i < r->n_links; i++) {
            if (!r->links[i].blocked)
                continue;
            json_t *f = json_object();
            json_set_str(f, "name", r->links[i].name);
            json_set_str(f, "why", "blocked_extension");
            json_object_set_new(f, "size", json_integer((json_int_t)r->links[i].size));
            json_set_str(f, "sha256", r->links[i].sha256);
            json_array_append_new(flagged, f);
        }
    }
    int with_sent = sent && (bit == TR_SOME_INVALID || bit == TR_BLOCKED || bit == TR_NOT_ALLOWED);
    struct fallback_fields ff = {
        .id = id, .inbound_id = in->id, .created_ms = now_ms(), .reason = reason, .details = details,
        .rule = in->rule, .subject = r->subject, .sender = in->mail_from,
        .found = (const char *const *)r->found, .n_found = r->n_found,
        .invalid = (const char *const *)r->invalid, .n_invalid = r->n_invalid,
        .sent_to = with_sent ? (const char *const *)r->recipients : NULL, .n_sent_to = r->n_recipients,
        .not_allowed = bit == TR_NOT_ALLOWED ? (const char *const *)r->not_allowed : NULL,
        .n_not_allowed = r->n_not_allowed,
        .flagged = flagged, .links = links_json(r),
    };
    return fallback_record_new(&ff);
}

static json_t *outbound_json(struct tw *w, const struct inbound_record *in,
                             const struct transform_result *r, char *err, size_t errlen)
{
    char id[ID_LEN + 1], ts[32], mid[400];
    transform_derive_id(in->id, "outbound", id);
    json_t *o = jsonx_record_new(SCHEMA_OUTBOUND);
    json_set_str(o, "id", id);
    json_set_str(o, "inbound_id", in->id);
    json_set_str(o, "created_at", rfc3339_ms(now_ms(), ts, sizeof(ts)));
    InternetAddressList *l = internet_address_list_parse(NULL, w->so.s.sender);
    InternetAddressMailbox *mb = INTERNET_ADDRESS_MAILBOX(internet_address_list_get_address(l, 0));
    char addr[ADDRESS_BUFSZ];
    if (address_normalize(internet_address_mailbox_get_addr(mb), addr, sizeof(addr)) != 0)
        panic("%s: sender was checked at startup", __func__);
    json_set_str(o, "from", addr);
    const char *name = internet_address_get_name(INTERNET_ADDRESS(mb));
    if (name && *name)
        json_set_str(o, "from_name", name);
    g_object_unref(l);
    json_object_set_new(o, "recipients", str_array(r->recipients, r->n_recipients));
    json_set_str(o, "subject", r->subject);
    snprintf(mid, sizeof(mid), "<%s>", r->message_id);
    json_set_str(o, "message_id", mid);
    if (in->rule)
        json_set_str(o, "rule", in->rule);
    json_t *body = json_object();
    if (r->mime_len <= w->inline_max) {
        json_set_str(body, "encoding", "text");
        json_object_set_new(body, "data", json_stringn(r->mime, r->mime_len));
        json_object_set_new(body, "size", json_integer((json_int_t)r->mime_len));
    } else {
        char key[200], date[16], shard[3];
        time_t secs = (time_t)(in->received_ms / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(date, sizeof(date), "%Y-%m-%d", &tm);
        id_shard(in->id, shard);
        snprintf(key, sizeof(key), "outbound/%s/%s/%s.eml", date, shard, in->id);
        struct store_object so;
        memset(&so, 0, sizeof(so));
        if (store_put_buf(w->incoming, key, r->mime, r->mime_len, "message/rfc822", &so, err,
                          errlen) != 0) {
            json_decref(body);
            json_decref(o);
            return NULL;
        }
        json_set_str(body, "encoding", "store");
        json_set_str(body, "store", "incoming");
        json_set_str(body, "key", key);
        json_object_set_new(body, "size", json_integer((json_int_t)r->mime_len));
        json_set_str(body, "sha256", so.sha256);
    }
    json_object_set_new(o, "body", body);
    json_object_set_new(o, "links", links_json(r));
    json_object_set_new(o, "attempt", json_integer(0));
    return o;
}

/* The raw mail as a local file: the file store's own path, or a download
 * into an unlinked-on-return temp file for S3. */
static char *raw_mail_path(struct tw *w, const char *key, int *is_temp, int *rcp, char *err, size_t errlen)
{
    *is_temp = 0;
    char *p = store_local_path(w->incoming, key);
    if (p) {
        if (access(p, R_OK) != 0) {
            *rcp = -errno;
            snprintf(err, errlen, "raw mail %s: %s", key, strerror(errno));
            free(p);
            return NULL;
        }
        return p;
    }
    char tmpl[4096];
    snprintf(tmpl, sizeof(tmpl), "%s/mf-raw-XXXXXX", w->so.s.tmp_dir);
    int fd = mkstemp(tmpl);
    if (fd < 0) {
        *rcp = -errno;
        snprintf(err, errlen, "temp file: %s", strerror(errno));
        return NULL;
    }
    int rc = store_get_fd(w->incoming, key, fd, err, errlen);
    close(fd);
    if (rc != 0) {
        *rcp = rc;
        unlink(tmpl);
        return NULL;
    }
    *is_temp = 1;
    return xstrdup(tmpl);
}

/* A record's own fault: a raw mail that is not there (ENOENT), a mail or
 * key we cannot read (EINVAL, EBADMSG), a limit (EFBIG, E2BIG): retried a
 * few times, then dead-lettered.  Anything else is the machine's (a full
 * disk, descriptors, memory, a store that times out or answers 5xx, EIO):
 * retried for ever, never dead-lettered (worker_loop.h). */
static enum wl_cause cause_of(int rc)
{
    return rc == -ENOENT || rc == -EINVAL || rc == -EBADMSG || rc == -EFBIG || rc == -E2BIG
               ? WL_CAUSE_RECORD
               : WL_CAUSE_ENVIRONMENT;
}

/* The outbound record (when a message was built) and one fallback record
 * per distinct reason, into the loop's batch.  -1 when the outbound record
 * cannot be made (err says why): nothing was added, retry the record. */
static int add_outputs(struct tw *w, const struct inbound_record *in, const struct transform_result *r,
                       struct wl_batch *batch, char *err, size_t errlen)
{
    json_t *docs[8];
    const char *topics[8];
    size_t n = 0;
    int sent = r->mime != NULL;
    if (sent) {
        json_t *ob = outbound_json(w, in, r, err, errlen);
        if (!ob)
            return -1;
        docs[n] = ob;
        topics[n++] = TOPIC_OUTBOUND;
    }
    const char *done[8];
    size_t nd = 0;
    for (unsigned bit = 1; bit <= TR_LAST; bit <<= 1) {
        if (!(r->reasons & bit))
            continue;
        const char *reason = transform_reason_name(bit, r->n_invalid);
        int dup = 0;
        for (size_t i = 0; i < nd; i++)
            // cppcheck-suppress uninitvar ; done[i] is read only for i < nd, all set below
            dup |= strcmp(done[i], reason) == 0;
        if (dup)
            continue;
        done[nd++] = reason;
        docs[n] = fallback_json(in, r, bit, reason, sent);
        topics[n++] = TOPIC_FALLBACK;
    }
    for (size_t i = 0; i < n; i++) {
        char *val = json_dumps(docs[i], JSON_COMPACT);
        struct bus_record out = { .topic = topics[i], .key = in->id, .key_len = strlen(in->id),
                                  .value = val, .value_len = strlen(val), .partition = -1 };
        wl_output(batch, &out);
        free(val);
        json_decref(docs[i]);
    }
    return 0;
}

/* res->stage and res->cls name where and how a failure happened (DLQ
 * headers, schemas/README.md): stage transform.<step>, cls
 * parse|store|bus|internal.  Outputs go to the loop's batch. */
static void handle(void *opaque, const struct bus_record *rec, size_t index, struct wl_batch *batch,
                   struct wl_result *res)
{
    struct tw *w = opaque;
    char *stage = res->stage, *cls = res->cls, *err = res->reason;
    size_t errlen = sizeof(res->reason);
    struct inbound_record in;
    strcpy(stage, "transform.decode");
    strcpy(cls, "parse");
    if (inbound_record_parse(rec->value, rec->value_len, &in, err, errlen) != 0) {
        json_decref(in.root);
        res->kind = WL_DEAD;
        return;
    }
    strcpy(stage, "transform.read");
    strcpy(cls, "store");
    int is_temp, rrc = -EIO;
    char *path = raw_mail_path(w, in.key, &is_temp, &rrc, err, errlen);
    if (!path) {
        json_decref(in.root);
        res->kind = WL_RETRY;
        res->cause = cause_of(rrc);
        return;
    }
    strcpy(stage, "transform.parse");
    struct transform_result r;
    const struct transform_rule_policy *pol = transform_rule_policy(&w->so, in.rule);
    struct inbound_info info = { in.id, in.mail_from, in.received_ms, pol ? pol->allowed_v : NULL,
                                 pol ? pol->show_sender : 1 };
    int rc = transform_message(w->t, path, &info, &r, err, errlen);
    if (is_temp)
        unlink(path);
    free(path);
    if (rc != 0) {
        transform_result_free(&r);
        json_decref(in.root);
        if (rc == -EINVAL)
            strcpy(cls, "parse");
        res->kind = rc == -EINVAL ? WL_DEAD : WL_RETRY;
        res->cause = cause_of(rc);
        return;
    }

    strcpy(stage, "transform.store");
    strcpy(cls, "store");
    if (add_outputs(w, &in, &r, batch, err, errlen) != 0) {
        /* the outbound body could not be stored: the store's fault */
        transform_result_free(&r);
        json_decref(in.root);
        res->kind = WL_RETRY;
        res->cause = WL_CAUSE_ENVIRONMENT;
        return;
    }
    int sent = r.mime != NULL;
    /* Counted when handled: a failed batch commit redoes the record and
     * counts it again (the loop's own metrics count commits). */
    metric_inc(sent ? w->m_ok : w->m_fallback);
    for (size_t i = 0; i < r.n_links; i++) {
        metric_inc(w->m_att);
        metric_add(w->m_att_bytes, (double)r.links[i].size);
    }
    log_kv(LOG_INFO, sent ? "transformed" : "fallback only", "id", in.id, "recipients",
           r.n_recipients ? "yes" : "none", NULL);
    transform_result_free(&r);
    json_decref(in.root);
    res->kind = WL_OK;
}

/* Once per batch, before it commits: the stored objects of its records,
 * put without fsyncs of their own, become durable together (store.h). */
static int sync_stores(void *opaque, char *err, size_t errlen)
{
    struct tw *w = opaque;
    return store_sync(w->attachments, err, errlen) != 0 || store_sync(w->incoming, err, errlen) != 0 ? -1 : 0;
}

static const struct wl_handler transform_handler = { .handle = handle, .before_commit = sync_stores };

static void tw_close(struct tw *w)
{
    worker_loop_free(w->loop);
    bus_consumer_free(w->cons);
    bus_close(w->bus);
    transform_free(w->t);
    tokens_free(w->tok);
    store_close(w->incoming);
    store_close(w->attachments);
    transform_settings_free(&w->so);
}

static int transform_run(struct worker_env *env)
{
    struct tw w;
    char err[512];
    memset(&w, 0, sizeof(w));
    w.cfg = env->cfg;
    transform_settings_load(env->cfg, &w.so);
    w.inline_max = config_size(env->cfg, "transform", "inline_max");
    if (transform_sender_is_capture(env->cfg, w.so.s.sender, err, sizeof(err)) ||
        transform_rule_policies_check(&w.so, err, sizeof(err)) != 0) {
        log_kv(LOG_ERROR, "refusing to start", "error", err, NULL);
        tw_close(&w);
        return 1;
    }
    w.incoming = common_store(env->cfg, "store_incoming", err, sizeof(err));
    if (w.incoming)
        w.attachments = common_store(env->cfg, "store_attachments", err, sizeof(err));
    if (!w.incoming || !w.attachments) {
        log_kv(LOG_ERROR, "cannot open a store", "error", err, NULL);
        tw_close(&w);
        return 1;
    }
    store_defer_sync(w.incoming, 1);
    store_defer_sync(w.attachments, 1);
    if (strcmp(w.so.s.link_mode, "gateway") == 0 &&
        !(w.tok = common_tokens(env->cfg, err, sizeof(err)))) {
        log_kv(LOG_ERROR, "cannot load link keys", "error", err, NULL);
        tw_close(&w);
        return 1;
    }
    if (!(w.t = transform_new(&w.so.s, w.attachments, w.tok, err, sizeof(err)))) {
        log_kv(LOG_ERROR, "bad [transform] settings", "error", err, NULL);
        tw_close(&w);
        return 1;
    }
    char txn_id[320];
    common_transactional_id(env->cfg, "transform", txn_id, sizeof txn_id);
    struct bus_options bo = { .client_id = "mailfleet-transform", .transactional_id = txn_id };
    w.bus = common_bus(env->cfg, &bo, err, sizeof(err));
    const char *topics[] = { TOPIC_INBOUND, NULL };
    if (w.bus)
        w.cons = bus_consumer_new(w.bus, GROUP_TRANSFORM, topics, 1, err, sizeof(err));
    if (!w.cons) {
        log_kv(LOG_ERROR, "cannot consume mailfleet.inbound", "error", err, NULL);
        tw_close(&w);
        return 1;
    }
    w.m_ok = metric_counter("mailfleet_transform_messages_total", "Inbound mails handled",
                            "result=\"outbound\"");
    w.m_fallback = metric_counter("mailfleet_transform_messages_total", "Inbound mails handled",
                                  "result=\"fallback\"");
    w.m_att = metric_counter("mailfleet_transform_attachments_total", "Attachments stored", NULL);
    w.m_att_bytes = metric_counter("mailfleet_transform_attachment_bytes_total",
                                   "Decoded attachment bytes", NULL);
    struct worker_loop_options lo = {
        .worker = "transform", .group = GROUP_TRANSFORM, .dlq_topic = TOPIC_INBOUND_DLQ,
        .batch_max = worker_loop_batch_max(env->cfg, NULL),
        .max_attempts = (int)config_int(env->cfg, "transform", "retries"),
        .backoff_ms = config_duration_ms(env->cfg, "transform", "retry_backoff"),
        .poll_timeout_ms = 500, .stop = env->stop, .handler = &transform_handler, .opaque = &w,
        .stuck_ms = worker_loop_stuck_ms(env->cfg),
    };
    w.loop = worker_loop_new(w.cons, &lo);
    /* Ready while a broker answers and no environment error (store, bus)
     * holds the loop back. */
    if (env->http) {
        http_ready_add(env->http, "transform-bus", common_bus_ready, w.bus);
        http_ready_add(env->http, "transform-loop", worker_loop_ready_check, w.loop);
        http_live_add(env->http, "transform-loop", worker_loop_live_check, w.loop);
    }
    worker_started(env);
    log_kv(LOG_INFO, "transform consuming mailfleet.inbound", "link_mode", w.so.s.link_mode, NULL);
    int rc = worker_loop_run(w.loop) < 0;
    if (env->http) {
        http_ready_remove(env->http, "transform-loop", w.loop);
        http_live_remove(env->http, "transform-loop", w.loop);
        http_ready_remove(env->http, "transform-bus", w.bus);
    }
    tw_close(&w);
    log_kv(LOG_INFO, "transform stopped", NULL);
    return rc;
}

const struct worker_def transform_worker = { "transform", transform_config_keys, transform_run };
