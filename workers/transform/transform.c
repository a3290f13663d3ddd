/* transform — consumes mailfleet.inbound (group "transform"), reads each raw
 * mail from store:incoming, and produces:
 *   mailfleet.outbound  the mail to send (outbound.v1, key = inbound id)
 *   mailfleet.fallback  one record per problem found (fallback.v1)
 *   store:attachments   every attachment, decoded, under a key we build
 * with bus_produce_and_commit, so outputs and the input offset go together
 * (one transaction in Kafka transactional mode).
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
#include "common_config.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "strbuf.h"
#include "timeutil.h"
#include "tokens.h"
#include "transform.h"
#include "transform_worker.h"
#include "worker.h"

/* --- the worker ------------------------------------------------------ */

struct tw {
    const struct config *cfg;
    struct transform_settings_owned so;
    struct transform *t;
    struct tokens *tok;
    struct store *incoming, *attachments;
    struct bus *bus;
    struct bus_consumer *cons;
    uint64_t inline_max;
    int retries;
    int64_t backoff_ms;
    struct metric *m_ok, *m_fallback, *m_dlq, *m_retry, *m_att, *m_att_bytes;
};

enum handle_result { HANDLE_OK, HANDLE_RETRY, HANDLE_DEAD };

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

struct inbound_rec {
    json_t *root;
    const char *id, *rule, *mail_from, *key;
    int64_t received_ms;
};

static int inbound_parse(const struct bus_record *rec, struct inbound_rec *in, char *err, size_t errlen)
{
    json_error_t je;
    memset(in, 0, sizeof(*in));
    if (!rec->value) {
        snprintf(err, errlen, "tombstone on mailfleet.inbound");
        return -EINVAL;
    }
    in->root = json_loadb(rec->value, rec->value_len, 0, &je);
    if (!in->root || !json_is_object(in->root)) {
        snprintf(err, errlen, "inbound value is not a JSON object: %s", je.text);
        return -EINVAL;
    }
    const char *schema = json_string_value(json_object_get(in->root, "schema"));
    in->id = json_string_value(json_object_get(in->root, "id"));
    in->rule = json_string_value(json_object_get(in->root, "rule"));
    const char *recv = json_string_value(json_object_get(in->root, "received_at"));
    json_t *env = json_object_get(in->root, "envelope");
    in->mail_from = json_string_value(json_object_get(env, "mail_from"));
    in->key = json_string_value(json_object_get(json_object_get(in->root, "store"), "key"));
    if (!schema || strcmp(schema, "mailfleet.inbound.v1") != 0 || !in->id || !in->key) {
        snprintf(err, errlen, "not a mailfleet.inbound.v1 record");
        return -EINVAL;
    }
    in->received_ms = recv ? rfc3339_parse(recv) : -1;
    if (in->received_ms < 0)
        in->received_ms = id_time_ms(in->id) > 0 ? id_time_ms(in->id) : now_ms();
    return 0;
}

static json_t *fallback_json(const struct inbound_rec *in, const struct transform_result *r,
                             unsigned bit, const char *reason, int sent)
{
    char id[ID_LEN + 1], ts[32], salt[64];
    snprintf(salt, sizeof(salt), "fallback|%s", reason);
    transform_derive_id(in->id, salt, id);
    json_t *o = json_object();
    json_set_str(o, "schema", "mailfleet.fallback.v1");
    json_set_str(o, "id", id);
    json_set_str(o, "inbound_id", in->id);
    json_set_str(o, "created_at", rfc3339_ms(now_ms(), ts, sizeof(ts)));
    json_set_str(o, "reason", reason);
    const char *details = r->detail;
    char buf[512];
    if (bit == TR_SOME_INVALID || (bit == TR_NO_RECIPIENT && r->n_invalid)) {
        snprintf(buf, sizeof(buf), "%zu coded address(es) failed validation%s", r->n_invalid,
                 sent ? "; sent to the valid ones" : "");
        details = buf;
    } else if (bit == TR_BLOCKED) {
        details = "an attachment has a blocked file extension and was not linked";
    }
    json_set_str(o, "details", details ? details : reason);
    if (in->rule)
        json_set_str(o, "rule", in->rule);
    json_set_str(o, "sender", in->mail_from ? in->mail_from : "");
    if (r->subject)
        json_set_str(o, "subject", r->subject);
    json_object_set_new(o, "found", str_array(r->found, r->n_found));
    json_object_set_new(o, "invalid", str_array(r->invalid, r->n_invalid));
    if (sent && (bit == TR_SOME_INVALID || bit == TR_BLOCKED))
        json_object_set_new(o, "sent_to", str_array(r->recipients, r->n_recipients));
    if (bit == TR_BLOCKED) {
        json_t *fl = json_array();
        for (size_t i = 0; i < r->n_links; i++) {
            if (!r->links[i].blocked)
                continue;
            json_t *f = json_object();
            json_set_str(f, "name", r->links[i].name);
            json_set_str(f, "why", "blocked_extension");
            json_object_set_new(f, "size", json_integer((json_int_t)r->links[i].size));
            json_set_str(f, "sha256", r->links[i].sha256);
            json_array_append_new(fl, f);
        }
        json_object_set_new(o, "flagged", fl);
    }
    json_object_set_new(o, "links", links_json(r));
    return o;
}

static json_t *outbound_json(struct tw *w, const struct inbound_rec *in,
                             const struct transform_result *r, char *err, size_t errlen)
{
    char id[ID_LEN + 1], ts[32], mid[400];
    transform_derive_id(in->id, "outbound", id);
    json_t *o = json_object();
    json_set_str(o, "schema", "mailfleet.outbound.v1");
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
        char key[200], date[16];
        time_t secs = (time_t)(in->received_ms / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(date, sizeof(date), "%Y-%m-%d", &tm);
        snprintf(key, sizeof(key), "outbound/%s/%s.eml", date, in->id);
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
static char *raw_mail_path(struct tw *w, const char *key, int *is_temp, char *err, size_t errlen)
{
    *is_temp = 0;
    char *p = store_local_path(w->incoming, key);
    if (p) {
        if (access(p, R_OK) != 0) {
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
        snprintf(err, errlen, "temp file: %s", strerror(errno));
        return NULL;
    }
    int rc = store_get_fd(w->incoming, key, fd, err, errlen);
    close(fd);
    if (rc != 0) {
        unlink(tmpl);
        return NULL;
    }
    *is_temp = 1;
    return xstrdup(tmpl);
}

/* stage and cls name where and how a failure happened (DLQ headers,
 * schemas/README.md): stage transform.<step>, cls parse|store|bus|internal. */
static enum handle_result handle(struct tw *w, const struct bus_record *rec, char *stage, char *cls,
                                 char *err, size_t errlen)
{
    struct inbound_rec in;
    strcpy(stage, "transform.decode");
    strcpy(cls, "parse");
    if (inbound_parse(rec, &in, err, errlen) != 0) {
        json_decref(in.root);
        return HANDLE_DEAD;
    }
    strcpy(stage, "transform.read");
    strcpy(cls, "store");
    int is_temp;
    char *path = raw_mail_path(w, in.key, &is_temp, err, errlen);
    if (!path) {
        json_decref(in.root);
        return HANDLE_RETRY;
    }
    strcpy(stage, "transform.parse");
    struct transform_result r;
    struct inbound_info info = { in.id, in.mail_from, in.received_ms };
    int rc = transform_message(w->t, path, &info, &r, err, errlen);
    if (is_temp)
        unlink(path);
    free(path);
    if (rc != 0) {
        transform_result_free(&r);
        json_decref(in.root);
        if (rc == -EINVAL)
            strcpy(cls, "parse");
        return rc == -EINVAL ? HANDLE_DEAD : HANDLE_RETRY;
    }

    strcpy(stage, "transform.store");
    strcpy(cls, "store");
    json_t *docs[8];
    const char *topics[8];
    size_t n = 0;
    int sent = r.mime != NULL;
    if (sent) {
        json_t *ob = outbound_json(w, &in, &r, err, errlen);
        if (!ob) {
            transform_result_free(&r);
            json_decref(in.root);
            return HANDLE_RETRY;
        }
        docs[n] = ob;
        topics[n++] = "mailfleet.outbound";
    }
    const char *done[8];
    size_t nd = 0;
    for (unsigned bit = 1; bit <= TR_LIMITS; bit <<= 1) {
        if (!(r.reasons & bit))
            continue;
        const char *reason = transform_reason_name(bit, r.n_invalid);
        int dup = 0;
        for (size_t i = 0; i < nd; i++)
            dup |= strcmp(done[i], reason) == 0;
        if (dup)
            continue;
        done[nd++] = reason;
        docs[n] = fallback_json(&in, &r, bit, reason, sent);
        topics[n++] = "mailfleet.fallback";
    }
    strcpy(stage, "transform.produce");
    strcpy(cls, "bus");
    struct bus_record outs[8];
    char *vals[8];
    for (size_t i = 0; i < n; i++) {
        vals[i] = json_dumps(docs[i], JSON_COMPACT);
        outs[i] = (struct bus_record){ .topic = topics[i], .key = in.id, .key_len = strlen(in.id),
                                       .value = vals[i], .value_len = strlen(vals[i]),
                                       .partition = -1 };
        json_decref(docs[i]);
    }
    rc = bus_produce_and_commit(w->cons, rec, outs, n, err, errlen);
    for (size_t i = 0; i < n; i++)
        free(vals[i]);
    if (rc == 0) {
        metric_inc(sent ? w->m_ok : w->m_fallback);
        for (size_t i = 0; i < r.n_links; i++) {
            metric_inc(w->m_att);
            metric_add(w->m_att_bytes, (double)r.links[i].size);
        }
        log_kv(LOG_INFO, sent ? "transformed" : "fallback only", "id", in.id, "recipients",
               r.n_recipients ? "yes" : "none", NULL);
    }
    transform_result_free(&r);
    json_decref(in.root);
    return rc == 0 ? HANDLE_OK : HANDLE_RETRY;
}

static int send_to_dlq(struct tw *w, const struct bus_record *rec, const char *stage,
                       const char *cls, const char *msg, int attempts)
{
    char part[16], off[24], att[16], line[1025];
    /* One line for humans, bounded, no CR/LF (schemas/README.md). */
    snprintf(line, sizeof(line), "%s", msg);
    for (char *p = line; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    msg = line;
    snprintf(part, sizeof(part), "%d", rec->partition);
    snprintf(off, sizeof(off), "%lld", (long long)rec->offset);
    snprintf(att, sizeof(att), "%d", attempts);
    struct bus_header h[16];
    size_t nh = 0;
    /* The record's own headers travel along (minus earlier mf.error ones). */
    for (size_t i = 0; i < rec->n_headers && nh < 8; i++)
        if (strncmp(rec->headers[i].name, "mf.error.", 9) != 0 &&
            strncmp(rec->headers[i].name, "mf.source.", 10) != 0 &&
            strcmp(rec->headers[i].name, "mf.attempts") != 0)
            h[nh++] = rec->headers[i];
    h[nh++] = (struct bus_header){ "mf.error.stage", stage, strlen(stage) };
    h[nh++] = (struct bus_header){ "mf.error.class", cls, strlen(cls) };
    h[nh++] = (struct bus_header){ "mf.error.message", msg, strlen(msg) };
    h[nh++] = (struct bus_header){ "mf.source.topic", rec->topic, strlen(rec->topic) };
    h[nh++] = (struct bus_header){ "mf.source.partition", part, strlen(part) };
    h[nh++] = (struct bus_header){ "mf.source.offset", off, strlen(off) };
    h[nh++] = (struct bus_header){ "mf.attempts", att, strlen(att) };
    struct bus_record out = { .topic = "mailfleet.inbound.dlq", .key = rec->key,
                              .key_len = rec->key_len, .value = rec->value,
                              .value_len = rec->value_len, .headers = h, .n_headers = nh,
                              .partition = -1 };
    char err[256];
    int rc = bus_produce_and_commit(w->cons, rec, &out, 1, err, sizeof(err));
    if (rc != 0)
        log_kv(LOG_ERROR, "cannot write to the DLQ", "error", err, NULL);
    else
        metric_inc(w->m_dlq);
    return rc;
}

static void sleep_ms_interruptible(int64_t ms, volatile sig_atomic_t *stop)
{
    while (ms > 0 && !*stop) {
        int64_t step = ms > 100 ? 100 : ms;
        usleep((useconds_t)(step * 1000));
        ms -= step;
    }
}

static void tw_close(struct tw *w)
{
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
    w.retries = (int)config_int(env->cfg, "transform", "retries");
    w.backoff_ms = config_duration_ms(env->cfg, "transform", "retry_backoff");
    if (transform_sender_is_capture(env->cfg, w.so.s.sender, err, sizeof(err))) {
        log_kv(LOG_ERROR, "refusing to start", "error", err, NULL);
        tw_close(&w);
        return 1;
    }
    struct store_options sopt = { config_secret(env->cfg, "s3", "access_key"),
                                  config_secret(env->cfg, "s3", "secret_key"),
                                  config_secret(env->cfg, "s3", "session_token") };
    w.incoming = store_open(config_str(env->cfg, "mailfleet", "store_incoming"), &sopt, err, sizeof(err));
    if (w.incoming)
        w.attachments = store_open(config_str(env->cfg, "mailfleet", "store_attachments"), &sopt,
                                   err, sizeof(err));
    free((char *)sopt.access_key);
    free((char *)sopt.secret_key);
    free((char *)sopt.session_token);
    if (!w.incoming || !w.attachments) {
        log_kv(LOG_ERROR, "cannot open a store", "error", err, NULL);
        tw_close(&w);
        return 1;
    }
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
    struct bus_options bo = { .client_id = "mailfleet-transform" };
    /* One transactional id per process: a second transform with the same id
     * fences the first for good (KEDA runs several).  Kafka fences a zombie
     * by the group generation sent with the offsets, so the id need not be
     * shared; the host (the pod) and pid keep a restarted pod's id stable. */
    char txn_id[320], host[256] = "";
    if (strcmp(config_str(env->cfg, "mailfleet", "commit_mode"), "transactional") == 0) {
        gethostname(host, sizeof host - 1);
        snprintf(txn_id, sizeof txn_id, "mailfleet-transform-%s-%d", host, (int)getpid());
        bo.transactional_id = txn_id;
    }
    w.bus = common_bus(env->cfg, &bo, err, sizeof(err));
    const char *topics[] = { "mailfleet.inbound", NULL };
    if (w.bus)
        w.cons = bus_consumer_new(w.bus, "transform", topics, 1, err, sizeof(err));
    if (!w.cons) {
        log_kv(LOG_ERROR, "cannot consume mailfleet.inbound", "error", err, NULL);
        tw_close(&w);
        return 1;
    }
    w.m_ok = metric_counter("mailfleet_transform_messages_total", "Inbound mails handled",
                            "result=\"outbound\"");
    w.m_fallback = metric_counter("mailfleet_transform_messages_total", "Inbound mails handled",
                                  "result=\"fallback\"");
    w.m_dlq = metric_counter("mailfleet_transform_messages_total", "Inbound mails handled",
                             "result=\"dlq\"");
    w.m_retry = metric_counter("mailfleet_transform_retries_total", "Handler attempts that failed", NULL);
    w.m_att = metric_counter("mailfleet_transform_attachments_total", "Attachments stored", NULL);
    w.m_att_bytes = metric_counter("mailfleet_transform_attachment_bytes_total",
                                   "Decoded attachment bytes", NULL);
    worker_started(env);
    log_kv(LOG_INFO, "transform consuming mailfleet.inbound", "link_mode", w.so.s.link_mode, NULL);

    int attempts = 0;
    int64_t last_off = -1;
    int32_t last_part = -1;
    while (!*env->stop) {
        struct bus_record *rec = NULL;
        int rc = bus_consumer_poll(w.cons, &rec, 500);
        if (rc < 0) {
            log_kv(LOG_WARN, "poll failed", NULL);
            sleep_ms_interruptible(500, env->stop);
            continue;
        }
        if (rc == 0)
            continue;
        if (rec->offset != last_off || rec->partition != last_part) {
            attempts = 0;
            last_off = rec->offset;
            last_part = rec->partition;
        }
        char stage[32] = "", cls[16] = "internal", herr[512] = "";
        enum handle_result hr = handle(&w, rec, stage, cls, herr, sizeof(herr));
        attempts++;
        if (hr == HANDLE_RETRY && attempts < w.retries) {
            metric_inc(w.m_retry);
            log_kv(LOG_WARN, "will retry", "stage", stage, "error", herr, NULL);
            sleep_ms_interruptible(w.backoff_ms << (attempts - 1), env->stop);
            bus_consumer_seek(w.cons, rec);
        } else if (hr != HANDLE_OK) {
            log_kv(LOG_ERROR, "record to the DLQ", "stage", stage, "error", herr, NULL);
            if (send_to_dlq(&w, rec, stage, cls, herr, attempts) != 0) {
                sleep_ms_interruptible(1000, env->stop);
                bus_consumer_seek(w.cons, rec);
            }
        }
        bus_record_free(rec);
    }
    tw_close(&w);
    log_kv(LOG_INFO, "transform stopped", NULL);
    return 0;
}

const struct worker_def transform_worker = { "transform", transform_config_keys, transform_run };
