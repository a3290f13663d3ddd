/* bus_kafka — the Kafka backend of the bus (librdkafka).
 *
 * Producer: idempotent, acks=all, murmur2_random (the partitioner Java
 * clients use, so keys land where other clients expect them).  bus_produce
 * returns only once every record's delivery report says PERSISTED: that is
 * what lets ingest answer 250.  Many threads produce at once through one
 * handle; each call counts its own outstanding reports (struct kafka_batch as
 * the message opaque) and a background thread serves the reports.
 *
 * Consumers: one group member per bus_consumer, manual commits of offset+1
 * after the output is durable, read_committed.  The assignor is the eager
 * roundrobin, not cooperative-sticky: librdkafka 2.0.2 restarts the
 * partitions a member keeps through a cooperative rebalance from where they
 * were first fetched, so records committed since come again (upstream issue
 * 4637, fixed after 2.3), and it aborts in rd_kafka_destroy when such a
 * consumer stops during its first rebalance.  An eager rebalance takes every
 * partition back and restarts each from the group's committed offset.
 * Every record carries the consumer's assignment epoch; a batch read
 * across a rebalance is refused (-ESTALE) rather than committed for
 * partitions that may already be someone else's, and needs no seek.
 *
 * Consume-transform-produce: with opt->transactional_id the outputs and the
 * inputs' offsets go in one transaction (aborted on any error, so
 * read_committed readers see none of it), fenced by the group generation
 * (KIP-447) when the partitions moved meanwhile.  Without one the outputs are
 * acknowledged first, then the inputs committed; a crash in between
 * redelivers them.  A producer fenced for good (a newer instance took its
 * transactional id) answers -ENOTRECOVERABLE from then on.
 *
 * Monitor and CLI helpers (topic_stats, group_set_offset, read_at) open
 * short-lived handles: they run rarely, and a handle of their own never
 * disturbs a worker's group membership. */
#include "bus_impl.h"
#include "log.h"
#include "stop.h"
#include "strbuf.h"
#include "timeutil.h"
#include "topics.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

/* Bounds for calls whose API has no timeout of its own.  Admin calls (and
 * seeks) take at most half the shutdown grace, so one running when SIGTERM
 * comes still leaves time to close; flush and consumer close at shutdown take
 * what is left of the grace (process.h). */
#define KAFKA_TXN_TIMEOUT_MS   30000
#define KAFKA_ADMIN_TIMEOUT_MS kafka_admin_timeout_ms()
#define KAFKA_SEEK_TIMEOUT_MS  kafka_admin_timeout_ms()
/* Kept back from the grace for rd_kafka_destroy and the rest of the exit. */
#define KAFKA_CLOSE_RESERVE_MS 1000
#define KAFKA_HEALTH_MS 2000
#define KAFKA_HEALTH_TIMEOUT_MS 500
#define KAFKA_IDLE_READERS 16
/* More fenced transactional producers than this within the window: another
 * live process has the same transactional id; give up (the worker exits). */
#define KAFKA_MAX_RENEWALS 5
#define KAFKA_RENEW_WINDOW_MS 300000

/* A producer handle and the thread that serves its delivery reports. */
struct kafka_producer {
    rd_kafka_t *rk;
    pthread_t poller;
    atomic_int stop;
};

/* Plain produces go through an idempotent producer of their own, even on a
 * bus with a transactional id: they need no transaction, and threads that
 * produce (feedback's HTTP handlers) then never queue behind a batch's. */
struct kafka_bus {
    char *bootstrap;
    char *client_id;
    char **conf;                 /* copied name/value pairs, NULL-terminated */
    struct kafka_producer plain;
    struct kafka_producer txn;   /* .rk NULL without a transactional id */
    char *txn_id;
    int txn_ready;               /* init_transactions done (txn_lock) */
    int renewals;                /* fenced producers replaced in the current window */
    int64_t renew_window_ms;
    int abort_pending;           /* an abort timed out; retried first (txn_lock) */
    /* Whether a broker answers: the plain producer's poller asks for
     * metadata every KAFKA_HEALTH_MS; errors say why not (health_lock). */
    pthread_mutex_t health_lock;
    /* Idle reader handles kept for the next monitor sample or admin read
     * (a new client costs a connection and a metadata round trip). */
    pthread_mutex_t readers_lock;
    struct kafka_idle_reader {
        char *group;             /* NULL: group-less */
        rd_kafka_t *rk;
    } readers[KAFKA_IDLE_READERS];
    int up;                      /* 1 yes, 0 no, -1 not asked yet */
    int64_t next_health_ms;
    char last_error[256];
    pthread_mutex_t txn_lock;    /* a producer runs one transaction at a time */
    pthread_mutex_t dr_lock;     /* guards every kafka_batch */
    pthread_cond_t dr_cond;
};

struct kafka_consumer {
    struct kafka_bus *kb;
    rd_kafka_t *rk;
    uint32_t epoch;              /* bumped at each rebalance (polling thread only) */
};

/* The delivery reports one produce call waits for.  Shared by the caller and
 * the reports still in flight: whoever drops the last reference frees it, so
 * a caller that timed out can return while librdkafka still holds messages. */
struct kafka_batch {
    size_t pending;
    int refs;
    int err;                     /* first failure, negative errno */
    char errmsg[256];
};

/* ---- helpers ---------------------------------------------------------- */

static int kafka_admin_timeout_ms(void)
{
    int64_t half = stop_grace_ms() / 2;
    return half < 10000 ? (int)half : 10000;
}

/* What a close may still spend: the grace left, less the reserve. */
static int kafka_close_budget_ms(void)
{
    int64_t left = stop_grace_left_ms() - KAFKA_CLOSE_RESERVE_MS;
    return left > 0 ? (int)left : 0;
}

static int kafka_errno(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
        return -ETIMEDOUT;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
        return -EMSGSIZE;
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
        return -ENOENT;
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return -EINVAL;
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        return -ENOBUFS;
    default:
        return -EIO;
    }
}

/* deadline, or sooner once a stop is asked for: what the grace leaves,
 * less what closing needs. */
static int64_t kafka_deadline_in_grace(int64_t deadline)
{
    if (!stop_begun())
        return deadline;
    int64_t by = mono_ms() + stop_grace_left_ms() - 2 * KAFKA_CLOSE_RESERVE_MS;
    return by < deadline ? by : deadline;
}

static int kafka_remaining(int64_t deadline)
{
    int64_t left = deadline - mono_ms();
    return left < 0 ? 0 : left > 1000000000 ? 1000000000 : (int)left;
}

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* The [kafka] section goes to producers and consumers alike, so the
     * "consumer property ... ignored by this producer" notices are expected. */
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "will be ignored by this"))
        level = 7;
    /* Connection failures come again through kafka_error_cb. */
    if (strcmp(fac, "FAIL") == 0)
        level = 7;
    enum log_level lvl = level <= 3 ? LOG_ERROR : level == 4 ? LOG_WARN : level <= 6 ? LOG_INFO
                                                                                     : LOG_DEBUG;
    log_kv(lvl, buf, "component", "kafka", "fac", fac, "client", rd_kafka_name(rk), NULL);
}

/* Broker connection losses and the like: librdkafka retries by itself, so
 * they are logged, and only calls that run out of time fail. */
static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    /* A producer's opaque is its bus (consumers' are not): its errors are
     * what readiness reports while no broker answers. */
    if (rd_kafka_type(rk) == RD_KAFKA_PRODUCER && opaque) {
        struct kafka_bus *kb = opaque;
        pthread_mutex_lock(&kb->health_lock);
        snprintf(kb->last_error, sizeof kb->last_error, "%s", reason);
        pthread_mutex_unlock(&kb->health_lock);
    }
    log_kv(err == RD_KAFKA_RESP_ERR__FATAL ? LOG_ERROR : LOG_WARN, reason, "component", "kafka",
           "error", rd_kafka_err2name(err), "client", rd_kafka_name(rk), NULL);
}

static int kafka_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err,
                     size_t errlen)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka: property %s: %s", name, errstr);
        return -EINVAL;
    }
    return 0;
}

static int kafka_set_all(rd_kafka_conf_t *conf, const char *const *pairs, char *err, size_t errlen)
{
    for (; pairs && pairs[0]; pairs += 2)
        if (kafka_set(conf, pairs[0], pairs[1], err, errlen) < 0)
            return -EINVAL;
    return 0;
}

/* Every handle starts from the bootstrap list, the client id, our defaults
 * and then the [kafka] pairs, which may override those defaults.  The
 * settings the bus's guarantees rest on are applied after, by the caller,
 * so configuration cannot weaken them. */
static rd_kafka_conf_t *kafka_conf_new(const struct kafka_bus *kb, const char *const *defaults,
                                       char *err, size_t errlen)
{
    /* After an outage every client is back within 2 s of the brokers, not
     * librdkafka's 10 s reconnect back-off (the Java client's is 1 s). */
    static const char *const every_handle[] = {
        "reconnect.backoff.max.ms", "2000",
        NULL,
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
    if (kafka_set_all(conf, every_handle, err, errlen) < 0 ||
        kafka_set(conf, "bootstrap.servers", kb->bootstrap, err, errlen) < 0 ||
        (kb->client_id && kafka_set(conf, "client.id", kb->client_id, err, errlen) < 0) ||
        kafka_set_all(conf, defaults, err, errlen) < 0 ||
        kafka_set_all(conf, (const char *const *)kb->conf, err, errlen) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

/* A group member's rebalances, served inside its rd_kafka_consumer_poll:
 * every change of assignment starts a new epoch, so records read before it
 * are known as stale when their batch comes to commit. */
static void kafka_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                               rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct kafka_consumer *c = opaque;
    int assign = e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
    c->epoch++;
    rd_kafka_resp_err_t ae = rd_kafka_assign(rk, assign ? parts : NULL);
    char n[16];
    snprintf(n, sizeof n, "%d", parts ? parts->cnt : 0);
    if (ae)
        log_kv(LOG_WARN, assign ? "kafka assign failed" : "kafka unassign failed", "component",
               "kafka", "client", rd_kafka_name(rk), "partitions", n, "error", rd_kafka_err2str(ae),
               NULL);
    else
        log_kv(LOG_INFO, assign ? "kafka partitions assigned" : "kafka partitions revoked",
               "component", "kafka", "client", rd_kafka_name(rk), "partitions", n, NULL);
}

/* A consumer handle: our defaults, the [kafka] pairs, then settings; a group
 * member (member != NULL) gets the rebalance callback. */
static rd_kafka_t *kafka_consumer_handle(const struct kafka_bus *kb, const char *const *defaults,
                                         const char *const *settings,
                                         struct kafka_consumer *member, char *err, size_t errlen)
{
    char errstr[512];
    rd_kafka_conf_t *conf = kafka_conf_new(kb, defaults, err, errlen);
    if (!conf)
        return NULL;
    if (kafka_set_all(conf, settings, err, errlen) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (member) {
        rd_kafka_conf_set_rebalance_cb(conf, kafka_rebalance_cb);
        rd_kafka_conf_set_opaque(conf, member);
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka: consumer: %s", errstr);
        return NULL;
    }
    conf = NULL;
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* A handle that consumes by assign() only and never commits by itself.
 * librdkafka's assign() needs a group id even though the handle never joins
 * the group: group-less reads use GROUP_BUS_READER, never committed to. */
static rd_kafka_t *kafka_reader_new(const struct kafka_bus *kb, const char *group, char *err,
                                    size_t errlen)
{
    /* A group's reader (the monitor's offsets, the CLI's commits) reads
     * uncommitted: with read_committed its committed-offset query waits for
     * the group's pending transactional offsets (require_stable), seconds
     * per sample while a transaction is in doubt after an outage.  Group-less
     * reads (scans, read_at) see what consumers see: committed only. */
    const char *const reader[] = {
        "group.id", group ? group : GROUP_BUS_READER,
        "enable.auto.commit", "false",
        "enable.auto.offset.store", "false",
        "isolation.level", group ? "read_uncommitted" : "read_committed",
        "enable.partition.eof", "true",
        NULL,
    };
    return kafka_consumer_handle(kb, NULL, reader, NULL, err, errlen);
}

static struct bus_record *kafka_record_from(const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs = NULL;
    struct bus_header *h = NULL;
    size_t nh = 0;
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        nh = rd_kafka_header_cnt(hdrs);
        h = xcalloc(nh, sizeof *h);
        for (size_t i = 0; i < nh; i++)
            if (rd_kafka_header_get_all(hdrs, i, &h[i].name, &h[i].value, &h[i].value_len))
                panic("%s: header %zu of %zu missing", __func__, i, nh);
    }
    struct bus_record *r = bus_record_build(rd_kafka_topic_name(m->rkt), m->key, m->key_len,
                                            m->payload, m->len, h, nh,
                                            rd_kafka_message_timestamp(m, NULL), m->partition,
                                            m->offset);
    free(h);
    return r;
}

/* Polls for the next record: 1 = *out set, 0 = nothing within timeout_ms
 * (for a reader: nothing committed before the end of its partition, and
 * -ETIMEDOUT when the time ran out first), <0 = error.
 * Consumer errors are mostly transient (a broker away, a topic not created
 * yet) and librdkafka keeps trying, so they are logged and polling goes on;
 * a fatal error ends it, and so does, for a reader, a missing partition. */
static int kafka_next(rd_kafka_t *rk, struct bus_record **out, int timeout_ms, int reader,
                      int64_t *eof_at)
{
    int64_t deadline = mono_ms() + timeout_ms;
    char errstr[512];
    *out = NULL;
    for (;;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, kafka_remaining(deadline));
        if (!m)
            return reader ? -ETIMEDOUT : 0;
        if (!m->err) {
            *out = kafka_record_from(m);
            rd_kafka_message_destroy(m);
            return 1;
        }
        rd_kafka_resp_err_t e = m->err;
        if (e == RD_KAFKA_RESP_ERR__PARTITION_EOF && eof_at)
            *eof_at = m->offset;   /* read_committed: the last stable offset */
        if (e != RD_KAFKA_RESP_ERR__PARTITION_EOF)   /* only readers ask for EOF */
            log_kv(LOG_WARN, "kafka consume error", "component", "kafka", "error",
                   rd_kafka_message_errstr(m), NULL);
        rd_kafka_message_destroy(m);
        if (e == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            return 0;
        if (e == RD_KAFKA_RESP_ERR__FATAL) {
            rd_kafka_fatal_error(rk, errstr, sizeof errstr);
            log_kv(LOG_ERROR, "kafka consumer failed", "component", "kafka", "error", errstr, NULL);
            return -EIO;
        }
        if (reader && kafka_errno(e) == -ENOENT)
            return -ENOENT;
        if (mono_ms() >= deadline)
            return reader ? -ETIMEDOUT : 0;
    }
}

static int kafka_reader_fetch(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t offset,
                              struct bus_record **out, int timeout_ms, int64_t *eof_at)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset;
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        log_kv(LOG_WARN, "kafka assign failed", "component", "kafka", "topic", topic, "error",
               rd_kafka_err2str(e), NULL);
        return kafka_errno(e);
    }
    int rc = kafka_next(rk, out, timeout_ms, 1, eof_at);
    rd_kafka_assign(rk, NULL);
    return rc;
}

/* The rebalance a closing consumer goes through: the queue form of close
 * hands it to us, and the close waits until we give the partitions up. */
static void kafka_close_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                                  rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_resp_err_t ae = rd_kafka_assign(rk, e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? parts : NULL);
    if (ae)
        log_kv(LOG_WARN, "kafka rebalance while closing", "component", "kafka", "error",
               rd_kafka_err2str(ae), NULL);
}

/* consumer_close then destroy, within the close budget.  With every broker
 * down a plain rd_kafka_consumer_close() waits for a coordinator that never
 * answers; the queue form lets us stop waiting, and a consumer not closed by
 * then is destroyed without the close (its group sees it leave when the
 * session times out, as after a crash: offsets are committed per record). */
static void kafka_consumer_close_destroy(rd_kafka_t *rk)
{
    int64_t deadline = mono_ms() + kafka_close_budget_ms();
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(rk, q);
    if (e) {
        log_kv(LOG_WARN, "kafka consumer close", "component", "kafka", "error",
               rd_kafka_error_string(e), NULL);
        rd_kafka_error_destroy(e);
    } else {
        while (!rd_kafka_consumer_closed(rk) && mono_ms() < deadline) {
            int left = kafka_remaining(deadline);
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, left < 100 ? left : 100);
            if (ev && rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                kafka_close_rebalance(rk, rd_kafka_event_error(ev),
                                      rd_kafka_event_topic_partition_list(ev));
            if (ev)
                rd_kafka_event_destroy(ev);
        }
    }
    int closed = rd_kafka_consumer_closed(rk);
    if (!closed)
        log_kv(LOG_WARN, "kafka consumer not closed within the shutdown grace; leaving without it",
               "component", "kafka", "client", rd_kafka_name(rk), NULL);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy_flags(rk, closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

static void kafka_reader_free(rd_kafka_t *rk)
{
    kafka_consumer_close_destroy(rk);
}

static int kafka_same_group(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* A reader for group (NULL: group-less), idle from an earlier call or new. */
static rd_kafka_t *kafka_reader_get(struct kafka_bus *kb, const char *group, char *err,
                                    size_t errlen)
{
    rd_kafka_t *rk = NULL;
    pthread_mutex_lock(&kb->readers_lock);
    for (int i = 0; i < KAFKA_IDLE_READERS && !rk; i++)
        if (kb->readers[i].rk && kafka_same_group(kb->readers[i].group, group)) {
            rk = kb->readers[i].rk;
            free(kb->readers[i].group);
            kb->readers[i] = (struct kafka_idle_reader){ 0 };
        }
    pthread_mutex_unlock(&kb->readers_lock);
    return rk ? rk : kafka_reader_new(kb, group, err, errlen);
}

/* Back to the idle set (unassigned), or closed when the set is full. */
static void kafka_reader_put(struct kafka_bus *kb, rd_kafka_t *rk, const char *group)
{
    rd_kafka_assign(rk, NULL);
    pthread_mutex_lock(&kb->readers_lock);
    for (int i = 0; i < KAFKA_IDLE_READERS && rk; i++)
        if (!kb->readers[i].rk) {
            kb->readers[i] = (struct kafka_idle_reader){ group ? xstrdup(group) : NULL, rk };
            rk = NULL;
        }
    pthread_mutex_unlock(&kb->readers_lock);
    if (rk)
        kafka_reader_free(rk);
}

/* ---- producing -------------------------------------------------------- */

/* Called with dr_lock held. */
static void kafka_batch_unref(struct kafka_batch *b)
{
    if (--b->refs == 0)
        free(b);
}

static void kafka_batch_fail(struct kafka_batch *b, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void kafka_batch_fail(struct kafka_batch *b, int code, const char *fmt, ...)
{
    if (b->err)
        return;   /* the first failure explains the rest */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->errmsg, sizeof b->errmsg, fmt, ap);
    va_end(ap);
    b->err = code;
}

/* Runs on the poll thread (or inside flush/commit_transaction). */
static void kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct kafka_bus *kb = opaque;
    struct kafka_batch *b = m->_private;
    (void)rk;
    if (!b)
        panic("%s: delivery report without its batch", __func__);
    pthread_mutex_lock(&kb->dr_lock);
    if (m->err)
        kafka_batch_fail(b, kafka_errno(m->err), "kafka: produce to %s [%d]: %s",
                         rd_kafka_topic_name(m->rkt), (int)m->partition, rd_kafka_err2str(m->err));
    else if (rd_kafka_message_status(m) != RD_KAFKA_MSG_STATUS_PERSISTED)
        kafka_batch_fail(b, -EIO, "kafka: produce to %s [%d]: not persisted",
                         rd_kafka_topic_name(m->rkt), (int)m->partition);
    b->pending--;
    kafka_batch_unref(b);
    pthread_cond_broadcast(&kb->dr_cond);
    pthread_mutex_unlock(&kb->dr_lock);
}

/* Asks a broker for metadata (no topics: cheap) now and then; the answer,
 * or its absence, is the bus's readiness. */
static void kafka_health(struct kafka_bus *kb, rd_kafka_t *rk)
{
    if (mono_ms() < kb->next_health_ms)
        return;
    const struct rd_kafka_metadata *md = NULL;
    /* short: delivery reports wait meanwhile (this is their thread) */
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, NULL, &md, KAFKA_HEALTH_TIMEOUT_MS);
    int up = !e && md && md->broker_cnt > 0;
    if (md)
        rd_kafka_metadata_destroy(md);
    pthread_mutex_lock(&kb->health_lock);
    if (up != kb->up)
        log_kv(up ? LOG_INFO : LOG_WARN, up ? "kafka brokers answer" : "no kafka broker answers",
               "component", "kafka", "error", up ? "" : kb->last_error, NULL);
    kb->up = up;
    pthread_mutex_unlock(&kb->health_lock);
    kb->next_health_ms = mono_ms() + KAFKA_HEALTH_MS;
}

static void *kafka_poller(void *arg)
{
    struct kafka_producer *p = arg;
    struct kafka_bus *kb = rd_kafka_opaque(p->rk);
    log_set_worker("bus-kafka");
    while (!atomic_load(&p->stop)) {
        rd_kafka_poll(p->rk, 100);
        if (p == &kb->plain && !atomic_load(&p->stop))
            kafka_health(kb, p->rk);
    }
    return NULL;
}

static rd_kafka_resp_err_t kafka_enqueue(rd_kafka_t *rk, const struct bus_record *r,
                                         struct kafka_batch *b)
{
    rd_kafka_headers_t *hdrs = NULL;
    if (r->n_headers) {
        hdrs = rd_kafka_headers_new(r->n_headers);
        for (size_t i = 0; i < r->n_headers; i++)
            rd_kafka_header_add(hdrs, r->headers[i].name, -1, r->headers[i].value,
                                (ssize_t)r->headers[i].value_len);
    }
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(r->topic), RD_KAFKA_V_PARTITION(r->partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(r->key, r->key_len),
        RD_KAFKA_V_VALUE((void *)r->value, r->value_len), RD_KAFKA_V_TIMESTAMP(r->timestamp_ms),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(b), RD_KAFKA_V_END);
    if (e && hdrs)
        rd_kafka_headers_destroy(hdrs);   /* producev owns them only on success */
    return e;
}

/* Enqueues recs and waits until each has its delivery report or the deadline
 * passes.  After a failed enqueue it still waits for the records already
 * handed over, so the caller knows where they stand (a transaction can then
 * be aborted with nothing in flight). */
static int kafka_produce_wait(struct kafka_bus *kb, rd_kafka_t *rk, const struct bus_record *recs,
                              size_t n, int64_t deadline, char *err, size_t errlen)
{
    struct kafka_batch *b = xcalloc(1, sizeof *b);
    b->pending = n;
    b->refs = 1;

    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&kb->dr_lock);
        b->refs++;
        pthread_mutex_unlock(&kb->dr_lock);
        rd_kafka_resp_err_t e;
        while ((e = kafka_enqueue(rk, &recs[i], b)) == RD_KAFKA_RESP_ERR__QUEUE_FULL &&
               mono_ms() < deadline)
            rd_kafka_poll(rk, 10);   /* the queue drains as reports are served */
        if (e) {
            pthread_mutex_lock(&kb->dr_lock);
            b->refs--;
            b->pending -= n - i;
            kafka_batch_fail(b, kafka_errno(e), "kafka: produce to %s: %s", recs[i].topic,
                             rd_kafka_err2str(e));
            pthread_mutex_unlock(&kb->dr_lock);
            break;
        }
    }

    /* Waits in slices, so a stop asked for meanwhile (every broker down)
     * ends the wait within the grace rather than at the deadline. */
    pthread_mutex_lock(&kb->dr_lock);
    while (b->pending > 0 && mono_ms() < kafka_deadline_in_grace(deadline)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int left = kafka_remaining(kafka_deadline_in_grace(deadline));
        if (left > 200)
            left = 200;
        ts.tv_nsec += (long)left * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&kb->dr_cond, &kb->dr_lock, &ts);
    }
    int rc = b->err;
    if (rc)
        snprintf(err, errlen, "%s", b->errmsg);
    else if (b->pending > 0) {
        rc = -ETIMEDOUT;
        snprintf(err, errlen, "kafka: %zu of %zu records not acknowledged in time", b->pending, n);
    }
    kafka_batch_unref(b);
    pthread_mutex_unlock(&kb->dr_lock);
    /* A caller that timed out produces the same records again (the ingest
     * spool does, every produce_timeout): what is still queued here would
     * otherwise go out as well once a broker answers, one copy per try.
     * Withdraw what has not been sent; other callers' queued records fail
     * too, and they retry as after any error. */
    if (rc == -ETIMEDOUT)
        rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_NON_BLOCKING);
    return rc;
}

/* Ends a transaction: commits when rc == 0, else (or when the commit fails)
 * aborts so read_committed readers see nothing of it. */
static int kafka_txn_end(struct kafka_bus *kb, int rc, int64_t deadline, char *err, size_t errlen)
{
    rd_kafka_error_t *e = NULL;
    if (rc == -ENOTRECOVERABLE)
        return rc;
    if (rc == 0) {
        /* A commit that timed out may still be applied: it is called again
         * until it resolves (librdkafka refuses an abort meanwhile, and a
         * batch redone after a commit that did land would come out twice).
         * Only a stop ends the wait; the coordinator then settles it, and
         * the next process starts from whatever it settled. */
        int warned = 0;
        (void)deadline;
        while ((e = rd_kafka_commit_transaction(
                    kb->txn.rk, kafka_remaining(kafka_deadline_in_grace(mono_ms() + 5000)))) &&
               rd_kafka_error_is_retriable(e)) {
            if (!warned++)
                log_kv(LOG_WARN, "kafka commit transaction not acknowledged yet; retrying until it is",
                       "component", "kafka", "error", rd_kafka_error_string(e), NULL);
            rd_kafka_error_destroy(e);
            if (stop_begun()) {
                snprintf(err, errlen, "kafka: commit transaction unresolved at the stop");
                return -ETIMEDOUT;
            }
        }
        if (!e)
            return 0;
        snprintf(err, errlen, "kafka: commit transaction: %s", rd_kafka_error_string(e));
        rc = -EIO;
        if (rd_kafka_error_is_fatal(e)) {
            rd_kafka_error_destroy(e);
            return rc;
        }
        rd_kafka_error_destroy(e);
    }
    /* An abort that times out is to be called again before the next
     * transaction can begin. */
    e = rd_kafka_abort_transaction(
        kb->txn.rk, kafka_remaining(kafka_deadline_in_grace(mono_ms() + KAFKA_TXN_TIMEOUT_MS)));
    kb->abort_pending = e != NULL;
    if (e) {
        log_kv(LOG_ERROR, "kafka abort transaction failed", "component", "kafka", "error",
               rd_kafka_error_string(e), NULL);
        rd_kafka_error_destroy(e);
    }
    return rc;
}

/* -ENOTRECOVERABLE once the producer has a fatal error (fenced by a newer
 * instance with its transactional id, or its idempotence state lost): no
 * call on it can succeed again. */
static int kafka_fatal(rd_kafka_t *rk, char *err, size_t errlen)
{
    char why[256];
    if (!rd_kafka_fatal_error(rk, why, sizeof why))
        return 0;
    snprintf(err, errlen, "kafka: the producer failed for good (fenced by a newer instance?): %s",
             why);
    return -ENOTRECOVERABLE;
}

static int kafka_txn_error(struct kafka_bus *kb, rd_kafka_error_t *e, const char *what, char *err,
                           size_t errlen)
{
    snprintf(err, errlen, "kafka: %s: %s", what, rd_kafka_error_string(e));
    int fatal = rd_kafka_error_is_fatal(e);
    rd_kafka_error_destroy(e);
    if (fatal)
        return kafka_fatal(kb->txn.rk, err, errlen) ? -ENOTRECOVERABLE : -EIO;
    return -EIO;
}

static int kafka_producer_start(struct kafka_bus *kb, struct kafka_producer *p, const char *txn_id,
                                char *err, size_t errlen);
static void kafka_producer_stop(struct kafka_producer *p);

/* The transactional producer is fenced: the coordinator aborted its open
 * transaction (it outlived transaction.timeout.ms, e.g. across a failover)
 * or a process with the same id began.  Nothing of the transaction is
 * visible and its offsets were not committed, so the batch is redone (-EIO)
 * with a new producer under the same id.  Fenced again and again means two
 * live processes share the id: -ENOTRECOVERABLE, the worker exits.
 * Called with txn_lock held. */
static int kafka_txn_renew(struct kafka_bus *kb, char *err, size_t errlen)
{
    int64_t now = mono_ms();
    if (now - kb->renew_window_ms > KAFKA_RENEW_WINDOW_MS) {
        kb->renew_window_ms = now;
        kb->renewals = 0;
    }
    if (++kb->renewals > KAFKA_MAX_RENEWALS) {
        snprintf(err, errlen, "kafka: fenced %d times in %d s: does another live process use "
                 "transactional id %s? ([mailfleet] instance_id)", kb->renewals - 1,
                 KAFKA_RENEW_WINDOW_MS / 1000, kb->txn_id);
        return -ENOTRECOVERABLE;
    }
    log_kv(LOG_ERROR, "kafka producer fenced: its transaction was aborted; a new producer takes over "
           "and the batch is redone", "component", "kafka", "transactional_id", kb->txn_id, "error",
           err, NULL);
    rd_kafka_purge(kb->txn.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT |
                                   RD_KAFKA_PURGE_F_NON_BLOCKING);
    kafka_producer_stop(&kb->txn);
    memset(&kb->txn, 0, sizeof kb->txn);
    kb->txn_ready = 0;
    kb->abort_pending = 0;
    char why[256];
    if (kafka_producer_start(kb, &kb->txn, kb->txn_id, why, sizeof why) == -ENOTRECOVERABLE ||
        !kb->txn.rk) {
        snprintf(err, errlen, "kafka: cannot replace the fenced producer: %s", why);
        return -ENOTRECOVERABLE;
    }
    return -EIO;
}

/* One transaction: produce recs, optionally send the consumer's offsets,
 * commit; abort on any failure. */
static int kafka_txn_run(struct kafka_bus *kb, const struct bus_record *recs, size_t n,
                         const struct kafka_consumer *c, rd_kafka_topic_partition_list_t *offsets,
                         int64_t deadline, char *err, size_t errlen)
{
    pthread_mutex_lock(&kb->txn_lock);
    rd_kafka_error_t *e = NULL;
    if (!kb->txn.rk) {   /* a fenced producer could not be replaced */
        snprintf(err, errlen, "kafka: no transactional producer (replacing a fenced one failed)");
        pthread_mutex_unlock(&kb->txn_lock);
        return -ENOTRECOVERABLE;
    }
    int fatal = kafka_fatal(kb->txn.rk, err, errlen);
    if (!fatal && !kb->txn_ready) {
        e = rd_kafka_init_transactions(kb->txn.rk, kafka_remaining(kafka_deadline_in_grace(deadline)));
        kb->txn_ready = e == NULL;
        if (e) {
            int rc = kafka_txn_error(kb, e, "init transactions", err, errlen);
            if (rc == -ENOTRECOVERABLE)
                rc = kafka_txn_renew(kb, err, errlen);
            pthread_mutex_unlock(&kb->txn_lock);
            return rc;
        }
    }
    if (!fatal && kb->abort_pending) {
        e = rd_kafka_abort_transaction(kb->txn.rk, kafka_remaining(kafka_deadline_in_grace(deadline)));
        kb->abort_pending = e != NULL;
    }
    if (!fatal && !e)
        e = rd_kafka_begin_transaction(kb->txn.rk);
    if (fatal || e) {
        int rc = fatal ? fatal : kafka_txn_error(kb, e, "begin transaction", err, errlen);
        if (rc == -ENOTRECOVERABLE)
            rc = kafka_txn_renew(kb, err, errlen);
        pthread_mutex_unlock(&kb->txn_lock);
        return rc;
    }
    int rc = kafka_produce_wait(kb, kb->txn.rk, recs, n, deadline, err, errlen);
    if (rc == 0 && c) {
        rd_kafka_consumer_group_metadata_t *md = rd_kafka_consumer_group_metadata(c->rk);
        e = rd_kafka_send_offsets_to_transaction(kb->txn.rk, offsets, md,
                                                 kafka_remaining(kafka_deadline_in_grace(deadline)));
        rd_kafka_consumer_group_metadata_destroy(md);
        if (e)
            rc = kafka_txn_error(kb, e, "send offsets to transaction", err, errlen);
    }
    if (rc < 0 && rc != -ENOTRECOVERABLE && kafka_fatal(kb->txn.rk, err, errlen))
        rc = -ENOTRECOVERABLE;
    rc = kafka_txn_end(kb, rc, deadline, err, errlen);
    if (rc < 0 && rc != -ENOTRECOVERABLE && kafka_fatal(kb->txn.rk, err, errlen))
        rc = -ENOTRECOVERABLE;
    if (rc == -ENOTRECOVERABLE)
        rc = kafka_txn_renew(kb, err, errlen);
    pthread_mutex_unlock(&kb->txn_lock);
    return rc;
}

static int kafka_produce(void *impl, const struct bus_record *recs, size_t n, int timeout_ms,
                         char *err, size_t errlen)
{
    struct kafka_bus *kb = impl;
    int64_t deadline = mono_ms() + timeout_ms;
    if (n == 0)
        return 0;
    int rc = kafka_produce_wait(kb, kb->plain.rk, recs, n, deadline, err, errlen);
    return rc < 0 && kafka_fatal(kb->plain.rk, err, errlen) ? -ENOTRECOVERABLE : rc;
}

/* ---- open / close ----------------------------------------------------- */

static void kafka_producer_stop(struct kafka_producer *p)
{
    if (!p->rk)
        return;
    rd_kafka_resp_err_t e = rd_kafka_flush(p->rk, kafka_close_budget_ms());
    if (e) {
        /* Fail what is left, so its delivery reports still run and
         * release their batches (and any caller still waiting). */
        log_kv(LOG_WARN, "kafka flush on close incomplete", "component", "kafka", "error",
               rd_kafka_err2str(e), NULL);
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(p->rk, KAFKA_CLOSE_RESERVE_MS / 2);
    }
    atomic_store(&p->stop, 1);
    pthread_join(p->poller, NULL);
    rd_kafka_destroy(p->rk);
    p->rk = NULL;
}

static void kafka_close(void *impl)
{
    struct kafka_bus *kb = impl;
    if (!kb)
        return;
    for (int i = 0; i < KAFKA_IDLE_READERS; i++) {
        if (kb->readers[i].rk)
            kafka_reader_free(kb->readers[i].rk);
        free(kb->readers[i].group);
    }
    kafka_producer_stop(&kb->txn);
    kafka_producer_stop(&kb->plain);
    pthread_mutex_destroy(&kb->txn_lock);
    pthread_mutex_destroy(&kb->health_lock);
    pthread_mutex_destroy(&kb->readers_lock);
    pthread_mutex_destroy(&kb->dr_lock);
    pthread_cond_destroy(&kb->dr_cond);
    for (char **p = kb->conf; p && *p; p++)
        free(*p);
    free(kb->conf);
    free(kb->bootstrap);
    free(kb->client_id);
    free(kb->txn_id);
    free(kb);
}

/* A producer: idempotent, acks=all; with txn_id transactional, and ready
 * for transactions (init_transactions) when this returns 0. */
static int kafka_producer_start(struct kafka_bus *kb, struct kafka_producer *p, const char *txn_id,
                                char *err, size_t errlen)
{
    static const char *const producer[] = {
        "enable.idempotence", "true",
        "acks", "all",
        "partitioner", "murmur2_random",
        NULL,
    };
    /* A transaction here lasts one batch's produce and commit (milliseconds).
     * A process that dies inside one under a new transactional id (a new
     * pid) leaves it open until the coordinator times it out, and
     * read_committed readers of its partitions wait until then: 10 s, not
     * librdkafka's 60 s.  [kafka] may set it otherwise. */
    static const char *const transactional_defaults[] = {
        "transaction.timeout.ms", "10000",
        NULL,
    };
    char errstr[512];
    rd_kafka_conf_t *conf = kafka_conf_new(kb, txn_id ? transactional_defaults : NULL, err, errlen);
    if (!conf)
        return -EINVAL;
    if (kafka_set_all(conf, producer, err, errlen) < 0 ||
        (txn_id && kafka_set(conf, "transactional.id", txn_id, err, errlen) < 0)) {
        rd_kafka_conf_destroy(conf);
        return -EINVAL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, kafka_dr_cb);
    rd_kafka_conf_set_opaque(conf, kb);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!p->rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka: producer: %s", errstr);
        return -EINVAL;
    }
    if (pthread_create(&p->poller, NULL, kafka_poller, p) != 0)
        panic("%s: cannot start the delivery report thread", __func__);
    /* Fences an earlier producer with this id at once; with no broker
     * answering, the first transaction tries again (the worker stays up,
     * not ready, rather than exiting into a restart loop). */
    if (txn_id) {
        rd_kafka_error_t *e = rd_kafka_init_transactions(p->rk, KAFKA_ADMIN_TIMEOUT_MS);
        kb->txn_ready = e == NULL;
        if (e) {
            int rc = kafka_txn_error(kb, e, "init transactions", err, errlen);
            if (rc == -ENOTRECOVERABLE)
                return rc;
            log_kv(LOG_WARN, "kafka transactions not ready yet; the first batch tries again",
                   "component", "kafka", "error", err, NULL);
        }
    }
    return 0;
}

static void *kafka_open(const char *where, const struct bus_options *opt, char *err, size_t errlen)
{
    static const struct bus_options no_options;
    if (!opt)
        opt = &no_options;
    if (!where || !*where) {
        snprintf(err, errlen, "kafka: empty bootstrap server list");
        return NULL;
    }
    struct kafka_bus *kb = xcalloc(1, sizeof *kb);
    pthread_mutex_init(&kb->txn_lock, NULL);
    pthread_mutex_init(&kb->health_lock, NULL);
    pthread_mutex_init(&kb->readers_lock, NULL);
    snprintf(kb->last_error, sizeof kb->last_error, "not connected yet");
    kb->up = -1;   /* not asked yet */
    pthread_mutex_init(&kb->dr_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&kb->dr_cond, &ca);
    pthread_condattr_destroy(&ca);
    kb->bootstrap = xstrdup(where);
    kb->client_id = opt->client_id ? xstrdup(opt->client_id) : NULL;
    size_t nconf = 0;
    while (opt->kafka_conf && opt->kafka_conf[nconf])
        nconf++;
    if (nconf % 2) {
        snprintf(err, errlen, "kafka: property %s has no value", opt->kafka_conf[nconf - 1]);
        kafka_close(kb);
        return NULL;
    }
    kb->conf = xcalloc(nconf + 1, sizeof *kb->conf);
    for (size_t i = 0; i < nconf; i++)
        kb->conf[i] = xstrdup(opt->kafka_conf[i]);

    if (kafka_producer_start(kb, &kb->plain, NULL, err, errlen) < 0 ||
        (opt->transactional_id && (kb->txn_id = xstrdup(opt->transactional_id)) &&
         kafka_producer_start(kb, &kb->txn, opt->transactional_id, err, errlen) < 0)) {
        kafka_close(kb);
        return NULL;
    }
    return kb;
}

/* ---- consumers -------------------------------------------------------- */

static void *kafka_consumer_new(void *impl, const char *group, const char *const *topics,
                                int from_beginning, char *err, size_t errlen)
{
    struct kafka_bus *kb = impl;
    const char *const consumer[] = {
        "group.id", group,
        "enable.auto.commit", "false",
        "enable.auto.offset.store", "false",
        "isolation.level", "read_committed",
        "partition.assignment.strategy", "roundrobin",
        "auto.offset.reset", from_beginning ? "earliest" : "latest",
        "allow.auto.create.topics", "true",
        NULL,
    };
    /* librdkafka's 45 s leaves a crashed worker's partitions idle for that
     * long; 10 s (Kafka's old default, above brokers' 6 s minimum) moves
     * them sooner. */
    static const char *const consumer_defaults[] = {
        "session.timeout.ms", "10000",
        NULL,
    };
    if (!group || !*group || !topics || !topics[0]) {
        snprintf(err, errlen, "kafka: a consumer needs a group and at least one topic");
        return NULL;
    }
    struct kafka_consumer *c = xcalloc(1, sizeof *c);
    c->kb = kb;
    rd_kafka_t *rk = kafka_consumer_handle(kb, consumer_defaults, consumer, c, err, errlen);
    if (!rk) {
        free(c);
        return NULL;
    }

    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    for (const char *const *t = topics; *t; t++)
        rd_kafka_topic_partition_list_add(l, *t, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        snprintf(err, errlen, "kafka: subscribe (group %s): %s", group, rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        free(c);
        return NULL;
    }
    c->rk = rk;
    return c;
}

static int kafka_poll(void *cimpl, struct bus_record **out, int timeout_ms)
{
    struct kafka_consumer *c = cimpl;
    int rc = kafka_next(c->rk, out, timeout_ms, 0, NULL);
    if (rc == 1)
        (*out)->epoch = c->epoch;   /* after any rebalance this poll served */
    return rc;
}

/* Records read before the latest rebalance: not to be committed or sought. */
static int kafka_stale(const struct kafka_consumer *c, const struct bus_record *const *rs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (rs[i]->epoch != c->epoch)
            return 1;
    return 0;
}

static rd_kafka_resp_err_t kafka_commit_raw(rd_kafka_t *rk, const char *topic, int32_t partition,
                                            int64_t offset)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset;
    rd_kafka_resp_err_t e = rd_kafka_commit(rk, l, 0);
    if (!e && l->elems[0].err)
        e = l->elems[0].err;
    rd_kafka_topic_partition_list_destroy(l);
    return e;
}

static int kafka_commit_result(rd_kafka_resp_err_t e, const char *topic, int32_t partition,
                               int64_t offset, char *err, size_t errlen)
{
    if (!e)
        return 0;
    snprintf(err, errlen, "kafka: commit %s [%d] at %lld: %s", topic, (int)partition,
             (long long)offset, rd_kafka_err2str(e));
    return kafka_errno(e);
}

static int kafka_commit_offset(rd_kafka_t *rk, const char *topic, int32_t partition,
                               int64_t offset, char *err, size_t errlen)
{
    return kafka_commit_result(kafka_commit_raw(rk, topic, partition, offset), topic, partition,
                               offset, err, errlen);
}

static int kafka_commit(void *cimpl, const struct bus_record *r)
{
    struct kafka_consumer *c = cimpl;
    char err[512];
    if (kafka_stale(c, &r, 1))
        return -ESTALE;
    int rc = kafka_commit_offset(c->rk, r->topic, r->partition, r->offset + 1, err, sizeof err);
    if (rc < 0)
        log_kv(LOG_WARN, err, "component", "kafka", NULL);
    return rc;
}

static int kafka_seek(void *cimpl, const struct bus_record *r)
{
    struct kafka_consumer *c = cimpl;
    if (kafka_stale(c, &r, 1))
        return 0;   /* the rebalance restarted its partition at the committed offset */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, r->topic, r->partition)->offset = r->offset;
    rd_kafka_error_t *e = rd_kafka_seek_partitions(c->rk, l, KAFKA_SEEK_TIMEOUT_MS);
    int rc = 0;
    if (e) {
        log_kv(LOG_WARN, "kafka seek failed", "component", "kafka", "topic", r->topic, "error",
               rd_kafka_error_string(e), NULL);
        rd_kafka_error_destroy(e);
        rc = -EIO;
    } else if (l->elems[0].err) {
        log_kv(LOG_WARN, "kafka seek failed", "component", "kafka", "topic", r->topic, "error",
               rd_kafka_err2str(l->elems[0].err), NULL);
        rc = kafka_errno(l->elems[0].err);
    }
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

static void kafka_consumer_free(void *cimpl)
{
    struct kafka_consumer *c = cimpl;
    if (!c)
        return;
    /* Leaves the group now, so the partitions move to another member at
     * once instead of after session.timeout.ms. */
    rd_kafka_resp_err_t e = rd_kafka_unsubscribe(c->rk);
    if (e)
        log_kv(LOG_WARN, "kafka unsubscribe", "component", "kafka", "error",
               rd_kafka_err2str(e), NULL);
    kafka_consumer_close_destroy(c->rk);
    free(c);
}

/* The offsets a batch commits: past the highest record of each partition. */
static rd_kafka_topic_partition_list_t *kafka_batch_offsets(const struct bus_record *const *ins,
                                                            size_t n_in)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n_in);
    for (size_t i = 0; i < n_in; i++) {
        rd_kafka_topic_partition_t *p =
            rd_kafka_topic_partition_list_find(l, ins[i]->topic, ins[i]->partition);
        if (!p)
            rd_kafka_topic_partition_list_add(l, ins[i]->topic, ins[i]->partition)->offset =
                ins[i]->offset + 1;
        else if (ins[i]->offset + 1 > p->offset)
            p->offset = ins[i]->offset + 1;
    }
    return l;
}

static int kafka_produce_and_commit(void *cimpl, const struct bus_record *const *ins, size_t n_in,
                                    const struct bus_record *outs, size_t n, char *err,
                                    size_t errlen)
{
    struct kafka_consumer *c = cimpl;
    struct kafka_bus *kb = c->kb;
    int64_t deadline = mono_ms() + KAFKA_TXN_TIMEOUT_MS;
    if (kafka_stale(c, ins, n_in)) {
        snprintf(err, errlen, "kafka: the group rebalanced while the batch was read; dropped, its "
                 "partitions restart from the committed offsets");
        return -ESTALE;
    }
    rd_kafka_topic_partition_list_t *l = kafka_batch_offsets(ins, n_in);
    int rc;
    if (kb->txn_id) {   /* txn.rk is read under txn_lock only (it is replaced when fenced) */
        rc = kafka_txn_run(kb, outs, n, c, l, deadline, err, errlen);
    } else {
        rc = n ? kafka_produce_wait(kb, kb->plain.rk, outs, n, deadline, err, errlen) : 0;
        if (rc < 0 && kafka_fatal(kb->plain.rk, err, errlen))
            rc = -ENOTRECOVERABLE;
        if (rc == 0) {
            rd_kafka_resp_err_t e = rd_kafka_commit(c->rk, l, 0);
            for (int i = 0; !e && i < l->cnt; i++)
                e = l->elems[i].err;
            if (e) {
                snprintf(err, errlen, "kafka: commit of %d partition(s): %s", l->cnt,
                         rd_kafka_err2str(e));
                rc = kafka_errno(e);
            }
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

/* ---- offsets for the monitor and the CLI ------------------------------ */

/* Asks for every topic's metadata, not the one topic's: a request naming a
 * topic lets the broker auto-create it, and a monitor watching a misspelt
 * name must not create topics. */
static int kafka_partition_count(struct kafka_bus *kb, const char *topic, char *err, size_t errlen)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(kb->plain.rk, 1, NULL, &md, KAFKA_ADMIN_TIMEOUT_MS);
    if (e) {
        snprintf(err, errlen, "kafka: metadata: %s", rd_kafka_err2str(e));
        return kafka_errno(e);
    }
    int n = -ENOENT;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, topic) != 0)
            continue;
        n = md->topics[i].err ? kafka_errno(md->topics[i].err) : md->topics[i].partition_cnt;
        if (md->topics[i].err)
            snprintf(err, errlen, "kafka: metadata for %s: %s", topic,
                     rd_kafka_err2str(md->topics[i].err));
    }
    if (n == -ENOENT)
        snprintf(err, errlen, "kafka: no topic %s", topic);
    rd_kafka_metadata_destroy(md);
    return n;
}

/* Low and high watermarks of the partitions st[0..n).partition of topic,
 * as ListOffsets for the earliest (-2) and latest (-1) timestamps.  Not
 * rd_kafka_query_watermark_offsets: in librdkafka 2.0.2 it waits for ever
 * when a partition's leader is down (its timeout is ignored; upstream
 * 4460, fixed in 2.3.0), which froze the monitor during a broker outage;
 * rd_kafka_offsets_for_times keeps its timeout. */
static int kafka_watermarks(struct kafka_bus *kb, const char *topic, struct bus_partition_stats *st, int n,
                            char *err, size_t errlen)
{
    if (n <= 0)   /* a topic being created may show no partition yet */
        return 0;
    for (int end = 0; end < 2; end++) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n > 0 ? n : 1);
        for (int i = 0; i < n; i++)
            rd_kafka_topic_partition_list_add(l, topic, st[i].partition)->offset =
                end ? RD_KAFKA_OFFSET_END : RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(kb->plain.rk, l, KAFKA_ADMIN_TIMEOUT_MS);
        int32_t bad = -1;
        for (int i = 0; !e && i < n && i < l->cnt; i++) {
            if ((e = l->elems[i].err) != 0) {
                bad = l->elems[i].partition;
                break;
            }
            if (end)
                st[i].high = l->elems[i].offset;
            else
                st[i].low = l->elems[i].offset;
        }
        rd_kafka_topic_partition_list_destroy(l);
        if (e) {
            snprintf(err, errlen, "kafka: watermarks of %s [%d]: %s", topic, (int)bad, rd_kafka_err2str(e));
            return kafka_errno(e);
        }
    }
    return 0;
}

static int kafka_topic_stats(void *impl, const char *topic, const char *group,
                             struct bus_partition_stats *out, int max, char *err, size_t errlen)
{
    struct kafka_bus *kb = impl;
    int n = kafka_partition_count(kb, topic, err, errlen);
    if (n < 0)
        return n;
    if (n > max)
        n = max;
    for (int p = 0; p < n; p++)
        out[p] = (struct bus_partition_stats){ .partition = p, .committed = -1, .committed_ts_ms = -1 };
    int rc = kafka_watermarks(kb, topic, out, n, err, errlen);
    if (rc < 0)
        return rc;
    if (!group || n == 0)
        return n;

    /* A handle in the group reads its committed offsets without joining it,
     * then fetches the record each one points at. */
    rd_kafka_t *rk = kafka_reader_get(kb, group, err, errlen);
    if (!rk)
        return -EINVAL;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++)
        rd_kafka_topic_partition_list_add(l, topic, p);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, KAFKA_ADMIN_TIMEOUT_MS);
    rc = n;
    if (e) {
        snprintf(err, errlen, "kafka: committed offsets of %s for %s: %s", group, topic,
                 rd_kafka_err2str(e));
        rc = kafka_errno(e);
    }
    for (int i = 0; rc >= 0 && i < l->cnt; i++) {
        struct bus_partition_stats *s = &out[l->elems[i].partition];
        if (l->elems[i].err)
            continue;
        /* A group that never committed waits from the first record still
         * kept (the local backend answers the same). */
        int64_t from = l->elems[i].offset >= 0 ? l->elems[i].offset : s->low;
        if (l->elems[i].offset >= 0)
            s->committed = l->elems[i].offset;
        if (from >= s->high)
            continue;
        /* The committed offset may point at a transaction marker; the first
         * record from there is the oldest one waiting. */
        struct bus_record *r = NULL;
        int got = kafka_reader_fetch(rk, topic, s->partition, from, &r, KAFKA_ADMIN_TIMEOUT_MS, NULL);
        if (got == 1) {
            s->committed_ts_ms = r->timestamp_ms;
            bus_record_free(r);
        } else if (got < 0) {
            /* The oldest waiting record's age is unknown: no answer rather
             * than an age too low, and no more fetches that each wait the
             * whole timeout while no broker answers. */
            snprintf(err, errlen, "kafka: record at %s [%d] offset %lld: %s", topic, s->partition,
                     (long long)from, strerror(-got));
            rc = got;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    kafka_reader_put(kb, rk, group);
    return rc;
}

/* A commit from outside the group is what real brokers accept while the
 * group is empty.  A broker that refuses it (a group with members) gets one
 * from a member: the handle joins, commits and leaves. */
static int kafka_group_set_offset(void *impl, const char *group, const char *topic,
                                  int32_t partition, int64_t offset, char *err, size_t errlen)
{
    struct kafka_bus *kb = impl;
    rd_kafka_t *rk = kafka_reader_new(kb, group, err, errlen);
    if (!rk)
        return -EINVAL;
    rd_kafka_resp_err_t e = kafka_commit_raw(rk, topic, partition, offset);
    if (e == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID || e == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
        e = rd_kafka_subscribe(rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        int64_t deadline = mono_ms() + KAFKA_TXN_TIMEOUT_MS;
        while (!e || e == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID ||
               e == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
               e == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS) {
            if (mono_ms() >= deadline) {
                e = RD_KAFKA_RESP_ERR__TIMED_OUT;
                break;
            }
            /* Polling drives the join; fetched records are dropped unread
             * and nothing else is committed. */
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
            if (m)
                rd_kafka_message_destroy(m);
            char *member = rd_kafka_memberid(rk);
            int joined = member && *member;
            rd_kafka_mem_free(rk, member);
            if (joined && !(e = kafka_commit_raw(rk, topic, partition, offset)))
                break;
            if (!joined)
                e = RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID;
        }
        rd_kafka_unsubscribe(rk);
    }
    int rc = kafka_commit_result(e, topic, partition, offset, err, errlen);
    kafka_reader_free(rk);
    return rc;
}

static int kafka_read_at(void *impl, const char *topic, int32_t partition, int64_t offset,
                         struct bus_record **out, int timeout_ms)
{
    struct kafka_bus *kb = impl;
    char err[512];
    *out = NULL;
    rd_kafka_t *rk = kafka_reader_get(kb, NULL, err, sizeof err);
    if (!rk) {
        log_kv(LOG_WARN, err, "component", "kafka", NULL);
        return -EINVAL;
    }
    struct bus_record *r = NULL;
    /* A slow fetch is -ETIMEDOUT, for the caller to retry, never a skipped
     * record.  The end reached (read_committed stops at the last stable
     * offset): past offset, nothing is there (a marker, an aborted record);
     * at it, below the high watermark, a transaction still open holds the
     * offset: -EAGAIN, not "no record". */
    int64_t eof_at = -1;
    int rc = kafka_reader_fetch(rk, topic, partition, offset, &r, timeout_ms, &eof_at);
    kafka_reader_put(kb, rk, NULL);
    if (rc == 0 && eof_at >= 0 && eof_at <= offset) {
        struct bus_partition_stats w = { .partition = partition };
        int e = kafka_watermarks(kb, topic, &w, 1, err, sizeof err);
        if (e < 0)
            return e;
        return offset < w.high ? -EAGAIN : 0;
    }
    if (rc == 1 && r->offset != offset) {
        /* Nothing at that exact offset (a transaction marker, an aborted or
         * compacted record): the next one is not what was asked for. */
        bus_record_free(r);
        return 0;
    }
    *out = r;
    return rc;
}

/* One reader from `from` to the end of the partition as it stood (high):
 * one fetch stream instead of a client per record. */
static long kafka_scan_partition(void *impl, const char *topic, int32_t partition, int64_t from,
                                 int64_t high, bus_scan_cb cb, void *opaque, int *stopped,
                                 char *err, size_t errlen)
{
    struct kafka_bus *kb = impl;
    rd_kafka_t *rk = kafka_reader_new(kb, NULL, err, errlen);
    if (!rk)
        return -EINVAL;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = from;
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    long seen = 0;
    int rc = e ? kafka_errno(e) : 1;
    if (e)
        snprintf(err, errlen, "kafka: assign %s [%d]: %s", topic, (int)partition, rd_kafka_err2str(e));
    while (rc == 1 && !*stopped) {
        struct bus_record *r = NULL;
        /* 0: the end (read_committed: nothing committed after); a slow fetch
         * is an error, never a hole in the list. */
        rc = kafka_next(rk, &r, KAFKA_ADMIN_TIMEOUT_MS, 1, NULL);
        if (rc != 1)
            break;
        if (r->offset >= high) {
            bus_record_free(r);
            rc = 0;
            break;
        }
        seen++;
        *stopped = cb(opaque, r) != 0;
        bus_record_free(r);
    }
    if (rc < 0 && !e)
        snprintf(err, errlen, "kafka: reading %s [%d]: %s", topic, (int)partition, strerror(-rc));
    rd_kafka_assign(rk, NULL);
    kafka_reader_free(rk);
    return rc < 0 ? rc : seen;
}

static int kafka_offsets_for_time(void *impl, const char *topic, const struct bus_partition_stats *st,
                                  int n, int64_t ts_ms, int64_t *out, char *err, size_t errlen)
{
    struct kafka_bus *kb = impl;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n > 0 ? n : 1);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topic, st[i].partition)->offset = ts_ms;
    rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(kb->plain.rk, l, KAFKA_ADMIN_TIMEOUT_MS);
    for (int i = 0; !e && i < n; i++) {
        const rd_kafka_topic_partition_t *p = &l->elems[i];
        if (p->err) {
            e = p->err;
            break;
        }
        /* -1: no record that late; below low: gone to retention */
        int64_t off = p->offset < 0 ? st[i].high : p->offset;
        out[i] = off < st[i].low ? st[i].low : off > st[i].high ? st[i].high : off;
    }
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        snprintf(err, errlen, "kafka: offsets for time on %s: %s", topic, rd_kafka_err2str(e));
        return kafka_errno(e);
    }
    return 0;
}

static int kafka_ready(void *impl, char *why, size_t len)
{
    struct kafka_bus *kb = impl;
    pthread_mutex_lock(&kb->health_lock);
    int up = kb->up == 1;
    if (!up)
        snprintf(why, len, "kafka: no broker answers at %s (%s)", kb->bootstrap, kb->last_error);
    pthread_mutex_unlock(&kb->health_lock);
    return up;
}

const struct bus_ops bus_kafka_ops = {
    .ready = kafka_ready,
    .scan_partition = kafka_scan_partition,
    .offsets_for_time = kafka_offsets_for_time,
    .name = "kafka",
    .open = kafka_open,
    .close = kafka_close,
    .produce = kafka_produce,
    .consumer_new = kafka_consumer_new,
    .poll = kafka_poll,
    .commit = kafka_commit,
    .seek = kafka_seek,
    .consumer_free = kafka_consumer_free,
    .produce_and_commit = kafka_produce_and_commit,
    .topic_stats = kafka_topic_stats,
    .group_set_offset = kafka_group_set_offset,
    .read_at = kafka_read_at,
};
