/* spool — store + bus before 250, the forwarder, dedupe (see spool.h). */
#include "spool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "bus.h"
#include "kv.h"
#include "log.h"
#include "rules.h"
#include "smtp_session.h"
#include "store.h"
#include "strbuf.h"
#include "timeutil.h"

#define SPOOL_TOPIC  "ingest.spool"
#define DEDUPE_TOPIC "ingest.dedupe"
#define SPOOL_GROUP  "ingest-forwarder"
#define STORE_RETRY_MS 10000   /* after a store failure, spool directly this long */
#define MAX_RECORDS  64   /* records one message usually makes: dedupe_recover's look-back */
#define DEDUPE_PENDING_MAX 20000

/* Dedupe markers waiting to be written: a kv put is an fsync of its own, so
 * markers are written by one thread behind the 250 instead of before it, and
 * looked up here until they are on disk.  A crash in between would lose the
 * marker of a message whose 250 the client may never have read (it then
 * retries), so on a local queue (the local bus, or the spool in front of
 * Kafka) each marker also travels as a record on ingest.dedupe in the same
 * transaction as the message's records, and spool_open puts the markers of
 * the newest such records back (dedupe_recover). */
#define MARK_BUCKETS 4096

struct pending_mark {
    struct pending_mark *next;      /* FIFO, in write order */
    struct pending_mark *chain;     /* same bucket */
    char key[65];
    char id[ID_LEN + 1];
    int64_t expires_ms;
};

struct spool {
    int64_t next_expire_ms;    /* marker_main's next kv_expire sweep */
    int64_t store_down_until_ms;  /* mono: spool directly until then */
    struct spool_conf conf;
    struct bus *bus;            /* the real bus */
    struct store *store;        /* store_incoming */
    struct bus *spool_bus;      /* forwarding mode only */
    struct store *spool_store;  /* forwarding mode only */
    struct kv *dedupe;
    pthread_t forwarder;
    int forwarder_started;
    volatile int stop;
    pthread_t marker;
    int marker_started, marker_stop;
    pthread_mutex_t mlock;
    pthread_cond_t mcond;
    struct pending_mark *mhead, *mtail;
    struct pending_mark *buckets[MARK_BUCKETS];
    size_t n_pending;
};

/* The key is hex SHA-256: its first digits are already uniform. */
static size_t mark_bucket(const char *key)
{
    size_t h = 0;
    for (int i = 0; i < 3; i++)
        h = h * 16 + (size_t)(key[i] <= '9' ? key[i] - '0' : key[i] - 'a' + 10);
    return h % MARK_BUCKETS;
}

static void *marker_main(void *arg)
{
    struct spool *sp = arg;
    pthread_mutex_lock(&sp->mlock);
    for (;;) {
        while (!sp->mhead && !sp->marker_stop)
            pthread_cond_wait(&sp->mcond, &sp->mlock);
        if (!sp->mhead)
            break;
        /* Only this thread removes, producers append at the tail: the head
         * stays valid while unlocked. */
        struct pending_mark *e = sp->mhead;
        pthread_mutex_unlock(&sp->mlock);
        if (kv_put(sp->dedupe, e->key, 64, e->id, ID_LEN, e->expires_ms) < 0)
            log_kv(LOG_WARN, "dedupe marker not written", "id", e->id, NULL);
        /* Expired markers would otherwise fill the LMDB map after some
         * million messages, and dedupe would stop: sweep once a minute. */
        if (mono_ms() >= sp->next_expire_ms) {
            kv_expire(sp->dedupe, now_ms());
            sp->next_expire_ms = mono_ms() + 60000;
        }
        pthread_mutex_lock(&sp->mlock);
        sp->mhead = e->next;
        if (!sp->mhead)
            sp->mtail = NULL;
        struct pending_mark **pp = &sp->buckets[mark_bucket(e->key)];
        while (*pp != e)
            pp = &(*pp)->chain;
        *pp = e->chain;
        sp->n_pending--;
        free(e);
    }
    pthread_mutex_unlock(&sp->mlock);
    return NULL;
}

static void mark_add(struct spool *sp, const char *key, const char *id, int64_t expires_ms)
{
    struct pending_mark *e = xcalloc(1, sizeof(*e));
    memcpy(e->key, key, 65);
    memcpy(e->id, id, ID_LEN + 1);
    e->expires_ms = expires_ms;
    pthread_mutex_lock(&sp->mlock);
    if (sp->n_pending >= DEDUPE_PENDING_MAX) {
        /* The writer is far behind: this one waits for its own fsync. */
        pthread_mutex_unlock(&sp->mlock);
        kv_put(sp->dedupe, key, 64, id, ID_LEN, expires_ms);
        free(e);
        return;
    }
    if (sp->mtail)
        sp->mtail->next = e;
    else
        sp->mhead = e;
    sp->mtail = e;
    size_t b = mark_bucket(key);
    e->chain = sp->buckets[b];
    sp->buckets[b] = e;
    sp->n_pending++;
    pthread_cond_signal(&sp->mcond);
    pthread_mutex_unlock(&sp->mlock);
}

/* 1 and the first id when key was seen within the window. */
static int mark_find(struct spool *sp, const char *key, char id[ID_LEN + 1])
{
    int found = 0;
    pthread_mutex_lock(&sp->mlock);
    for (struct pending_mark *e = sp->buckets[mark_bucket(key)]; e && !found; e = e->chain)
        if (memcmp(e->key, key, 64) == 0) {
            memcpy(id, e->id, ID_LEN + 1);
            found = 1;
        }
    pthread_mutex_unlock(&sp->mlock);
    if (found)
        return 1;
    void *val = NULL;
    size_t vlen = 0;
    if (kv_get(sp->dedupe, key, 64, &val, &vlen) == 1 && vlen == ID_LEN) {
        memcpy(id, val, ID_LEN);
        id[ID_LEN] = 0;
        found = 1;
    }
    free(val);
    return found;
}

static void *forwarder_main(void *arg);

/* The local queue the message records go to, where a marker record commits
 * with them; NULL with Kafka and no spool (markers are then kv-only). */
static struct bus *dedupe_bus(const struct spool *sp)
{
    if (sp->spool_bus)
        return sp->spool_bus;
    return strncmp(sp->conf.bus_uri, "local:", 6) == 0 ? sp->bus : NULL;
}

/* Markers still pending at a crash are among the newest DEDUPE_PENDING_MAX
 * records of ingest.dedupe (beyond that, mark_add writes synchronously). */
static void dedupe_recover(struct spool *sp)
{
    struct bus *b = dedupe_bus(sp);
    struct bus_partition_stats st;
    char err[256];
    if (!b || bus_topic_stats(b, DEDUPE_TOPIC, NULL, &st, 1, err, sizeof(err)) < 1)
        return;
    int64_t from = st.high - DEDUPE_PENDING_MAX - MAX_RECORDS;
    if (from < st.low)
        from = st.low;
    int64_t now = now_ms();
    long restored = 0;
    for (int64_t off = from; off < st.high; off++) {
        struct bus_record *r = NULL;
        if (bus_read_at(b, DEDUPE_TOPIC, 0, off, &r, 1000) != 1)
            continue;
        char val[ID_LEN + 32];
        long long expires = 0;
        size_t vl = r->value_len < sizeof(val) - 1 ? r->value_len : sizeof(val) - 1;
        memcpy(val, r->value ? r->value : "", vl);
        val[vl] = '\0';
        if (r->key_len == 64 && vl > ID_LEN && val[ID_LEN] == ' ' &&
            (expires = strtoll(val + ID_LEN + 1, NULL, 10)) > now &&
            kv_get(sp->dedupe, r->key, 64, NULL, NULL) != 1 &&
            kv_put(sp->dedupe, r->key, 64, val, ID_LEN, expires) == 0)
            restored++;
        bus_record_free(r);
    }
    if (restored) {
        char n[32];
        snprintf(n, sizeof(n), "%ld", restored);
        log_kv(LOG_INFO, "dedupe markers restored from the queue", "count", n, NULL);
    }
}

struct spool *spool_open(const struct spool_conf *conf, char *err, size_t errlen)
{
    struct spool *sp = xcalloc(1, sizeof(*sp));
    sp->conf = *conf;
    sp->store = conf->store;
    sp->spool_store = conf->spool_store;
    sp->conf.store = sp->conf.spool_store = NULL;   /* owned through sp->store, sp->spool_store */
    pthread_mutex_init(&sp->mlock, NULL);
    pthread_cond_init(&sp->mcond, NULL);
    sp->bus = bus_open(conf->bus_uri, conf->bus_opt, err, errlen);
    if (!sp->bus)
        goto fail;
    if (!sp->store) {
        snprintf(err, errlen, "%s: no incoming store", __func__);
        goto fail;
    }
    if (conf->spool_uri && *conf->spool_uri) {
        if (strncmp(conf->spool_uri, "local:", 6) != 0) {
            snprintf(err, errlen, "spool '%s' must be local:<dir>", conf->spool_uri);
            goto fail;
        }
        struct bus_options o = { .client_id = "mailfleet-ingest-spool" };
        sp->spool_bus = bus_open(conf->spool_uri, &o, err, errlen);
        if (!sp->spool_bus)
            goto fail;
        if (!sp->spool_store) {
            snprintf(err, errlen, "%s: forwarding mode needs a spool store", __func__);
            goto fail;
        }
    }
    if (conf->dedupe_ttl_ms > 0) {
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/ingest", conf->state_dir);
        sp->dedupe = kv_open(dir, "dedupe", 0, err, errlen);
        if (!sp->dedupe)
            goto fail;
        kv_expire(sp->dedupe, now_ms());
        dedupe_recover(sp);
        if (pthread_create(&sp->marker, NULL, marker_main, sp) != 0) {
            snprintf(err, errlen, "cannot start the dedupe marker thread");
            goto fail;
        }
        sp->marker_started = 1;
    }
    if (sp->spool_bus) {
        if (pthread_create(&sp->forwarder, NULL, forwarder_main, sp) != 0) {
            snprintf(err, errlen, "cannot start the spool forwarder thread");
            goto fail;
        }
        sp->forwarder_started = 1;
    }
    return sp;
fail:
    spool_close(sp);
    return NULL;
}

void spool_close(struct spool *sp)
{
    if (!sp)
        return;
    sp->stop = 1;
    if (sp->forwarder_started)
        pthread_join(sp->forwarder, NULL);
    if (sp->marker_started) {
        pthread_mutex_lock(&sp->mlock);
        sp->marker_stop = 1;   /* the writer drains what is pending first */
        pthread_cond_signal(&sp->mcond);
        pthread_mutex_unlock(&sp->mlock);
        pthread_join(sp->marker, NULL);
    }
    pthread_mutex_destroy(&sp->mlock);
    pthread_cond_destroy(&sp->mcond);
    kv_close(sp->dedupe);
    bus_close(sp->spool_bus);
    store_close(sp->spool_store);
    bus_close(sp->bus);
    store_close(sp->store);
    free(sp);
}

int spool_forwarding(const struct spool *sp)
{
    return sp->spool_bus != NULL;
}

int spool_backlog(struct spool *sp, int64_t *records, double *oldest_age_s)
{
    *records = 0;
    *oldest_age_s = 0;
    if (!sp->spool_bus)
        return 0;
    struct bus_partition_stats st[8];
    char err[256];
    int n = bus_topic_stats(sp->spool_bus, SPOOL_TOPIC, SPOOL_GROUP, st, 8, err, sizeof(err));
    if (n < 0)
        return n;
    int64_t now = now_ms();
    for (int i = 0; i < n; i++) {
        int64_t from = st[i].committed >= 0 ? st[i].committed : st[i].low;
        if (st[i].high > from)
            *records += st[i].high - from;
        if (st[i].committed_ts_ms > 0 && (now - st[i].committed_ts_ms) / 1000.0 > *oldest_age_s)
            *oldest_age_s = (now - st[i].committed_ts_ms) / 1000.0;
    }
    return 0;
}

/* ---- records ------------------------------------------------------------------ */

static void sha256_hex(EVP_MD_CTX *md, char out[65])
{
    unsigned char d[32];
    unsigned int dl = 0;
    EVP_DigestFinal_ex(md, d, &dl);
    hex_encode(d, 32, out);
}

/* Message-ID as found in the header block, when it is one plain line. */
static size_t find_message_id(const char *p, size_t len, const char **out)
{
    const char *end = p + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t ll = eol ? (size_t)(eol - p) : (size_t)(end - p);
        if (ll <= 1)
            return 0;   /* end of the header block */
        if (ll > 11 && strncasecmp(p, "Message-ID:", 11) == 0) {
            const char *v = p + 11, *ve = p + ll;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            const char *next = eol ? eol + 1 : end;
            if (next < end && (*next == ' ' || *next == '\t'))
                return 0;   /* folded: not worth guessing */
            *out = v;
            return (size_t)(ve - v) <= 998 ? (size_t)(ve - v) : 0;
        }
        p = eol ? eol + 1 : end;
    }
    return 0;
}

static void json_envelope(struct strbuf *b, const struct smtp_message *m, const struct rules *rules,
                          enum rule_action action, int only, int feedback)
{
    strbuf_append(b, "\"envelope\":{\"mail_from\":");
    strbuf_append_json_string(b, m->mail_from);
    strbuf_append(b, ",\"rcpt_to\":[");
    int first = 1;
    for (size_t i = 0; i < m->n_rcpts; i++) {
        if (rules_action(rules, m->rcpts[i].rule) != action || (only >= 0 && (size_t)only != i))
            continue;
        if (!first)
            strbuf_append(b, ",");
        strbuf_append_json_string(b, m->rcpts[i].addr);
        first = 0;
    }
    strbuf_append(b, "],\"helo\":");
    strbuf_append_json_string(b, m->helo);
    strbuf_append(b, ",\"client_ip\":");
    strbuf_append_json_string(b, m->client_ip);
    strbuf_appendf(b, ",\"tls\":%s", m->tls ? "true" : "false");
    if (!feedback && m->tls && m->tls_version) {
        strbuf_append(b, ",\"tls_version\":");
        strbuf_append_json_string(b, m->tls_version);
        strbuf_append(b, ",\"tls_cipher\":");
        strbuf_append_json_string(b, m->tls_cipher ? m->tls_cipher : "");
    }
    strbuf_append(b, ",\"auth_user\":");
    if (m->auth_user)
        strbuf_append_json_string(b, m->auth_user);
    else
        strbuf_append(b, "null");
    strbuf_append(b, "}");
}

static void json_store(struct strbuf *b, const char *key, size_t size, const char *sha)
{
    strbuf_append(b, "\"store\":{\"key\":");
    strbuf_append_json_string(b, key);
    strbuf_appendf(b, ",\"size\":%zu,\"sha256\":\"%s\"}", size, sha);
}

struct out_record {
    const char *topic;
    char key[ID_LEN + 1];
    struct strbuf value;
};

/* First recipient index with this action, or -1. */
static int first_with(const struct smtp_message *m, const struct rules *rules, enum rule_action a)
{
    for (size_t i = 0; i < m->n_rcpts; i++)
        if (rules_action(rules, m->rcpts[i].rule) == a)
            return (int)i;
    return -1;
}

static size_t build_records(const struct smtp_message *m, const struct rules *rules, const char *skey,
                            const char *sha, int spooled, struct out_record *out)
{
    size_t n = 0;
    char ts[32];
    rfc3339_ms(now_ms(), ts, sizeof(ts));
    int cap = first_with(m, rules, RULE_CAPTURE);
    if (cap >= 0) {
        struct out_record *r = &out[n++];
        r->topic = "mailfleet.inbound";
        memcpy(r->key, m->id, sizeof(r->key));
        strbuf_init(&r->value);
        strbuf_appendf(&r->value, "{\"schema\":\"mailfleet.inbound.v1\",\"id\":\"%s\",\"received_at\":\"%s\",\"rule\":",
                       m->id, ts);
        strbuf_append_json_string(&r->value, rules_name(rules, m->rcpts[cap].rule));
        strbuf_append(&r->value, ",");
        json_envelope(&r->value, m, rules, RULE_CAPTURE, -1, 0);
        strbuf_append(&r->value, ",");
        json_store(&r->value, skey, m->data.len, sha);
        const char *mid = NULL;
        size_t midlen = find_message_id(m->data.data + m->received_len, m->data.len - m->received_len, &mid);
        if (midlen) {
            char *tmp = xstrndup(mid, midlen);
            strbuf_append(&r->value, ",\"message_id\":");
            strbuf_append_json_string(&r->value, tmp);
            free(tmp);
        }
        if (spooled)
            strbuf_append(&r->value, ",\"spooled\":true");
        strbuf_append(&r->value, "}");
    }
    int fb = first_with(m, rules, RULE_FEEDBACK);
    if (fb >= 0) {
        struct out_record *r = &out[n++];
        r->topic = "mailfleet.feedback";
        memcpy(r->key, m->id, sizeof(r->key));
        strbuf_init(&r->value);
        strbuf_appendf(&r->value, "{\"schema\":\"mailfleet.feedback.v1\",\"id\":\"%s\",\"kind\":\"dsn\",\"received_at\":\"%s\",\"rule\":",
                       m->id, ts);
        strbuf_append_json_string(&r->value, rules_name(rules, m->rcpts[fb].rule));
        strbuf_append(&r->value, ",");
        json_envelope(&r->value, m, rules, RULE_FEEDBACK, -1, 1);
        strbuf_append(&r->value, ",");
        json_store(&r->value, skey, m->data.len, sha);
        strbuf_append(&r->value, "}");
    }
    /* Each unsubscribe address carries its own token: one record each. */
    for (size_t i = 0; i < m->n_rcpts; i++) {   /* out holds n_rcpts + 2 */
        char token[ADDRESS_BUFSZ];
        if (rules_action(rules, m->rcpts[i].rule) != RULE_UNSUBSCRIBE ||
            rules_unsubscribe_token(m->rcpts[i].addr, token, sizeof(token)) != 0)
            continue;
        struct out_record *r = &out[n++];
        r->topic = "mailfleet.feedback";
        id_new(r->key);
        strbuf_init(&r->value);
        strbuf_appendf(&r->value, "{\"schema\":\"mailfleet.feedback.v1\",\"id\":\"%s\",\"kind\":\"unsubscribe\",\"received_at\":\"%s\",\"rule\":",
                       r->key, ts);
        strbuf_append_json_string(&r->value, rules_name(rules, m->rcpts[i].rule));
        strbuf_append(&r->value, ",");
        json_envelope(&r->value, m, rules, RULE_UNSUBSCRIBE, (int)i, 1);
        strbuf_append(&r->value, ",");
        json_store(&r->value, skey, m->data.len, sha);
        strbuf_append(&r->value, ",\"unsubscribe\":{\"method\":\"mailto\",\"token\":");
        strbuf_append_json_string(&r->value, token);
        strbuf_append(&r->value, "}}");
    }
    return n;
}

static void fail451(struct spool_result *res, const char *why, const char *err)
{
    res->code = 451;
    snprintf(res->text, sizeof(res->text), "4.3.0 Error: queue file write error, try again later");
    log_kv(LOG_ERROR, "message not queued", "id", res->id, "stage", why, "error", err, NULL);
}

void spool_put(struct spool *sp, const struct smtp_message *m, const struct rules *rules,
               struct spool_result *res)
{
    char err[512] = "";
    char sha[65], dkey[65];
    memset(res, 0, sizeof(*res));
    memcpy(res->id, m->id, sizeof(res->id));

    /* Dedupe key: content without our Received: (it differs per attempt) and
     * the envelope. */
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, m->data.data + m->received_len, m->data.len - m->received_len);
    EVP_DigestUpdate(md, m->mail_from, strlen(m->mail_from) + 1);
    for (size_t i = 0; i < m->n_rcpts; i++)
        EVP_DigestUpdate(md, m->rcpts[i].addr, strlen(m->rcpts[i].addr) + 1);
    EVP_DigestUpdate(md, m->auth_user ? m->auth_user : "", m->auth_user ? strlen(m->auth_user) + 1 : 1);
    sha256_hex(md, dkey);
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, m->data.data, m->data.len);
    sha256_hex(md, sha);
    EVP_MD_CTX_free(md);

    if (sp->dedupe && mark_find(sp, dkey, res->id)) {
        res->duplicate = 1;
        res->code = 250;
        snprintf(res->text, sizeof(res->text), "2.0.0 Ok: queued as %s", res->id);
        return;
    }

    char skey[96];
    time_t t = (time_t)(m->received_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(skey, sizeof(skey), "%04d-%02d-%02d/%s.eml", (tm.tm_year + 1900) % 10000, (tm.tm_mon + 1) % 100,
             tm.tm_mday % 100, m->id);

    int spooled = 0;
    /* After a store failure, mail goes straight to the spool for a while: a
     * down S3 endpoint costs a connect timeout per message, which would
     * starve the worker threads (AUTH checks share them).  The forwarder
     * uploads spooled mail once the store answers again. */
    int skip_store = sp->spool_store && mono_ms() < __atomic_load_n(&sp->store_down_until_ms, __ATOMIC_RELAXED);
    if (skip_store ||
        store_put_buf(sp->store, skey, m->data.data, m->data.len, "message/rfc822", NULL, err, sizeof(err)) != 0) {
        if (!sp->spool_store) {
            fail451(res, "store", err);
            return;
        }
        if (!skip_store) {
            __atomic_store_n(&sp->store_down_until_ms, mono_ms() + STORE_RETRY_MS, __ATOMIC_RELAXED);
            log_kv(LOG_WARN, "incoming store failed: raw mail kept in the spool", "id", m->id, "error", err, NULL);
        }
        if (store_put_buf(sp->spool_store, skey, m->data.data, m->data.len, "message/rfc822", NULL, err,
                          sizeof(err)) != 0) {
            fail451(res, "spool store", err);
            return;
        }
        spooled = 1;
    }

    /* one capture record, one feedback record, one per unsubscribe address,
     * and the dedupe marker: sized from the message, never truncated */
    struct out_record *recs = xcalloc(m->n_rcpts + 2, sizeof(*recs));
    size_t n = build_records(m, rules, skey, sha, spooled, recs);
    struct bus_record *br = xcalloc(n + 1, sizeof(*br));
    struct bus_header (*hdrs)[3] = xcalloc(n ? n : 1, sizeof(*hdrs));
    for (size_t i = 0; i < n; i++) {
        br[i] = (struct bus_record){ .topic = recs[i].topic, .key = recs[i].key, .key_len = ID_LEN,
                                     .value = recs[i].value.data, .value_len = recs[i].value.len,
                                     .partition = -1 };
        if (sp->spool_bus) {
            hdrs[i][0] = (struct bus_header){ "mf.topic", recs[i].topic, strlen(recs[i].topic) };
            hdrs[i][1] = (struct bus_header){ "mf.raw", spooled ? "spool" : "store", 5 };
            hdrs[i][2] = (struct bus_header){ "mf.raw.key", skey, strlen(skey) };
            br[i].topic = SPOOL_TOPIC;
            br[i].headers = hdrs[i];
            br[i].n_headers = 3;
        }
    }
    int64_t expires_ms = now_ms() + sp->conf.dedupe_ttl_ms;
    char dval[ID_LEN + 32];
    size_t nb = n;
    if (n && sp->dedupe && dedupe_bus(sp)) {
        int dl = snprintf(dval, sizeof(dval), "%s %lld", m->id, (long long)expires_ms);
        br[nb++] = (struct bus_record){ .topic = DEDUPE_TOPIC, .key = dkey, .key_len = 64, .value = dval,
                                        .value_len = (size_t)dl, .partition = -1 };
    }
    int rc = n ? bus_produce(sp->spool_bus ? sp->spool_bus : sp->bus, br, nb, sp->conf.produce_timeout_ms, err,
                             sizeof(err))
               : 0;
    for (size_t i = 0; i < n; i++)
        strbuf_free(&recs[i].value);
    free(recs);
    free(br);
    free(hdrs);
    if (rc != 0) {
        fail451(res, sp->spool_bus ? "spool queue" : "bus", err);
        return;
    }
    if (sp->dedupe)
        mark_add(sp, dkey, m->id, expires_ms);
    res->code = 250;
    snprintf(res->text, sizeof(res->text), "2.0.0 Ok: queued as %s", m->id);
}

/* ---- forwarder ------------------------------------------------------------------ */

static int sink_buf(void *opaque, const void *buf, size_t len)
{
    strbuf_append_n(opaque, buf, len);
    return 0;
}

static void backoff_sleep(struct spool *sp, int *delay_ms)
{
    for (int waited = 0; waited < *delay_ms && !sp->stop; waited += 50)
        usleep(50 * 1000);
    *delay_ms = *delay_ms * 2 > 5000 ? 5000 : *delay_ms * 2;
}

static char *header_str(const struct bus_record *r, const char *name)
{
    const struct bus_header *h = bus_record_header(r, name);
    return h ? xstrndup(h->value, h->value_len) : NULL;
}

/* Relays one spool record; 0 when done (commit), <0 to retry it. */
static int forward_one(struct spool *sp, const struct bus_record *r)
{
    char err[512] = "";
    char *topic = header_str(r, "mf.topic");
    char *raw = header_str(r, "mf.raw");
    char *rkey = header_str(r, "mf.raw.key");
    int rc = 0;
    if (!topic) {
        log_kv(LOG_ERROR, "spool record without mf.topic: dropped", NULL);
        goto out;
    }
    if (raw && strcmp(raw, "spool") == 0 && rkey) {
        /* Upload the raw mail first: a consumer must find it by its key. */
        struct strbuf b;
        strbuf_init(&b);
        rc = store_get_cb(sp->spool_store, rkey, 0, 0, sink_buf, &b, err, sizeof(err));
        if (rc == 0)
            rc = store_put_buf(sp->store, rkey, b.data ? b.data : "", b.len, "message/rfc822", NULL, err,
                               sizeof(err));
        else if (rc == -ENOENT)
            rc = 0;   /* uploaded and removed by an earlier pass: the record alone is left */
        strbuf_free(&b);
        if (rc != 0) {
            log_kv(LOG_WARN, "spool: incoming store still failing", "error", err, NULL);
            goto out;
        }
    }
    struct bus_record out = { .topic = topic, .key = r->key, .key_len = r->key_len, .value = r->value,
                              .value_len = r->value_len, .partition = -1 };
    rc = bus_produce(sp->bus, &out, 1, sp->conf.produce_timeout_ms, err, sizeof(err));
    if (rc != 0)
        log_kv(LOG_WARN, "spool: bus not reachable, will retry", "error", err, NULL);
out:
    free(topic);
    free(raw);
    free(rkey);
    return rc;
}

static void *forwarder_main(void *arg)
{
    struct spool *sp = arg;
    char err[512];
    const char *topics[] = { SPOOL_TOPIC, NULL };
    log_set_worker("ingest");
    struct bus_consumer *c = NULL;
    int delay = 100;
    while (!sp->stop && !c) {
        c = bus_consumer_new(sp->spool_bus, SPOOL_GROUP, topics, 1, err, sizeof(err));
        if (!c) {
            log_kv(LOG_ERROR, "spool forwarder cannot consume", "error", err, NULL);
            backoff_sleep(sp, &delay);
        }
    }
    delay = 100;
    /* Raw files uploaded from the spool store, deleted once every record
     * naming them is relayed (records of one message are adjacent). */
    char pending_raw[128] = "";
    while (!sp->stop && c) {
        struct bus_record *r = NULL;
        int n = bus_consumer_poll(c, &r, 200);
        if (n <= 0) {
            if (pending_raw[0]) {
                store_delete(sp->spool_store, pending_raw, err, sizeof(err));
                pending_raw[0] = 0;
            }
            if (n < 0)
                backoff_sleep(sp, &delay);
            continue;
        }
        char *rkey = header_str(r, "mf.raw.key");
        char *raw = header_str(r, "mf.raw");
        if (pending_raw[0] && (!rkey || strcmp(rkey, pending_raw) != 0)) {
            store_delete(sp->spool_store, pending_raw, err, sizeof(err));
            pending_raw[0] = 0;
        }
        if (forward_one(sp, r) == 0) {
            if (bus_consumer_commit(c, r) != 0)
                log_kv(LOG_ERROR, "spool forwarder: commit failed", NULL);
            if (raw && strcmp(raw, "spool") == 0 && rkey)
                snprintf(pending_raw, sizeof(pending_raw), "%s", rkey);
            delay = 100;
        } else {
            bus_consumer_seek(c, r);
            backoff_sleep(sp, &delay);
        }
        free(rkey);
        free(raw);
        bus_record_free(r);
    }
    bus_consumer_free(c);
    return NULL;
}
