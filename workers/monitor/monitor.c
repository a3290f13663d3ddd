/* monitor — watches the topics and raises alarms.
 *
 * Consumes: offsets and record timestamps of the watched topics (no group of
 * its own on them; it never moves anyone's offset), and mailfleet.events
 * (group "monitor", never committed: every start recounts the rate window).
 * Produces: alarm.v1 records on mailfleet.alarms (key = AlarmName) on each
 * state change and, while in ALARM, every renotify_interval; /metrics gauges
 * and /alarms.  Also deletes objects past `retention` from file: stores.
 * Guarantees: a threshold crossing is published within two periods.
 * Security: opens no listener of its own besides the shared HTTP server;
 * deletes only store objects older than the retention. */
#include "monitor.h"
#include "alarms.h"
#include "bus.h"
#include "common_config.h"
#include "event_record.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "strbuf.h"
#include "timeutil.h"
#include "topics.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_ALARMS 64
#define MAX_WATCH 16
#define RATE_BUCKETS 1440   /* one a minute over 24 h at most */

const struct config_key monitor_config_keys[] = {
    { "monitor", "metrics_listen", CONFIG_STR, "127.0.0.1:9105", "metrics/health/alarms when run alone" },
    { "monitor", "period", CONFIG_DURATION, "60s", "default alarm period" },
    { "monitor", "sample_interval", CONFIG_DURATION, "5s", "how often offsets are read (<= period)" },
    { "monitor", "renotify_interval", CONFIG_DURATION, "1h", "re-publish while in ALARM; 0 = never" },
    { "monitor", "default_alarms", CONFIG_BOOL, "true", "install the reference alarms" },
    { "monitor", "watch", CONFIG_LIST,
      TOPIC_INBOUND ":" GROUP_TRANSFORM ", " TOPIC_OUTBOUND ":" GROUP_SEND ", "
      TOPIC_INBOUND_DLQ ":" GROUP_DLQ_OPERATOR ", " TOPIC_OUTBOUND_DLQ ":" GROUP_DLQ_OPERATOR, "topic:group pairs exported as metrics" },
    { "monitor", "recent_window", CONFIG_DURATION, "5m", "window of Received5m / StaleBacklog" },
    { "monitor", "rate_window", CONFIG_DURATION, "24h", "window of bounce and complaint rates" },
    { "monitor", "retention", CONFIG_DURATION, "14d", "delete file-store objects older than this" },
    { "monitor", "retention_interval", CONFIG_DURATION, "1h", "how often retention runs; 0 = never" },
    { "alarm.*", "metric", CONFIG_STR, NULL,
      "Backlog, OldestAgeSeconds, Received5m, StaleBacklog, DLQDepth, BounceRate, ComplaintRate" },
    { "alarm.*", "description", CONFIG_STR, "", "AlarmDescription" },
    { "alarm.*", "topic", CONFIG_STR, NULL, "dimension: topic" },
    { "alarm.*", "group", CONFIG_STR, NULL, "dimension: consumer group" },
    { "alarm.*", "statistic", CONFIG_STR, "Maximum", "Maximum, Minimum, Average, Sum, SampleCount" },
    { "alarm.*", "period", CONFIG_DURATION, NULL, "defaults to [monitor] period" },
    { "alarm.*", "evaluation_periods", CONFIG_INT, "1", "N" },
    { "alarm.*", "datapoints_to_alarm", CONFIG_INT, "1", "M of N" },
    { "alarm.*", "comparison", CONFIG_STR, "GreaterThanThreshold", "CloudWatch operator or > >= < <=" },
    { "alarm.*", "threshold", CONFIG_STR, NULL, "number" },
    { "alarm.*", "treat_missing_data", CONFIG_STR, "missing", "missing, breaching, notBreaching, ignore" },
    CONFIG_KEYS_END
};

struct watch {
    char *topic, *group;
    struct metric *m_backlog, *m_age, *m_recent, *m_stale;
    double backlog, age, recent, stale;
    int ok;
};

struct slot {                  /* samples of one alarm inside its current period */
    int64_t start_ms;
    double min, max, sum;
    long n;
};

#define MAX_EVENT_PARTITIONS 256
/* State changes kept while the bus is down; the oldest go first. */
#define MAX_PENDING_ALARMS 256

struct monitor {
    struct worker_env *env;
    struct bus *bus;
    struct bus_consumer *events;
    pthread_mutex_t lock;      /* alarms vs the /alarms handler */
    struct alarm *alarms[MAX_ALARMS];
    struct metric *m_state[MAX_ALARMS];
    struct slot slots[MAX_ALARMS];
    size_t n_alarms;
    struct watch watch[MAX_WATCH];
    size_t n_watch;
    int64_t recent_ms, rate_window_ms;
    /* per-minute counts for the rates */
    long delivered[RATE_BUCKETS], bounced[RATE_BUCKETS], complained[RATE_BUCKETS];
    int64_t bucket_minute[RATE_BUCKETS];
    struct metric *m_bounce_rate, *m_complaint_rate, *m_published, *m_retention_deleted;
    int64_t events_seen[MAX_EVENT_PARTITIONS];   /* last offset counted per partition */
    /* alarm.v1 records not yet on the bus, oldest first (monitor thread) */
    struct pending_alarm {
        char *name, *record;
    } pending[MAX_PENDING_ALARMS];
    size_t n_pending;
};

static const struct {
    const char *name, *metric, *topic, *group;
    double threshold;
    const char *desc;
} default_alarms[] = {
    { "inbound-dlq-depth", "DLQDepth", TOPIC_INBOUND_DLQ, GROUP_DLQ_OPERATOR, 50,
      "More than 50 inbound records are waiting in the dead-letter topic." },
    { "inbound-oldest-age", "OldestAgeSeconds", TOPIC_INBOUND, GROUP_TRANSFORM, 180,
      "The oldest unprocessed inbound record is older than 3 minutes." },
    { "inbound-received-5m", "Received5m", TOPIC_INBOUND, NULL, 180,
      "More than 180 messages were received in 5 minutes." },
    { "inbound-stale-backlog", "StaleBacklog", TOPIC_INBOUND, GROUP_TRANSFORM, 180,
      "More than 180 inbound records have waited longer than 5 minutes." },
    { "outbound-oldest-age", "OldestAgeSeconds", TOPIC_OUTBOUND, GROUP_SEND, 180,
      "The oldest unsent outbound record is older than 3 minutes." },
    { "outbound-dlq-depth", "DLQDepth", TOPIC_OUTBOUND_DLQ, GROUP_DLQ_OPERATOR, 50,
      "More than 50 outbound records are waiting in the dead-letter topic." },
    { "bounce-rate", "BounceRate", TOPIC_EVENTS, NULL, 0.05,
      "More than 5% of sends bounced." },
    { "complaint-rate", "ComplaintRate", TOPIC_EVENTS, NULL, 0.001,
      "More than 0.1% of sends drew a complaint." },
};

static const char *metric_names[] = { "Backlog", "OldestAgeSeconds", "Received5m", "StaleBacklog",
                                      "DLQDepth", "BounceRate", "ComplaintRate", NULL };

static int metric_known(const char *m)
{
    for (int i = 0; metric_names[i]; i++)
        if (strcmp(m, metric_names[i]) == 0)
            return 1;
    return 0;
}

static void add_alarm(struct monitor *m, const struct alarm_rule *r)
{
    char labels[256];
    if (m->n_alarms == MAX_ALARMS)
        panic("%s: too many alarms", __func__);
    m->alarms[m->n_alarms] = alarm_new(r);
    snprintf(labels, sizeof(labels), "alarm=\"%s\"", r->name);
    m->m_state[m->n_alarms] = metric_gauge("mailfleet_alarm_state",
        "Alarm state: 0 INSUFFICIENT_DATA, 1 OK, 2 ALARM.", labels);
    m->n_alarms++;
}

static int load_alarms(struct monitor *m, const struct config *cfg, char *err, size_t errlen)
{
    int64_t period = config_duration_ms(cfg, "monitor", "period");
    if (config_bool(cfg, "monitor", "default_alarms")) {
        for (size_t i = 0; i < sizeof(default_alarms) / sizeof(default_alarms[0]); i++) {
            struct alarm_rule r = { default_alarms[i].name, default_alarms[i].desc,
                                    default_alarms[i].metric, default_alarms[i].topic,
                                    default_alarms[i].group, "Maximum", period, 1, 1, CMP_GT,
                                    default_alarms[i].threshold, MISSING_MISSING };
            add_alarm(m, &r);
        }
    }
    const char **secs;
    size_t n = config_sections(cfg, "alarm", &secs);
    for (size_t i = 0; i < n; i++) {
        const char *s = secs[i];
        struct alarm_rule r = { s + 6, config_str(cfg, s, "description"), config_str(cfg, s, "metric"),
                                config_str(cfg, s, "topic"), config_str(cfg, s, "group"),
                                config_str(cfg, s, "statistic"),
                                config_isset(cfg, s, "period") ? config_duration_ms(cfg, s, "period") : period,
                                (int)config_int(cfg, s, "evaluation_periods"),
                                (int)config_int(cfg, s, "datapoints_to_alarm"), CMP_GT, 0, MISSING_MISSING };
        const char *thr = config_str(cfg, s, "threshold");
        char *end = NULL;
        if (!r.metric || !metric_known(r.metric) || !r.topic || !thr || (r.threshold = strtod(thr, &end), *end) ||
            alarm_parse_cmp(config_str(cfg, s, "comparison"), &r.cmp) ||
            alarm_parse_missing(config_str(cfg, s, "treat_missing_data"), &r.missing) || r.period_ms <= 0) {
            snprintf(err, errlen, "[%s]: needs metric (one of Backlog, OldestAgeSeconds, Received5m, "
                     "StaleBacklog, DLQDepth, BounceRate, ComplaintRate), topic, a numeric threshold, "
                     "a known comparison and treat_missing_data", s);
            if (n)
                free(secs);
            return -1;
        }
        /* a configured alarm with a default's name replaces it */
        for (size_t j = 0; j < m->n_alarms; j++)
            if (strcmp(alarm_rule(m->alarms[j])->name, r.name) == 0) {
                alarm_free(m->alarms[j]);
                m->alarms[j] = m->alarms[--m->n_alarms];
                m->m_state[j] = m->m_state[m->n_alarms];
                break;
            }
        add_alarm(m, &r);
    }
    if (n)
        free(secs);
    return 0;
}

static void sample_watch(struct monitor *m, struct watch *w, int64_t now)
{
    struct bus_partition_stats st[64];
    char err[256];
    int n = bus_topic_stats(m->bus, w->topic, w->group, st, 64, err, sizeof(err));
    if (n < 0) {
        w->ok = 0;
        log_kv(LOG_WARN, "cannot read topic offsets", "topic", w->topic, "error", err, NULL);
        return;
    }
    /* where the recent window starts in each partition */
    int64_t cuts[64];
    if (bus_offsets_for_time(m->bus, w->topic, st, n, now - m->recent_ms, cuts, err, sizeof(err)) < 0) {
        w->ok = 0;
        log_kv(LOG_WARN, "cannot find offsets by time", "topic", w->topic, "error", err, NULL);
        return;
    }
    double backlog = 0, recent = 0, stale = 0, age = 0;
    for (int i = 0; i < n; i++) {
        int64_t pos = st[i].committed >= 0 ? st[i].committed : st[i].low;
        if (pos < st[i].low)
            pos = st[i].low;
        if (st[i].high > pos)
            backlog += (double)(st[i].high - pos);
        if (st[i].committed_ts_ms >= 0 && st[i].high > pos && now - st[i].committed_ts_ms > age * 1000)
            age = (double)(now - st[i].committed_ts_ms) / 1000.0;
        int64_t cut = cuts[i];
        recent += (double)(st[i].high - cut);
        if (cut > pos)
            stale += (double)(cut - pos);
    }
    w->backlog = backlog;
    w->age = age;
    w->recent = recent;
    w->stale = stale;
    w->ok = 1;
    metric_set(w->m_backlog, backlog);
    metric_set(w->m_age, age);
    metric_set(w->m_recent, recent);
    metric_set(w->m_stale, stale);
}

static struct watch *find_watch(struct monitor *m, const char *topic, const char *group)
{
    for (size_t i = 0; i < m->n_watch; i++)
        if (strcmp(m->watch[i].topic, topic) == 0 &&
            (!group || strcmp(m->watch[i].group, group) == 0))
            return &m->watch[i];
    return NULL;
}

static struct watch *add_watch(struct monitor *m, const char *topic, const char *group)
{
    struct watch *w = find_watch(m, topic, group);
    if (w)
        return w;
    if (m->n_watch == MAX_WATCH)
        return NULL;
    w = &m->watch[m->n_watch++];
    char labels[256];
    w->topic = xstrdup(topic);
    w->group = xstrdup(group ? group : GROUP_MONITOR);
    snprintf(labels, sizeof(labels), "topic=\"%s\",group=\"%s\"", w->topic, w->group);
    w->m_backlog = metric_gauge("mailfleet_topic_backlog_records", "Records not yet committed by the group.", labels);
    w->m_age = metric_gauge("mailfleet_topic_oldest_age_seconds", "Age of the oldest record the group has not processed.", labels);
    w->m_recent = metric_gauge("mailfleet_topic_received_recent_records", "Records appended within the recent window (default 5 minutes).", labels);
    w->m_stale = metric_gauge("mailfleet_topic_stale_backlog_records", "Records waiting longer than the recent window.", labels);
    return w;
}

static void count_event(struct monitor *m, const struct bus_record *r)
{
    char err[256];
    json_t *o = r->value ? event_record_parse(r->value, r->value_len, err, sizeof(err)) : NULL;
    if (!o)
        return;   /* not counted: feedback logs unreadable events */
    const char *type = json_string_value(json_object_get(o, "eventType"));
    int64_t minute = r->timestamp_ms / 60000;
    int idx = (int)(minute % RATE_BUCKETS);
    if (m->bucket_minute[idx] != minute) {
        m->bucket_minute[idx] = minute;
        m->delivered[idx] = m->bounced[idx] = m->complained[idx] = 0;
    }
    if (type && strcmp(type, "Delivery") == 0)
        m->delivered[idx]++;
    else if (type && strcmp(type, "Bounce") == 0)
        m->bounced[idx]++;
    else if (type && strcmp(type, "Complaint") == 0)
        m->complained[idx]++;
    json_decref(o);
}

static int rates(struct monitor *m, int64_t now, double *bounce, double *complaint)
{
    int64_t first = (now - m->rate_window_ms) / 60000;
    long d = 0, b = 0, c = 0;
    for (int i = 0; i < RATE_BUCKETS; i++)
        if (m->bucket_minute[i] >= first && m->bucket_minute[i] > 0) {
            d += m->delivered[i];
            b += m->bounced[i];
            c += m->complained[i];
        }
    if (d + b == 0)
        return 0;
    *bounce = (double)b / (double)(d + b);
    *complaint = (double)c / (double)(d + b);
    return 1;
}

/* The raw value a rule's metric has now; 0 = no data. */
static int rule_value(struct monitor *m, const struct alarm_rule *r, int64_t now, double *v)
{
    if (strcmp(r->metric, "BounceRate") == 0 || strcmp(r->metric, "ComplaintRate") == 0) {
        double b, c;
        if (!rates(m, now, &b, &c))
            return 0;
        *v = r->metric[0] == 'B' ? b : c;
        return 1;
    }
    struct watch *w = find_watch(m, r->topic, r->group);
    if (!w || !w->ok)
        return 0;
    if (strcmp(r->metric, "Backlog") == 0 || strcmp(r->metric, "DLQDepth") == 0)
        *v = w->backlog;
    else if (strcmp(r->metric, "OldestAgeSeconds") == 0)
        *v = w->age;
    else if (strcmp(r->metric, "Received5m") == 0)
        *v = w->recent;
    else
        *v = w->stale;
    return 1;
}

/* Queues a state change for publish_pending (called under m->lock). */
static void publish_later(struct monitor *m, const char *name, char *record)
{
    if (m->n_pending == MAX_PENDING_ALARMS) {
        log_kv(LOG_ERROR, "alarm record dropped: too many waiting for the bus", "alarm",
               m->pending[0].name, NULL);
        free(m->pending[0].name);
        free(m->pending[0].record);
        memmove(&m->pending[0], &m->pending[1], (--m->n_pending) * sizeof m->pending[0]);
    }
    m->pending[m->n_pending++] = (struct pending_alarm){ xstrdup(name), record };
}

/* Publishes what is queued, in order, outside m->lock (so /alarms never
 * waits on the bus); what the bus refuses stays for the next period. */
static void publish_pending(struct monitor *m)
{
    size_t done = 0;
    while (done < m->n_pending) {
        char err[256];
        struct pending_alarm *p = &m->pending[done];
        struct bus_record r = { .topic = TOPIC_ALARMS, .key = p->name, .key_len = strlen(p->name),
                                .value = p->record, .value_len = strlen(p->record), .partition = -1 };
        if (bus_produce(m->bus, &r, 1, 2000, err, sizeof(err)) != 0) {
            log_kv(LOG_WARN, "cannot publish alarm yet; it stays queued", "alarm", p->name, "error",
                   err, NULL);
            break;
        }
        metric_inc(m->m_published);
        free(p->name);
        free(p->record);
        done++;
    }
    m->n_pending -= done;
    memmove(&m->pending[0], &m->pending[done], m->n_pending * sizeof m->pending[0]);
}

static double slot_stat(const struct slot *s, const char *stat)
{
    if (strcmp(stat, "Minimum") == 0) return s->min;
    if (strcmp(stat, "Average") == 0) return s->sum / (double)s->n;
    if (strcmp(stat, "Sum") == 0) return s->sum;
    if (strcmp(stat, "SampleCount") == 0) return (double)s->n;
    return s->max;
}

static void evaluate(struct monitor *m, int64_t now, int64_t renotify)
{
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_alarms; i++) {
        const struct alarm_rule *r = alarm_rule(m->alarms[i]);
        struct slot *s = &m->slots[i];
        double v;
        if (s->start_ms == 0)
            s->start_ms = now;
        if (rule_value(m, r, now, &v)) {
            if (s->n == 0 || v < s->min) s->min = v;
            if (s->n == 0 || v > s->max) s->max = v;
            s->sum += v;
            s->n++;
        }
        if (now - s->start_ms < r->period_ms)
            continue;
        char *rec = NULL;
        int has = s->n > 0;
        double dp = has ? slot_stat(s, r->statistic) : 0;
        if (alarm_evaluate(m->alarms[i], has, dp, now, renotify, &rec)) {
            log_kv(LOG_INFO, "alarm state", "alarm", r->name, "state",
                   alarm_state_name(alarm_state(m->alarms[i])), NULL);
            publish_later(m, r->name, rec);
        }
        metric_set(m->m_state[i], (double)alarm_state(m->alarms[i]));
        *s = (struct slot){ .start_ms = now };
    }
    pthread_mutex_unlock(&m->lock);
}

static void serve_alarms(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct monitor *m = opaque;
    struct strbuf b;
    strbuf_init(&b);
    strbuf_append(&b, "[");
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_alarms; i++) {
        char *s = alarm_status_json(m->alarms[i]);
        strbuf_appendf(&b, "%s%s", i ? ",\n" : "\n", s);
        free(s);
    }
    pthread_mutex_unlock(&m->lock);
    strbuf_append(&b, "\n]\n");
    resp->status = 200;
    resp->content_type = "application/json";
    resp->body = strbuf_detach(&b, &resp->body_len);
}

struct retention_ctx {
    struct store *st;
    int64_t cutoff;
    long deleted;
};

static int retention_one(void *opaque, const char *key, const struct store_object *obj)
{
    struct retention_ctx *rc = opaque;
    char err[256];
    if (obj->mtime_ms > 0 && obj->mtime_ms < rc->cutoff &&
        store_delete(rc->st, key, err, sizeof(err)) == 0)
        rc->deleted++;
    return 0;
}

static void run_retention(struct monitor *m, const struct config *cfg)
{
    const char *keys[] = { "store_incoming", "store_attachments" };
    const char *uris[] = { config_str(cfg, "mailfleet", keys[0]), config_str(cfg, "mailfleet", keys[1]) };
    int64_t cutoff = now_ms() - config_duration_ms(cfg, "monitor", "retention");
    for (int i = 0; i < 2; i++) {
        char err[256];
        if (!uris[i] || strncmp(uris[i], "file:", 5) != 0)
            continue;   /* s3: the bucket's lifecycle rule does it (mailfleet retention) */
        struct store *st = common_store(cfg, keys[i], err, sizeof(err));
        if (!st) {
            log_kv(LOG_WARN, "retention: cannot open store", "store", uris[i], "error", err, NULL);
            continue;
        }
        struct retention_ctx rc = { st, cutoff, 0 };
        if (store_list(st, "", retention_one, &rc, err, sizeof(err)) != 0)
            log_kv(LOG_WARN, "retention: cannot list store", "store", uris[i], "error", err, NULL);
        if (rc.deleted) {
            char n[32];
            snprintf(n, sizeof(n), "%ld", rc.deleted);
            log_kv(LOG_INFO, "retention deleted objects", "store", uris[i], "count", n, NULL);
            metric_add(m->m_retention_deleted, (double)rc.deleted);
        }
        store_close(st);
    }
}

/* The topics and groups to sample: [monitor] watch ("topic[:group]") and
 * every alarm's, except the rate alarms, which read mailfleet.events. */
static void add_watches(struct monitor *m, const struct config *cfg)
{
    char **wl;
    size_t nw = config_list(cfg, "monitor", "watch", &wl);
    for (size_t i = 0; i < nw; i++) {
        char *colon = strchr(wl[i], ':');
        if (colon)
            *colon = '\0';
        add_watch(m, wl[i], colon ? colon + 1 : NULL);
    }
    config_list_free(wl, nw);
    for (size_t i = 0; i < m->n_alarms; i++) {
        const struct alarm_rule *r = alarm_rule(m->alarms[i]);
        if (strcmp(r->metric, "BounceRate") && strcmp(r->metric, "ComplaintRate"))
            add_watch(m, r->topic, r->group);
    }
}

/* Counts every event waiting; returns the last poll's answer (< 0: error). */
/* Counts what is there, for at most DRAIN_MS, so samples keep their pace
 * when a rejoin makes the group read mailfleet.events from the start again
 * (it never commits); records seen before (per partition, by offset) are
 * not counted twice. */
#define DRAIN_MS 100
static int drain_events(struct monitor *m)
{
    struct bus_record *r = NULL;
    int got = 0;
    int64_t until = mono_ms() + DRAIN_MS;
    while (mono_ms() < until && (got = bus_consumer_poll(m->events, &r, 0)) == 1) {
        int p = r->partition;
        if (p < 0 || p >= MAX_EVENT_PARTITIONS || r->offset > m->events_seen[p]) {
            if (p >= 0 && p < MAX_EVENT_PARTITIONS)
                m->events_seen[p] = r->offset;
            count_event(m, r);
        }
        bus_record_free(r);
    }
    return mono_ms() < until ? got : 1;
}

/* One sample of every watched topic, the rates, and the alarms evaluated. */
static void sample_all(struct monitor *m, int64_t now, int64_t renotify, stop_flag_t *stop)
{
    /* a broker that is down makes each sample slow: stop between them */
    for (size_t i = 0; i < m->n_watch && !atomic_load(stop); i++)
        sample_watch(m, &m->watch[i], now);
    double b, c;
    if (rates(m, now, &b, &c)) {
        metric_set(m->m_bounce_rate, b);
        metric_set(m->m_complaint_rate, c);
    }
    evaluate(m, now, renotify);
    publish_pending(m);
}

static void monitor_free(struct monitor *m)
{
    for (size_t i = 0; i < m->n_pending; i++) {
        free(m->pending[i].name);
        free(m->pending[i].record);
    }
    bus_consumer_free(m->events);
    bus_close(m->bus);
    for (size_t i = 0; i < m->n_alarms; i++)
        alarm_free(m->alarms[i]);
    for (size_t i = 0; i < m->n_watch; i++) {
        free(m->watch[i].topic);
        free(m->watch[i].group);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static int monitor_run(struct worker_env *env)
{
    const struct config *cfg = env->cfg;
    char err[512];
    struct monitor *m = xcalloc(1, sizeof(*m));
    for (int i = 0; i < MAX_EVENT_PARTITIONS; i++)
        m->events_seen[i] = -1;
    int rc = 1;

    m->env = env;
    pthread_mutex_init(&m->lock, NULL);
    m->recent_ms = config_duration_ms(cfg, "monitor", "recent_window");
    m->rate_window_ms = config_duration_ms(cfg, "monitor", "rate_window");
    if (m->rate_window_ms > (int64_t)RATE_BUCKETS * 60000)
        m->rate_window_ms = (int64_t)RATE_BUCKETS * 60000;
    m->m_bounce_rate = metric_gauge("mailfleet_bounce_rate_ratio", "Bounces over sends in the rate window.", NULL);
    m->m_complaint_rate = metric_gauge("mailfleet_complaint_rate_ratio", "Complaints over sends in the rate window.", NULL);
    m->m_published = metric_counter("mailfleet_monitor_alarm_notifications_total", "alarm.v1 records published.", NULL);
    m->m_retention_deleted = metric_counter("mailfleet_monitor_retention_deleted_total", "Store objects deleted by retention.", NULL);
    if (load_alarms(m, cfg, err, sizeof(err)) != 0) {
        log_kv(LOG_ERROR, "bad alarm configuration", "error", err, NULL);
        goto out;
    }
    add_watches(m, cfg);

    struct bus_options bo = { .client_id = "mailfleet-monitor" };
    m->bus = common_bus(cfg, &bo, err, sizeof(err));
    if (!m->bus) {
        log_kv(LOG_ERROR, "cannot open the bus", "error", err, NULL);
        goto out;
    }
    const char *topics[] = { TOPIC_EVENTS, NULL };
    m->events = bus_consumer_new(m->bus, GROUP_MONITOR, topics, 1, err, sizeof(err));
    if (!m->events) {
        log_kv(LOG_ERROR, "cannot consume mailfleet.events", "error", err, NULL);
        goto out;
    }
    http_route(env->http, "/alarms", serve_alarms, m);

    int64_t sample_ms = config_duration_ms(cfg, "monitor", "sample_interval");
    int64_t renotify = config_duration_ms(cfg, "monitor", "renotify_interval");
    int64_t ret_every = config_duration_ms(cfg, "monitor", "retention_interval");
    int64_t next_sample = 0, next_retention = mono_ms() + 10000;
    worker_started(env);
    log_kv(LOG_INFO, "monitor started", NULL);
    /* Not on the common worker loop (worker_loop.h): the monitor's group
     * never commits — every start recounts the rate window from the
     * topic — and it produces nothing per record, so there is no batch to
     * make durable.  It drains what is there between samples instead. */
    int64_t next_poll_warning = 0;
    while (!*env->stop) {
        int got = drain_events(m);
        if (got < 0 && mono_ms() >= next_poll_warning) {
            /* Rates computed meanwhile miss events: say so, once a minute. */
            log_kv(LOG_WARN, "cannot read mailfleet.events; rates may be low", NULL);
            next_poll_warning = mono_ms() + 60000;
        }
        int64_t t = mono_ms();
        if (t >= next_sample) {
            sample_all(m, now_ms(), renotify, env->stop);
            next_sample = t + sample_ms;
        }
        if (ret_every > 0 && t >= next_retention) {
            run_retention(m, cfg);
            next_retention = t + ret_every;
        }
        sleep_unless_stopped(got < 0 ? 1000 : 50, env->stop);
    }
    rc = 0;
out:
    http_route_remove(env->http, "/alarms", m);   /* waits for a running /alarms */
    monitor_free(m);
    log_kv(LOG_INFO, "monitor stopped", NULL);
    return rc;
}

const struct worker_def monitor_worker = { "monitor", monitor_config_keys, monitor_run };
