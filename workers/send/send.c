/* send — delivers what transform announced on mailfleet.outbound.
 *
 * Consumes mailfleet.outbound and the retry tiers
 * mailfleet.outbound.retry.<delay> (one thread and consumer group each, so a
 * tier waiting for its head record's not_before never holds up the others).
 * Per record and recipient: a recipient already delivered (sent marker) is
 * not sent again; a suppressed one gets a Suppressed event; the rest go
 * through the transport (outbox / SMTP relay / SES) with a VERP return path,
 * optional one-click List-Unsubscribe headers and an optional DKIM signature.
 * Produces event.v1 records on mailfleet.events, retry records on the next
 * tier, and unhandleable records to mailfleet.outbound.dlq with error headers.
 *
 * Guarantees: a sent marker is written the moment the transport reports 2xx,
 * before any output is produced or the offset committed, so a redelivered
 * record never resends to a recipient who got it (a duplicate is possible
 * only if the process dies between the relay's 250 and that marker write).
 * Offsets are committed only after every output of the batch is durable:
 * the common worker loop (worker_loop.h) polls, commits, seeks back and
 * dead-letters; send's batch_begin delivers every recipient of a batch in
 * parallel and handle() then reports each record's outcome.
 * The suppression copy is rebuilt from the start of mailfleet.suppression at
 * startup and nothing is sent until it has caught up.
 *
 * Security: recipients and the envelope sender pass address_normalize before
 * they reach an SMTP command or a header, so data never injects CR/LF; the
 * message bytes are sent as built (bare LF lines become CRLF, curl
 * dot-stuffs).  Never logs message bodies, passwords or keys.  Writes files
 * only under the outbox directory and state_dir. */
#include "send.h"
#include "address.h"
#include "base64.h"
#include "bus.h"
#include "common_config.h"
#include "config.h"
#include "dkim_signer.h"
#include "event_record.h"
#include "http.h"
#include "ids.h"
#include "jsonx.h"
#include "kv.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "store.h"
#include "strbuf.h"
#include "suppression_copy.h"
#include "timeutil.h"
#include "tokens.h"
#include "topics.h"
#include "transport.h"
#include "verp.h"
#include "worker_loop.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


const struct config_key send_config_keys[] = {
    { "send", "metrics_listen", CONFIG_STR, "127.0.0.1:9103", "metrics/health when run alone" },
    { "send", "transport", CONFIG_STR, "outbox:var/outbox",
      "outbox:<dir>, smtp://host:port, smtps://host:port or ses:<region>" },
    { "send", "group", CONFIG_STR, GROUP_SEND, "consumer group (tiers add .retry.<delay>)" },
    { "send", "retry_tiers", CONFIG_LIST, "1m,5m,30m,2h",
      "delays of the retry topics mailfleet.outbound.retry.<delay>, in order" },
    { "send", "max_retry_age", CONFIG_DURATION, "24h", "after this a deferred recipient bounces (Transient)" },
    { "send", "batch_max", CONFIG_INT, NULL,
      "records handled (and recipients sent in parallel) per batch; default [mailfleet] batch_max" },
    { "send", "connections", CONFIG_INT, "4", "parallel SMTP/SES connections per consuming thread" },
    { "send", "per_domain", CONFIG_INT, "4", "max transfers in flight per recipient domain" },
    { "send", "rate", CONFIG_INT, "0", "messages per second across the worker (0 = unlimited)" },
    { "send", "burst", CONFIG_INT, "50", "token bucket size for rate" },
    { "send", "timeout", CONFIG_DURATION, "60s", "per transfer" },
    { "send", "connect_timeout", CONFIG_DURATION, "10s", "per connection" },
    { "send", "smtp_starttls", CONFIG_STR, "required", "required, optional or off (smtp:// only)" },
    { "send", "smtp_user", CONFIG_STR, NULL, "AUTH user for the relay" },
    { "send", "smtp_password", CONFIG_SECRET, NULL, "AUTH password (or smtp_password_file)" },
    { "send", "smtp_helo", CONFIG_STR, "localhost", "EHLO name" },
    { "send", "tls_ca_file", CONFIG_STR, NULL, "CA bundle for the relay / SES endpoint" },
    { "send", "tls_verify", CONFIG_BOOL, "true", "verify the peer certificate" },
    { "send", "ses_endpoint", CONFIG_STR, NULL, "override https://email.<region>.amazonaws.com" },
    { "send", "ses_access_key", CONFIG_SECRET, NULL, "default: AWS_ACCESS_KEY_ID" },
    { "send", "ses_secret_key", CONFIG_SECRET, NULL, "default: AWS_SECRET_ACCESS_KEY" },
    { "send", "ses_session_token", CONFIG_SECRET, NULL, "default: AWS_SESSION_TOKEN" },
    { "send", "bounce_domain", CONFIG_STR, "iot.localhost", "VERP return path domain" },
    { "send", "bounce_prefix", CONFIG_STR, "bounce", "VERP local part: <prefix>+<token>" },
    { "send", "list_unsubscribe", CONFIG_BOOL, "false", "add one-click List-Unsubscribe headers per recipient" },
    { "send", "unsubscribe_url", CONFIG_STR, NULL, "base URL of /u/<token> (default [mailfleet] public_base_url)" },
    { "send", "unsubscribe_domain", CONFIG_STR, "iot.localhost", "domain of unsubscribe+<token>@" },
    { "send", "unsubscribe_ttl", CONFIG_DURATION, "90d", "lifetime of unsubscribe URL tokens" },
    { "send", "dkim_key_file", CONFIG_STR, NULL, "private key; DKIM signing is on when set" },
    { "send", "dkim_selector", CONFIG_STR, "mail", "DKIM selector" },
    { "send", "dkim_domain", CONFIG_STR, NULL, "DKIM d= domain" },
    { "send", "dkim_algorithm", CONFIG_STR, "rsa-sha256", "rsa-sha256 or ed25519-sha256" },
    { "send", "sent_marker_ttl", CONFIG_DURATION, "7d", "how long sent markers are kept" },
    { "send", "pause_file", CONFIG_STR, NULL, "flag file for `send pause` (default <state_dir>/send.paused)" },
    CONFIG_KEYS_END
};

struct sender {
    const struct config *cfg;
    stop_flag_t *stop;
    struct bus *bus;
    struct kv *sent;
    struct suppression_copy *supp;
    struct ratelimit *rl;
    struct dkim_signer *dkim;
    struct tokens *tokens;
    char *verp_key;
    char *pause_file;
    char *transport_uri;
    struct transport_config tc;
    char *smtp_password, *ses_access, *ses_secret, *ses_token;
    int64_t marker_ttl_ms, max_age_ms, unsub_ttl_ms;
    size_t batch_max;
    bool list_unsubscribe;
    char **tiers;
    int64_t *tier_ms;
    size_t n_tiers;
    struct {
        struct metric *delivered, *deferred, *bounced_perm, *bounced_trans, *suppressed_res, *dead;
        struct metric *suppressed, *attempt_seconds, *rl_tokens, *rl_rate, *rl_burst, *paused;
    } m;
};

/* One consuming thread: the outbound topic or one retry tier. */
struct lane {
    struct sender *w;
    char topic[128];
    char group[160];
    int tier;                      /* -1 = the outbound topic */
    pthread_t tid;
    struct transport *t;
    struct store *store[2];        /* incoming, attachments: opened on first use */
    struct bus_consumer *c;
    struct worker_loop *loop;
    struct send_batch *b;          /* the batch between batch_begin and batch_end */
    int rc;
};

/* One input record of a batch. */
struct rec_ctx {
    struct bus_record *r;
    size_t idx;                    /* in the batch */
    json_t *doc;
    const char *id, *inbound_id, *subject, *list;
    char from_addr[ADDRESS_BUFSZ];
    const char *dead_stage;
    char **rcpts;                  /* normalized */
    size_t n_rcpts;
    char *body;
    size_t body_len;
    int64_t created_ms, first_ms;
    int attempt;
    struct event_mail mail;
    json_t *retry;                 /* recipients for the next tier */
    const char *dead_class;
    char dead_msg[256];
};

struct job_ctx {
    struct lane *lane;
    struct rec_ctx *rc;
    char rcpt[ADDRESS_BUFSZ];
    char mail_from[ADDRESS_BUFSZ + 64];
    char *prefix;
    size_t prefix_len;
    int64_t done_ms;               /* when the transport finished it */
};

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

/* ---- record parsing ---- */

static int dead(struct rec_ctx *rc, const char *cls, const char *fmt, const char *detail)
{
    rc->dead_class = cls;
    snprintf(rc->dead_msg, sizeof(rc->dead_msg), fmt, detail ? detail : "");
    return 1;
}

/* Bare LF -> CRLF (devices and some builders write LF); a bare CR is left as
 * it is (content, sent byte for byte).  Ends with CRLF. */
static char *to_crlf(const char *in, size_t n, size_t *outlen)
{
    struct strbuf b;
    strbuf_init(&b);
    strbuf_reserve(&b, n + n / 32 + 3);
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r')) {
            strbuf_append_n(&b, in + start, i - start);
            strbuf_append_n(&b, "\r\n", 2);
            start = i + 1;
        }
    }
    strbuf_append_n(&b, in + start, n - start);
    if (b.len < 2 || b.data[b.len - 2] != '\r' || b.data[b.len - 1] != '\n')
        strbuf_append_n(&b, "\r\n", 2);
    return strbuf_detach(&b, outlen);
}

static int collect_cb(void *opaque, const void *buf, size_t len)
{
    struct strbuf *b = opaque;
    strbuf_append_n(b, buf, len);
    return 0;
}

/* body {"encoding": "text"|"base64"|"store", ...} -> rc->body (CRLF).
 * 0 ok, 1 dead (rc->dead_*), -1 transient (retry the record later). */
static int load_message(struct lane *l, struct rec_ctx *rc)
{
    json_t *b = json_object_get(rc->doc, "body");
    const char *enc = json_string_value(json_object_get(b, "encoding"));
    json_t *data = json_object_get(b, "data");
    if (!enc)
        return dead(rc, "parse", "body.encoding missing%s", NULL);
    if (strcmp(enc, "text") == 0 && json_is_string(data)) {
        rc->body = to_crlf(json_string_value(data), json_string_length(data), &rc->body_len);
        return 0;
    }
    if (strcmp(enc, "base64") == 0 && json_is_string(data)) {
        size_t n;
        char *raw = (char *)base64_decode_alloc(json_string_value(data), json_string_length(data), &n);
        if (!raw)
            return dead(rc, "parse", "body.data is not base64%s", NULL);
        rc->body = to_crlf(raw, n, &rc->body_len);
        free(raw);
        return 0;
    }
    if (strcmp(enc, "store") != 0)
        return dead(rc, "parse", "body.encoding %s not understood", enc);
    const char *which = json_string_value(json_object_get(b, "store"));
    const char *key = json_string_value(json_object_get(b, "key"));
    int si = which && strcmp(which, "attachments") == 0 ? 1 : 0;
    if (!key || !which || (si == 0 && strcmp(which, "incoming") != 0))
        return dead(rc, "parse", "body.store / body.key missing or unknown%s", NULL);
    char err[256];
    if (!l->store[si]) {
        l->store[si] = common_store(l->w->cfg, si ? "store_attachments" : "store_incoming", err,
                                    sizeof(err));
        if (!l->store[si]) {
            log_kv(LOG_ERROR, "cannot open the message store", "error", err, NULL);
            return -1;
        }
    }
    struct strbuf m;
    strbuf_init(&m);
    int r = store_get_cb(l->store[si], key, 0, 0, collect_cb, &m, err, sizeof(err));
    if (r == -ENOENT || r == -EINVAL) {
        strbuf_free(&m);
        rc->dead_stage = "send.store";
        return dead(rc, "store", "message object not found: %s", key);
    }
    if (r != 0) {
        log_kv(LOG_WARN, "cannot read the message; will retry", "id", rc->id, "error", err, NULL);
        strbuf_free(&m);
        return -1;
    }
    rc->body = to_crlf(m.data ? m.data : "", m.len, &rc->body_len);
    strbuf_free(&m);
    return 0;
}

static int parse_record(struct lane *l, struct rec_ctx *rc)
{
    struct bus_record *r = rc->r;
    if (!r->value)
        return dead(rc, "parse", "empty record%s", NULL);
    char perr[256];
    rc->doc = jsonx_record_parse(r->value, r->value_len, SCHEMA_OUTBOUND, perr, sizeof(perr));
    if (!rc->doc)
        return dead(rc, "parse", "%s", perr);
    const char *from;
    const json_t *rs;
    if (jsonx_want_str(rc->doc, "id", 1, &rc->id, perr, sizeof(perr)) != 0 ||
        jsonx_want_str(rc->doc, "inbound_id", 0, &rc->inbound_id, perr, sizeof(perr)) != 0 ||
        jsonx_want_str(rc->doc, "subject", 0, &rc->subject, perr, sizeof(perr)) != 0 ||
        jsonx_want_str(rc->doc, "list", 0, &rc->list, perr, sizeof(perr)) != 0 ||
        jsonx_want_str(rc->doc, "from", 1, &from, perr, sizeof(perr)) != 0 ||
        jsonx_want_array(rc->doc, "recipients", 1, &rs, perr, sizeof(perr)) != 0)
        return dead(rc, "parse", "%s", perr);
    if (!id_valid(rc->id))
        return dead(rc, "parse", "id is not a UUIDv7%s", NULL);
    if (rc->list && (!*rc->list || strlen(rc->list) > 64 ||
                     strspn(rc->list, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") !=
                         strlen(rc->list)))
        return dead(rc, "parse", "list is not a name%s", NULL);
    if (address_normalize(from, rc->from_addr, sizeof(rc->from_addr)) != 0)
        return dead(rc, "parse", "from is not an address%s", NULL);
    if (json_array_size(rs) == 0)
        return dead(rc, "parse", "recipients is empty%s", NULL);
    /* Transform writes normalized addresses (schema); anything else means a
     * record we must not guess about: the whole record goes to the DLQ. */
    rc->n_rcpts = json_array_size(rs);
    rc->rcpts = xcalloc(rc->n_rcpts, sizeof(char *));
    for (size_t i = 0; i < rc->n_rcpts; i++) {
        const char *a = json_string_value(json_array_get(rs, i));
        char norm[ADDRESS_BUFSZ];
        if (!a || address_normalize(a, norm, sizeof(norm)) != 0)
            return dead(rc, "parse", "recipients[] holds a value that is not an address%s", NULL);
        rc->rcpts[i] = xstrdup(norm);
    }
    int64_t attempt = 0;
    if (jsonx_path(rc->doc, "attempt") && jsonx_int(rc->doc, "attempt", &attempt) != 0)
        return dead(rc, "parse", "field attempt is not an integer%s", NULL);
    rc->attempt = attempt > 0 ? (int)attempt : 0;
    rc->created_ms = jsonx_time_ms(rc->doc, "created_at");
    if (rc->created_ms < 0)
        rc->created_ms = r->timestamp_ms > 0 ? r->timestamp_ms : now_ms();
    rc->first_ms = jsonx_time_ms(rc->doc, "first_attempt_at");
    if (rc->first_ms < 0)
        rc->first_ms = now_ms();
    rc->mail = (struct event_mail){ rc->id, rc->inbound_id, rc->from_addr, rc->subject,
                                    rc->created_ms, (const char *const *)rc->rcpts, rc->n_rcpts };
    return load_message(l, rc);
}

/* ---- per-recipient copy ---- */

/* The token in a VERP return path (use = "verp") or a mailto
 * unsubscribe address (use = the list name, "" for none).  compact: the
 * 42-character verp.h token, so <prefix>+<token> fits a 64-character local
 * part.  token: a tokens.h token of "<id>|<rcpt>" / "u|<rcpt>|<list>", which
 * feedback verifies today but which makes the local part ~150 characters.
 * malloc'd; only [A-Za-z0-9._-] either way. */
/* The compact VERP token (common/verp) of a message and recipient; use
 * "verp" for the return path, anything else for the mailto unsubscribe. */
static char *verp_local_token(struct sender *w, const char *id, const char *rcpt, const char *use)
{
    int unsub = strcmp(use, "verp") != 0;
    char *tok = xmalloc(VERP_TOKEN_LEN + 1);
    if (verp_token(w->verp_key, strlen(w->verp_key), unsub ? "unsubscribe" : "verp", id, rcpt, tok) != 0)
        panic("%s: verp_token refused a checked id", __func__);
    return tok;
}

static int build_prefix(struct sender *w, struct rec_ctx *rc, struct job_ctx *j, char *err, size_t errlen)
{
    struct strbuf p;
    strbuf_init(&p);
    if (w->list_unsubscribe) {
        /* "u|<rcpt>|<list>": what feedback's /u/ handler and mailto
         * unsubscribe verify (an empty list = every message to rcpt). */
        const char *list = rc->list ? rc->list : "";
        struct strbuf payload;
        strbuf_init(&payload);
        strbuf_appendf(&payload, "u|%s|%s", j->rcpt, list);
        int64_t exp = (now_ms() + w->unsub_ttl_ms) / 1000;
        char *tok = tokens_sign(w->tokens, payload.data, payload.len, exp);
        strbuf_free(&payload);
        char *vt = verp_local_token(w, rc->id, j->rcpt, list);
        const char *base = config_isset(w->cfg, "send", "unsubscribe_url")
                               ? config_str(w->cfg, "send", "unsubscribe_url")
                               : config_str(w->cfg, "mailfleet", "public_base_url");
        size_t bl = strlen(base);
        while (bl > 0 && base[bl - 1] == '/')
            bl--;
        strbuf_appendf(&p, "List-Unsubscribe: <%.*s/u/%s>,\r\n <mailto:unsubscribe+%s@%s>\r\n", (int)bl,
                       base, tok, vt, config_str(w->cfg, "send", "unsubscribe_domain"));
        strbuf_append(&p, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
        free(tok);
        free(vt);
    }
    if (w->dkim) {
        char *sig = dkim_signer_sign(w->dkim, rc->id, p.data ? p.data : "", p.len, rc->body, rc->body_len,
                                     err, errlen);
        if (!sig) {
            strbuf_free(&p);
            return -EINVAL;
        }
        struct strbuf all;
        strbuf_init(&all);
        strbuf_append(&all, sig);
        strbuf_append_n(&all, p.data ? p.data : "", p.len);
        free(sig);
        strbuf_free(&p);
        p = all;
    }
    j->prefix = strbuf_detach(&p, &j->prefix_len);
    if (!j->prefix) {
        j->prefix = xstrdup("");
        j->prefix_len = 0;
    }
    return 0;
}

static void marker_key(const char *id, const char *rcpt, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s|%s", id, rcpt);
}

/* Called by the transport the moment one recipient's transfer ends. */
static void on_job_done(void *opaque, struct transport_job *job)
{
    struct job_ctx *j = opaque;
    struct sender *w = j->lane->w;
    j->done_ms = now_ms();
    metric_observe(w->m.attempt_seconds, (double)job->elapsed_us / 1e6);
    if (job->result != TRANSPORT_OK)
        return;
    char k[ADDRESS_BUFSZ + 64];
    marker_key(j->rc->id, j->rcpt, k, sizeof(k));
    if (kv_put(w->sent, k, strlen(k), job->response, strlen(job->response), now_ms() + w->marker_ttl_ms) < 0)
        log_kv(LOG_ERROR, "cannot write a sent marker", "id", j->rc->id, NULL);
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

/* ---- a batch ---- */

static int stopping(struct sender *w) { return *w->stop != 0; }

static void rec_free(struct rec_ctx *rc)
{
    json_decref(rc->doc);
    json_decref(rc->retry);
    for (size_t i = 0; rc->rcpts && i < rc->n_rcpts; i++)
        free(rc->rcpts[i]);
    free(rc->rcpts);
    free(rc->body);
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
            char mk[ADDRESS_BUFSZ + 64];
            marker_key(rc->id, j->rcpt, mk, sizeof(mk));
            void *prev = NULL;
            size_t prevlen = 0;
            if (kv_get(w->sent, mk, strlen(mk), &prev, &prevlen) == 1) {
                /* Delivered before a crash or redelivery: never again.  The
                 * Delivery event may have been lost with the crash, so it is
                 * produced again (consumers treat events as at-least-once). */
                char resp[512];
                snprintf(resp, sizeof(resp), "%.*s", (int)prevlen, prev ? (char *)prev : "");
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
            char *tok = verp_local_token(w, rc->id, j->rcpt, "verp");
            snprintf(j->mail_from, sizeof(j->mail_from), "%s+%s@%s", config_str(w->cfg, "send", "bounce_prefix"),
                     tok, config_str(w->cfg, "send", "bounce_domain"));
            free(tok);
            if (build_prefix(w, rc, j, err, sizeof(err)) != 0) {
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

/* One event per finished job; 4xx recipients collected for the next tier
 * unless the max retry age is used up.  Returns 1 when a job never ran
 * (stopping), in which case the caller produces and commits nothing. */
static int report_outcomes(struct lane *l, struct transport_job *jobs, struct job_ctx *jcs, size_t n_jobs,
                           struct outputs *o)
{
    struct sender *w = l->w;
    int64_t now = now_ms();
    for (size_t i = 0; i < n_jobs; i++)
        if (jobs[i].result == TRANSPORT_NOT_RUN)
            return 1;
    for (size_t i = 0; i < n_jobs; i++) {
        struct transport_job *job = &jobs[i];
        struct rec_ctx *rc = jcs[i].rc;
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
    return 0;
}

/* What batch_begin worked out for the batch, read by handle(). */
struct send_batch {
    struct rec_ctx *rcs;
    size_t n, upto;                /* records from upto on were not parsed (transient) */
    struct transport_job *jobs;
    struct job_ctx *jcs;
    size_t n_jobs;
    struct outputs o;
};

static void send_batch_end(void *opaque, size_t committed)
{
    struct lane *l = opaque;
    struct send_batch *b = l->b;
    if (!b)
        return;
    for (size_t i = 0; i < b->n_jobs; i++)
        free(b->jcs[i].prefix);
    for (size_t i = 0; i < b->n; i++)
        rec_free(&b->rcs[i]);
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
    struct send_batch *b = xcalloc(1, sizeof(*b));
    size_t cap_jobs = 0;
    l->b = b;
    b->rcs = xcalloc(n, sizeof(*b->rcs));
    b->n = n;
    b->upto = n;
    for (size_t i = 0; i < n; i++) {
        b->rcs[i].r = recs[i];
        b->rcs[i].idx = i;
        int pr = parse_record(l, &b->rcs[i]);
        if (pr < 0) {
            b->upto = i;
            break;
        }
        if (pr == 0)
            cap_jobs += b->rcs[i].n_rcpts;
    }
    b->jobs = xcalloc(cap_jobs ? cap_jobs : 1, sizeof(*b->jobs));
    b->jcs = xcalloc(cap_jobs ? cap_jobs : 1, sizeof(*b->jcs));
    b->n_jobs = plan_jobs(l, b->rcs, b->upto, &b->o, b->jobs, b->jcs);
    if (b->n_jobs)
        transport_send(l->t, b->jobs, b->n_jobs, w->rl, on_job_done, w->stop);
    if (report_outcomes(l, b->jobs, b->jcs, b->n_jobs, &b->o))
        return -1;
    for (size_t i = 0; i < b->upto; i++)
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
static int64_t not_before(const struct bus_record *r);
static int64_t send_not_before(void *opaque, const struct bus_record *r)
{
    const struct lane *l = opaque;
    return l->tier < 0 ? 0 : not_before(r);
}

static const struct wl_handler send_handler = {
    .batch_begin = send_batch_begin, .handle = send_handle, .batch_end = send_batch_end,
    .not_before = send_not_before,
};

/* ---- lanes ---- */

/* Readiness lives in a static, not in the worker's (stack) state: the HTTP
 * server can outlive send_run by a moment and must not touch freed memory. */
static atomic_int send_ready;

static int paused(struct sender *w)
{
    struct stat st;
    return stat(w->pause_file, &st) == 0;
}

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

static void *lane_main(void *arg)
{
    struct lane *l = arg;
    struct sender *w = l->w;
    char err[256];
    log_set_worker("send");
    while (!stopping(w) && !suppression_copy_ready(w->supp))
        sleep_unless_stopped(50, w->stop);
    atomic_store(&send_ready, 1);
    const char *topics[] = { l->topic, NULL };
    l->c = bus_consumer_new(w->bus, l->group, topics, 1, err, sizeof(err));
    if (!l->c) {
        log_kv(LOG_ERROR, "cannot consume", "topic", l->topic, "error", err, NULL);
        l->rc = 1;
        *w->stop = 1;
        return NULL;
    }
    struct worker_loop_options lo = {
        .worker = "send", .group = l->group, .dlq_topic = TOPIC_OUTBOUND_DLQ, .batch_max = w->batch_max,
        .max_attempts = 1, .backoff_ms = 1000, .poll_timeout_ms = 200, .stop = w->stop,
        .handler = &send_handler, .opaque = l,
    };
    l->loop = worker_loop_new(l->c, &lo);
    int64_t next_expire = mono_ms() + 60000;
    while (!stopping(w)) {
        /* Expired sent markers are invisible to kv_get but still stored:
         * sweep them now and then (one lane is enough). */
        if (l->tier < 0 && mono_ms() >= next_expire) {
            kv_expire(w->sent, now_ms());
            next_expire = mono_ms() + 600000;
        }
        /* Gauges updated here rather than at scrape time: the worker's state
         * may be gone while the shared HTTP server still answers. */
        metric_set(w->m.rl_tokens, ratelimit_tokens(w->rl, mono_us()));
        metric_set(w->m.paused, paused(w) ? 1 : 0);
        if (paused(w)) {
            sleep_unless_stopped(200, w->stop);
            continue;
        }
        worker_loop_step(l->loop);
    }
    worker_loop_free(l->loop);
    l->loop = NULL;
    bus_consumer_free(l->c);
    l->c = NULL;
    return NULL;
}

/* ---- setup ---- */


static int ready_check(void *opaque, char *why, size_t whylen)
{
    if (!atomic_load(&send_ready)) {
        snprintf(why, whylen, "suppression copy catching up");
        return 0;
    }
    return 1;
}


static void metrics_init(struct sender *w)
{
    const char *h = "outbound recipients by result";
    w->m.delivered = metric_counter("mailfleet_send_messages_total", h, "result=\"delivered\"");
    w->m.deferred = metric_counter("mailfleet_send_messages_total", h, "result=\"deferred\"");
    w->m.bounced_perm = metric_counter("mailfleet_send_messages_total", h, "result=\"bounced_permanent\"");
    w->m.bounced_trans = metric_counter("mailfleet_send_messages_total", h, "result=\"bounced_transient\"");
    w->m.suppressed_res = metric_counter("mailfleet_send_messages_total", h, "result=\"suppressed\"");
    w->m.dead = metric_counter("mailfleet_send_messages_total", h, "result=\"dead_letter\"");
    w->m.suppressed = metric_counter("mailfleet_send_suppressed_total", "recipients skipped as suppressed", NULL);
    w->m.attempt_seconds = metric_histogram("mailfleet_send_attempt_seconds", "one delivery attempt", NULL,
                                            metrics_latency_buckets, metrics_latency_buckets_n);
    w->m.rl_tokens = metric_gauge("mailfleet_send_ratelimit_tokens", "tokens in the rate limiter bucket", NULL);
    w->m.rl_rate = metric_gauge("mailfleet_send_ratelimit_rate", "rate limit, messages per second (0 = none)", NULL);
    w->m.rl_burst = metric_gauge("mailfleet_send_ratelimit_burst", "rate limiter bucket size", NULL);
    w->m.paused = metric_gauge("mailfleet_send_paused", "1 while `mailfleet send pause` is in effect", NULL);
    metric_set(w->m.rl_rate, ratelimit_rate(w->rl));
    metric_set(w->m.rl_burst, ratelimit_burst(w->rl));
}

static void sender_free(struct sender *w)
{
    suppression_copy_free(w->supp);
    kv_close(w->sent);
    bus_close(w->bus);
    ratelimit_free(w->rl);
    dkim_signer_free(w->dkim);
    tokens_free(w->tokens);
    free(w->verp_key);
    free(w->pause_file);
    free(w->transport_uri);
    free(w->smtp_password);
    free(w->ses_access);
    free(w->ses_secret);
    free(w->ses_token);
    config_list_free(w->tiers, w->n_tiers);
    free(w->tier_ms);
}

static int sender_init(struct sender *w, const struct worker_env *env, char *err, size_t errlen)
{
    const struct config *cfg = env->cfg;
    w->cfg = cfg;
    w->stop = env->stop;
    /* [mailfleet] token_keys signs unsubscribe URLs and yields the VERP key. */
    w->tokens = common_tokens(cfg, err, errlen);
    if (!w->tokens)
        return -EINVAL;
    w->verp_key = verp_key_derive(w->tokens);
    /* These end up in MAIL FROM and headers: check them like data. */
    char addr_probe[ADDRESS_BUFSZ];
    snprintf(addr_probe, sizeof(addr_probe), "%s+x@%s", config_str(cfg, "send", "bounce_prefix"),
             config_str(cfg, "send", "bounce_domain"));
    if (strchr(config_str(cfg, "send", "bounce_prefix"), '+') || address_normalize(addr_probe, addr_probe, sizeof(addr_probe)) != 0) {
        snprintf(err, errlen, "[send] bounce_prefix / bounce_domain do not make an address");
        return -EINVAL;
    }
    snprintf(addr_probe, sizeof(addr_probe), "unsubscribe+x@%s", config_str(cfg, "send", "unsubscribe_domain"));
    if (address_normalize(addr_probe, addr_probe, sizeof(addr_probe)) != 0) {
        snprintf(err, errlen, "[send] unsubscribe_domain is not a domain");
        return -EINVAL;
    }
    w->n_tiers = config_list(cfg, "send", "retry_tiers", &w->tiers);
    if (w->n_tiers == 0) {
        snprintf(err, errlen, "[send] retry_tiers: at least one delay is needed");
        return -EINVAL;
    }
    w->tier_ms = xcalloc(w->n_tiers, sizeof(int64_t));
    for (size_t i = 0; i < w->n_tiers; i++) {
        w->tier_ms[i] = duration_parse_ms(w->tiers[i]);
        if (w->tier_ms[i] <= 0 || strspn(w->tiers[i], "0123456789smhd") != strlen(w->tiers[i])) {
            snprintf(err, errlen, "[send] retry_tiers: %s is not a duration like 1m or 2h", w->tiers[i]);
            return -EINVAL;
        }
    }
    w->max_age_ms = config_duration_ms(cfg, "send", "max_retry_age");
    w->marker_ttl_ms = config_duration_ms(cfg, "send", "sent_marker_ttl");
    w->unsub_ttl_ms = config_duration_ms(cfg, "send", "unsubscribe_ttl");
    w->batch_max = worker_loop_batch_max(cfg, "send");
    w->pause_file = send_pause_file(cfg);
    w->transport_uri = xstrdup(config_str(cfg, "send", "transport"));
    w->smtp_password = config_secret(cfg, "send", "smtp_password");
    w->ses_access = config_secret(cfg, "send", "ses_access_key");
    w->ses_secret = config_secret(cfg, "send", "ses_secret_key");
    w->ses_token = config_secret(cfg, "send", "ses_session_token");
    int64_t conns = config_int(cfg, "send", "connections"), pd = config_int(cfg, "send", "per_domain");
    w->tc = (struct transport_config){
        .connections = conns < 1 ? 1 : conns > 256 ? 256 : (int)conns,
        .per_domain = pd < 1 ? 1 : pd > 256 ? 256 : (int)pd,
        .starttls = config_str(cfg, "send", "smtp_starttls"),
        .user = config_isset(cfg, "send", "smtp_user") ? config_str(cfg, "send", "smtp_user") : NULL,
        .password = w->smtp_password,
        .helo = config_str(cfg, "send", "smtp_helo"),
        .ca_file = config_isset(cfg, "send", "tls_ca_file") ? config_str(cfg, "send", "tls_ca_file") : NULL,
        .tls_verify = config_bool(cfg, "send", "tls_verify"),
        .timeout_ms = config_duration_ms(cfg, "send", "timeout"),
        .connect_timeout_ms = config_duration_ms(cfg, "send", "connect_timeout"),
        .ses_endpoint = config_isset(cfg, "send", "ses_endpoint") ? config_str(cfg, "send", "ses_endpoint") : NULL,
        .access_key = w->ses_access, .secret_key = w->ses_secret, .session_token = w->ses_token,
    };
    w->rl = ratelimit_new((double)config_int(cfg, "send", "rate"), (double)config_int(cfg, "send", "burst"));
    w->list_unsubscribe = config_bool(cfg, "send", "list_unsubscribe");
    if (config_isset(cfg, "send", "dkim_key_file")) {
        const char *dom = config_isset(cfg, "send", "dkim_domain") ? config_str(cfg, "send", "dkim_domain") : NULL;
        w->dkim = dkim_signer_new(config_str(cfg, "send", "dkim_algorithm"), config_str(cfg, "send", "dkim_selector"),
                                  dom, config_str(cfg, "send", "dkim_key_file"), err, errlen);
        if (!w->dkim)
            return -EINVAL;
    }
    /* Check the transport settings now: a bad URI is a startup error. */
    struct transport *probe = transport_open(w->transport_uri, &w->tc, err, errlen);
    if (!probe)
        return -EINVAL;
    transport_free(probe);

    struct bus_options bo = { .client_id = "mailfleet-send" };
    const char *compacted[] = { TOPIC_SUPPRESSION, NULL };
    bo.compacted_topics = compacted;
    w->bus = common_bus(cfg, &bo, err, errlen);
    if (!w->bus)
        return -EIO;

    struct strbuf d;
    strbuf_init(&d);
    strbuf_appendf(&d, "%s/send/sent", config_str(cfg, "mailfleet", "state_dir"));
    w->sent = kv_open(d.data, "sent", 0, err, errlen);
    strbuf_reset(&d);
    strbuf_appendf(&d, "%s/send/suppression", config_str(cfg, "mailfleet", "state_dir"));
    if (w->sent)
        w->supp = suppression_copy_open(d.data, err, errlen);
    strbuf_free(&d);
    if (!w->sent || !w->supp)
        return -EIO;
    return 0;
}

static int send_run(struct worker_env *env)
{
    struct sender w = { 0 };
    char err[512];
    if (sender_init(&w, env, err, sizeof(err)) != 0) {
        log_kv(LOG_ERROR, "send cannot start", "error", err, NULL);
        sender_free(&w);
        return 1;
    }
    metrics_init(&w);
    if (env->http)
        http_ready_add(env->http, "send", ready_check, NULL);

    char host[128] = "local", group[256];
    gethostname(host, sizeof(host) - 1);
    snprintf(group, sizeof(group), "%s.suppression.%s", config_str(env->cfg, "send", "group"), host);
    if (suppression_copy_start(w.supp, w.bus, group, env->stop, err, sizeof(err)) != 0) {
        log_kv(LOG_ERROR, "send cannot start", "error", err, NULL);
        sender_free(&w);
        return 1;
    }

    size_t n_lanes = 1 + w.n_tiers;
    struct lane *lanes = xcalloc(n_lanes, sizeof(*lanes));
    int rc = 0;
    size_t started = 0;
    for (size_t i = 0; i < n_lanes; i++) {
        struct lane *l = &lanes[i];
        l->w = &w;
        l->tier = (int)i - 1;
        if (i == 0) {
            snprintf(l->topic, sizeof(l->topic), "%s", TOPIC_OUTBOUND);
            snprintf(l->group, sizeof(l->group), "%s", config_str(env->cfg, "send", "group"));
        } else {
            snprintf(l->topic, sizeof(l->topic), "%s%s", TOPIC_OUTBOUND_RETRY, w.tiers[i - 1]);
            snprintf(l->group, sizeof(l->group), "%s.retry.%s", config_str(env->cfg, "send", "group"),
                     w.tiers[i - 1]);
        }
        l->t = transport_open(w.transport_uri, &w.tc, err, sizeof(err));
        if (!l->t || pthread_create(&l->tid, NULL, lane_main, l) != 0) {
            log_kv(LOG_ERROR, "send cannot start a lane", "topic", l->topic, "error", err, NULL);
            transport_free(l->t);
            l->t = NULL;
            *env->stop = 1;
            rc = 1;
            break;
        }
        started++;
    }
    if (rc == 0) {
        worker_started(env);
        log_kv(LOG_INFO, "send running", "transport", transport_name(lanes[0].t), NULL);
    }
    for (size_t i = 0; i < started; i++) {
        pthread_join(lanes[i].tid, NULL);
        rc |= lanes[i].rc;
        transport_free(lanes[i].t);
        store_close(lanes[i].store[0]);
        store_close(lanes[i].store[1]);
    }
    free(lanes);
    atomic_store(&send_ready, 0);
    sender_free(&w);
    log_kv(LOG_INFO, "send stopped", NULL);
    return rc;
}

const struct worker_def send_worker = { "send", send_config_keys, send_run };
