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
#include "digest.h"
#include "feedback_record.h"
#include "ids.h"
#include "inbound_record.h"
#include "kv.h"
#include "log.h"
#include "rules.h"
#include "smtp_session.h"
#include "store.h"
#include "strbuf.h"
#include "timeutil.h"
#include "topics.h"
#include "worker_loop.h"

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
    stop_flag_t stop;           /* set by spool_close, read by the forwarder */
    atomic_int failed;          /* the forwarder's bus failed for good */
    pthread_mutex_t fwd_mu;     /* guards fwd_loop for spool_alive */
    struct worker_loop *fwd_loop;   /* the forwarder's loop while it exists */
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

/* The forwarder waits for every delivery report, not produce_timeout:
 * librdkafka fails what it cannot deliver within message.timeout.ms (5 min
 * by default).  A forwarder that gave up sooner and produced again would put
 * a record on the topic twice whenever the first try lands after all (seen
 * with every broker down for a minute).  A stop ends the wait within the
 * shutdown grace; the spool keeps the records for the next start. */
#define FORWARD_TIMEOUT_MS (6 * 60 * 1000)

/* The local queue the message records go to, where a marker record commits
 * with them; NULL with Kafka and no spool (markers are then kv-only). */
static struct bus *dedupe_bus(const struct spool *sp)
{
    if (sp->spool_bus)
        return sp->spool_bus;
    return strncmp(sp->conf.bus_uri, "local:", 6) == 0 ? sp->bus : NULL;
}

/* Markers still pending at a crash are among the newest DEDUPE_PENDING_MAX
 * records of ingest.dedupe (beyond that, mark_add writes synchronously).
 * A record that cannot be read is an error, not a gap: skipping it would
 * forget a marker and accept the client's retry as a new message. */
static int dedupe_recover(struct spool *sp, char *err, size_t errlen)
{
    struct bus *b = dedupe_bus(sp);
    struct bus_partition_stats st;
    int np = b ? bus_topic_stats(b, TOPIC_INGEST_DEDUPE, NULL, &st, 1, err, errlen) : 0;
    if (np <= 0)
        return np;
    int64_t from = st.high - DEDUPE_PENDING_MAX - MAX_RECORDS;
    if (from < st.low)
        from = st.low;
    int64_t now = now_ms();
    long restored = 0;
    for (int64_t off = from; off < st.high; off++) {
        struct bus_record *r = NULL;
        int rc = bus_read_at(b, TOPIC_INGEST_DEDUPE, 0, off, &r, 1000);
        if (rc == 0)
            continue;   /* expired by retention */
        if (rc < 0) {
            snprintf(err, errlen, "%s offset %lld: read failed (%s)", TOPIC_INGEST_DEDUPE, (long long)off,
                     strerror(-rc));
            return rc;
        }
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
    return 0;
}

struct spool *spool_open(const struct spool_conf *conf, char *err, size_t errlen)
{
    struct spool *sp = xcalloc(1, sizeof(*sp));
    sp->conf = *conf;
    sp->store = conf->store;
    sp->spool_store = conf->spool_store;
    sp->conf.store = sp->conf.spool_store = NULL;   /* owned through sp->store, sp->spool_store */
    pthread_mutex_init(&sp->mlock, NULL);
    pthread_mutex_init(&sp->fwd_mu, NULL);
    pthread_cond_init(&sp->mcond, NULL);
    sp->bus = bus_open(conf->bus_uri, conf->bus_opt, err, errlen);
    if (!sp->bus)
        goto fail;
    if (!sp->store) {
        snprintf(err, errlen, "%s: no incoming store", __func__);
        goto fail;
    }
    store_defer_sync(sp->store, 1);   /* put_durable syncs */
    if (sp->spool_store)
        store_defer_sync(sp->spool_store, 1);
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
        char rerr[256];
        if (dedupe_recover(sp, rerr, sizeof(rerr)) != 0) {
            snprintf(err, errlen, "cannot restore dedupe markers: %s", rerr);
            goto fail;
        }
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
    pthread_mutex_destroy(&sp->fwd_mu);
    pthread_cond_destroy(&sp->mcond);
    kv_close(sp->dedupe);
    bus_close(sp->spool_bus);
    store_close(sp->spool_store);
    bus_close(sp->bus);
    store_close(sp->store);
    free(sp);
}

int spool_failed(const struct spool *sp)
{
    return sp && atomic_load(&((struct spool *)sp)->failed);
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
    int n = bus_topic_stats(sp->spool_bus, TOPIC_INGEST_SPOOL, GROUP_INGEST_FORWARD, st, 8, err, sizeof(err));
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

/* The envelope of the recipients with this action (only >= 0: just that one). */
static struct record_envelope envelope_of(const struct smtp_message *m, const struct rules *rules,
                                          enum rule_action action, int only, int with_tls,
                                          const char **rcpts)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n_rcpts; i++)
        if (rules_action(rules, m->rcpts[i].rule) == action && (only < 0 || (size_t)only == i))
            rcpts[n++] = m->rcpts[i].addr;
    int tls_details = with_tls && m->tls && m->tls_version;
    return (struct record_envelope){
        .mail_from = m->mail_from, .rcpt_to = rcpts, .n_rcpt_to = n, .helo = m->helo,
        .client_ip = m->client_ip, .tls = m->tls,
        .tls_version = tls_details ? m->tls_version : NULL,
        .tls_cipher = tls_details ? (m->tls_cipher ? m->tls_cipher : "") : NULL,
        .auth_user = m->auth_user,
    };
}

struct out_record {
    const char *topic;
    char key[ID_LEN + 1];
    char *value;
    size_t len;
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
    int64_t now = now_ms();
    const char **rcpts = xcalloc(m->n_rcpts + 1, sizeof(*rcpts));
    struct record_store store = { skey, m->data.len, sha };
    int cap = first_with(m, rules, RULE_CAPTURE);
    if (cap >= 0) {
        struct out_record *r = &out[n++];
        r->topic = TOPIC_INBOUND;
        memcpy(r->key, m->id, sizeof(r->key));
        struct record_envelope env = envelope_of(m, rules, RULE_CAPTURE, -1, 1, rcpts);
        const char *mid = NULL;
        size_t midlen = find_message_id(m->data.data + m->received_len, m->data.len - m->received_len, &mid);
        char *mid_copy = midlen ? xstrndup(mid, midlen) : NULL;
        struct inbound_fields f = { .id = m->id, .received_ms = now,
                                    .rule = rules_name(rules, m->rcpts[cap].rule), .envelope = &env,
                                    .store = &store, .message_id = mid_copy, .spooled = spooled };
        r->value = inbound_record_build(&f, &r->len);
        free(mid_copy);
    }
    int fb = first_with(m, rules, RULE_FEEDBACK);
    if (fb >= 0) {
        struct out_record *r = &out[n++];
        r->topic = TOPIC_FEEDBACK;
        memcpy(r->key, m->id, sizeof(r->key));
        struct record_envelope env = envelope_of(m, rules, RULE_FEEDBACK, -1, 0, rcpts);
        struct feedback_fields f = { .id = m->id, .kind = "dsn", .received_ms = now,
                                     .rule = rules_name(rules, m->rcpts[fb].rule), .envelope = &env,
                                     .store = &store };
        r->value = feedback_record_build(&f, &r->len);
    }
    /* Each unsubscribe address carries its own token: one record each. */
    for (size_t i = 0; i < m->n_rcpts; i++) {   /* out holds n_rcpts + 2 */
        char token[ADDRESS_BUFSZ];
        if (rules_action(rules, m->rcpts[i].rule) != RULE_UNSUBSCRIBE ||
            rules_unsubscribe_token(m->rcpts[i].addr, token, sizeof(token)) != 0)
            continue;
        struct out_record *r = &out[n++];
        r->topic = TOPIC_FEEDBACK;
        id_new(r->key);
        struct record_envelope env = envelope_of(m, rules, RULE_UNSUBSCRIBE, (int)i, 0, rcpts);
        struct feedback_unsubscribe u = { .method = "mailto", .token = token };
        struct feedback_fields f = { .id = r->key, .kind = "unsubscribe", .received_ms = now,
                                     .rule = rules_name(rules, m->rcpts[i].rule), .envelope = &env,
                                     .store = &store, .unsubscribe = &u };
        r->value = feedback_record_build(&f, &r->len);
    }
    free(rcpts);
    return n;
}

static void fail451(struct spool_result *res, const char *why, const char *err)
{
    res->code = 451;
    snprintf(res->text, sizeof(res->text), "4.3.0 Error: queue file write error, try again later");
    log_kv(LOG_ERROR, "message not queued", "id", res->id, "stage", why, "error", err, NULL);
}

/* The dedupe key (content without our Received:, which differs per
 * attempt, and the envelope) and the hash of the content as stored. */
static void message_hashes(const struct smtp_message *m, char dkey[65], char sha[65])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, m->data.data + m->received_len, m->data.len - m->received_len);
    EVP_DigestUpdate(md, m->mail_from, strlen(m->mail_from) + 1);
    for (size_t i = 0; i < m->n_rcpts; i++)
        EVP_DigestUpdate(md, m->rcpts[i].addr, strlen(m->rcpts[i].addr) + 1);
    EVP_DigestUpdate(md, m->auth_user ? m->auth_user : "", m->auth_user ? strlen(m->auth_user) + 1 : 1);
    sha256_final_hex(md, dkey);
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, m->data.data, m->data.len);
    sha256_final_hex(md, sha);
    EVP_MD_CTX_free(md);
}

/* A put that is durable when it returns: the stores defer their fsyncs
 * (spool_open) and the threads that finish a put at the same time share one
 * syncfs (store.h, group sync) instead of paying three or four fsyncs each. */
static int put_durable(struct store *st, const char *key, const void *buf, size_t len, char *err,
                       size_t errlen)
{
    int rc = store_put_buf(st, key, buf, len, "message/rfc822", NULL, err, errlen);
    return rc == 0 ? store_sync(st, err, errlen) : rc;
}

/* Keeps the raw mail under skey in the store or, while the store fails,
 * in the spool store (*spooled = 1).  0, or -1 with res set to a 451. */
static int raw_put(struct spool *sp, const struct smtp_message *m, const char *skey, int *spooled,
                   struct spool_result *res)
{
    char err[512] = "";
    /* After a store failure, mail goes straight to the spool for a while: a
     * down S3 endpoint costs a connect timeout per message, which would
     * starve the worker threads (AUTH checks share them).  The forwarder
     * uploads spooled mail once the store answers again. */
    int skip_store = sp->spool_store && mono_ms() < __atomic_load_n(&sp->store_down_until_ms, __ATOMIC_RELAXED);
    *spooled = 0;
    if (!skip_store && put_durable(sp->store, skey, m->data.data, m->data.len, err, sizeof(err)) == 0)
        return 0;
    if (!sp->spool_store) {
        fail451(res, "store", err);
        return -1;
    }
    if (!skip_store) {
        __atomic_store_n(&sp->store_down_until_ms, mono_ms() + STORE_RETRY_MS, __ATOMIC_RELAXED);
        log_kv(LOG_WARN, "incoming store failed: raw mail kept in the spool", "id", m->id, "error", err, NULL);
    }
    if (put_durable(sp->spool_store, skey, m->data.data, m->data.len, err, sizeof(err)) != 0) {
        fail451(res, "spool store", err);
        return -1;
    }
    *spooled = 1;
    return 0;
}

/* Produces m's records in one batch: to their topics, or with a spool bus to
 * the spool topic with their destination in headers; with the dedupe marker
 * (dkey -> id and expiry) when the marker lives on the bus.  0 or <0. */
static int records_produce(struct spool *sp, const struct smtp_message *m, const struct rules *rules,
                           const char *skey, const char *sha, int spooled, const char *dkey,
                           int64_t expires_ms, char *err, size_t errlen)
{
    /* one capture record, one feedback record, one per unsubscribe address,
     * and the dedupe marker: sized from the message, never truncated */
    struct out_record *recs = xcalloc(m->n_rcpts + 2, sizeof(*recs));
    size_t n = build_records(m, rules, skey, sha, spooled, recs);
    struct bus_record *br = xcalloc(n + 1, sizeof(*br));
    struct bus_header (*hdrs)[3] = xcalloc(n ? n : 1, sizeof(*hdrs));
    for (size_t i = 0; i < n; i++) {
        br[i] = (struct bus_record){ .topic = recs[i].topic, .key = recs[i].key, .key_len = ID_LEN,
                                     .value = recs[i].value, .value_len = recs[i].len,
                                     .partition = -1 };
        if (sp->spool_bus) {
            hdrs[i][0] = (struct bus_header){ "mf.topic", recs[i].topic, strlen(recs[i].topic) };
            hdrs[i][1] = (struct bus_header){ "mf.raw", spooled ? "spool" : "store", 5 };
            hdrs[i][2] = (struct bus_header){ "mf.raw.key", skey, strlen(skey) };
            br[i].topic = TOPIC_INGEST_SPOOL;
            br[i].headers = hdrs[i];
            br[i].n_headers = 3;
        }
    }
    char dval[ID_LEN + 32];
    size_t nb = n;
    if (n && sp->dedupe && dedupe_bus(sp)) {
        int dl = snprintf(dval, sizeof(dval), "%s %lld", m->id, (long long)expires_ms);
        br[nb++] = (struct bus_record){ .topic = TOPIC_INGEST_DEDUPE, .key = dkey, .key_len = 64, .value = dval,
                                        .value_len = (size_t)dl, .partition = -1 };
    }
    int rc = n ? bus_produce(sp->spool_bus ? sp->spool_bus : sp->bus, br, nb, sp->conf.produce_timeout_ms, err,
                             errlen)
               : 0;
    for (size_t i = 0; i < n; i++)
        free(recs[i].value);
    free(recs);
    free(br);
    free(hdrs);
    return rc;
}

void spool_put(struct spool *sp, const struct smtp_message *m, const struct rules *rules,
               struct spool_result *res)
{
    char err[512] = "";
    char sha[65], dkey[65];
    memset(res, 0, sizeof(*res));
    memcpy(res->id, m->id, sizeof(res->id));

    message_hashes(m, dkey, sha);
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
    char shard[3];
    id_shard(m->id, shard);
    snprintf(skey, sizeof(skey), "%04d-%02d-%02d/%s/%s.eml", (tm.tm_year + 1900) % 10000, (tm.tm_mon + 1) % 100,
             tm.tm_mday % 100, shard, m->id);
    int spooled = 0;
    if (raw_put(sp, m, skey, &spooled, res) < 0)
        return;

    int64_t expires_ms = now_ms() + sp->conf.dedupe_ttl_ms;
    if (records_produce(sp, m, rules, skey, sha, spooled, dkey, expires_ms, err, sizeof(err)) != 0) {
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
    sleep_unless_stopped(*delay_ms, &sp->stop);
    *delay_ms = *delay_ms * 2 > 5000 ? 5000 : *delay_ms * 2;
}

/* The forwarder runs on the common worker loop with the real bus as its
 * output bus: per batch, raw mails are uploaded by the handler, the records
 * produced on the real bus, then the spool offsets committed.  Raw files
 * uploaded from the spool store are deleted once every record naming them
 * is relayed (records of one message are adjacent), which batch_end works
 * out from the records the batch committed. */
struct forwarder {
    struct spool *sp;
    char (*rkey)[128];          /* per record of the batch: its mf.raw.key, "" if none */
    unsigned char *from_spool;  /* per record: mf.raw = spool */
    size_t handled;             /* records handle() saw in this batch */
    int batch_seen;
    char pending_raw[128];      /* uploaded, to delete after its last record */
};

static void forwarder_drop_pending(struct forwarder *fw)
{
    char err[256];
    if (!fw->pending_raw[0])
        return;
    store_delete(fw->sp->spool_store, fw->pending_raw, err, sizeof(err));
    fw->pending_raw[0] = 0;
}

/* Relays one spool record: uploads its raw mail first (a consumer must find
 * it by its key), then hands the record to the batch for the real bus. */
static void forward_one(void *opaque, const struct bus_record *r, size_t index, struct wl_batch *out,
                        struct wl_result *res)
{
    struct forwarder *fw = opaque;
    struct spool *sp = fw->sp;
    char err[512] = "";
    char *topic = bus_record_header_str(r, "mf.topic");
    char *raw = bus_record_header_str(r, "mf.raw");
    char *rkey = bus_record_header_str(r, "mf.raw.key");
    snprintf(fw->rkey[index], sizeof(fw->rkey[index]), "%s", rkey ? rkey : "");
    fw->from_spool[index] = raw && strcmp(raw, "spool") == 0 && rkey;
    fw->handled = index + 1;
    if (!topic) {
        log_kv(LOG_ERROR, "spool record without mf.topic: dropped", NULL);
        goto out;
    }
    if (fw->from_spool[index]) {
        struct strbuf b;
        strbuf_init(&b);
        int rc = store_get_cb(sp->spool_store, rkey, 0, 0, sink_buf, &b, err, sizeof(err));
        if (rc == 0)
            rc = put_durable(sp->store, rkey, b.data ? b.data : "", b.len, err, sizeof(err));
        else if (rc == -ENOENT)
            rc = 0;   /* uploaded and removed by an earlier pass: the record alone is left */
        strbuf_free(&b);
        if (rc != 0) {
            wl_result_set(res, WL_RETRY, WL_CAUSE_ENVIRONMENT, "ingest.spool", "store",
                          "incoming store still failing: %s", err);
            goto out;
        }
    }
    struct bus_record o = { .topic = topic, .key = r->key, .key_len = r->key_len, .value = r->value,
                            .value_len = r->value_len, .partition = -1 };
    wl_output(out, &o);
out:
    free(topic);
    free(raw);
    free(rkey);
}

static void forwarder_batch_end(void *opaque, size_t committed)
{
    struct forwarder *fw = opaque;
    fw->batch_seen = 1;
    /* The committed records in order, then the one that failed (if any):
     * a record naming another raw file ends the pending one. */
    for (size_t i = 0; i < fw->handled && i <= committed; i++) {
        if (fw->pending_raw[0] && strcmp(fw->rkey[i], fw->pending_raw) != 0)
            forwarder_drop_pending(fw);
        if (i < committed && fw->from_spool[i])
            snprintf(fw->pending_raw, sizeof(fw->pending_raw), "%s", fw->rkey[i]);
    }
    fw->handled = 0;
}

static const struct wl_handler forwarder_handler = { .handle = forward_one,
                                                     .batch_end = forwarder_batch_end };

static void *forwarder_main(void *arg)
{
    struct spool *sp = arg;
    char err[512];
    const char *topics[] = { TOPIC_INGEST_SPOOL, NULL };
    log_set_worker("ingest");
    struct bus_consumer *c = NULL;
    int delay = 100;
    while (!sp->stop && !c) {
        c = bus_consumer_new(sp->spool_bus, GROUP_INGEST_FORWARD, topics, 1, err, sizeof(err));
        if (!c) {
            log_kv(LOG_ERROR, "spool forwarder cannot consume", "error", err, NULL);
            backoff_sleep(sp, &delay);
        }
    }
    if (!c)
        return NULL;
    size_t batch_max = sp->conf.batch_max ? sp->conf.batch_max : 1;
    struct forwarder fw = { .sp = sp, .rkey = xcalloc(batch_max, sizeof(*fw.rkey)),
                            .from_spool = xcalloc(batch_max, 1) };
    struct worker_loop_options lo = {
        .worker = "ingest", .group = GROUP_INGEST_FORWARD, .batch_max = batch_max, .backoff_ms = 100,
        .backoff_max_ms = 5000, .poll_timeout_ms = 200, .stop = &sp->stop,
        .handler = &forwarder_handler, .opaque = &fw, .output_bus = sp->bus,
        .output_timeout_ms = FORWARD_TIMEOUT_MS, .stuck_ms = sp->conf.stuck_ms,
    };
    struct worker_loop *wl = worker_loop_new(c, &lo);
    pthread_mutex_lock(&sp->fwd_mu);
    sp->fwd_loop = wl;
    pthread_mutex_unlock(&sp->fwd_mu);
    while (!sp->stop) {
        fw.batch_seen = 0;
        worker_loop_step(wl);
        if (worker_loop_failed(wl)) {
            /* The spool keeps every mail; a restarted process forwards it. */
            log_kv(LOG_ERROR, "spool forwarding stopped; the process exits to be restarted", NULL);
            atomic_store(&sp->failed, 1);
            if (sp->conf.process_stop)
                atomic_store(sp->conf.process_stop, 1);
            break;
        }
        // cppcheck-suppress knownConditionTrueFalse ; the loop's handler sets it through lo.opaque
        if (!fw.batch_seen)
            forwarder_drop_pending(&fw);   /* caught up: nothing more names it */
    }
    pthread_mutex_lock(&sp->fwd_mu);
    sp->fwd_loop = NULL;
    pthread_mutex_unlock(&sp->fwd_mu);
    worker_loop_free(wl);
    bus_consumer_free(c);
    free(fw.rkey);
    free(fw.from_spool);
    return NULL;
}

int spool_alive(struct spool *sp, char *why, size_t whylen)
{
    pthread_mutex_lock(&sp->fwd_mu);
    int ok = !sp->fwd_loop || worker_loop_live_check(sp->fwd_loop, why, whylen);
    pthread_mutex_unlock(&sp->fwd_mu);
    return ok;
}
