/* metrics — Prometheus registry.
 *
 * Families are kept in registration order; each holds its series.  Counter and
 * gauge values are doubles updated with a CAS loop on their bit pattern, so
 * hot paths never take the registry lock; the lock guards registration and
 * rendering (and histograms, whose buckets must move together). */
#include "metrics.h"
#include "log.h"
#include "strbuf.h"

#include <math.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum metric_kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM };

struct metric {
    struct family *fam;
    char *labels;                  /* "" when none */
    _Atomic uint64_t bits;         /* double value (counter/gauge) */
    /* histogram */
    double bounds[32];
    uint64_t counts[33];           /* per bucket, +Inf last */
    size_t nb;
    double sum;
    uint64_t count;
    struct metric *next;
};

struct family {
    char *name;
    char *help;
    enum metric_kind kind;
    struct metric *series, *last;
    struct family *next;
};

struct collector {
    metrics_collect_cb cb;
    void *opaque;
    struct collector *next;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct family *families, *families_last;
static struct collector *collectors;

const double metrics_latency_buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05,
                                           0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
const size_t metrics_latency_buckets_n = sizeof(metrics_latency_buckets) / sizeof(double);

static double bits_to_double(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof(d));
    return d;
}

static uint64_t double_to_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof(b));
    return b;
}

static struct metric *get(const char *name, const char *help, const char *labels,
                          enum metric_kind kind, const double *buckets, size_t nb)
{
    struct family *f;
    struct metric *m;

    if (!labels)
        labels = "";
    pthread_mutex_lock(&reg_lock);
    for (f = families; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            break;
    if (f && f->kind != kind)
        panic("%s: metric %s registered with two types", __func__, name);
    if (!f) {
        f = xcalloc(1, sizeof(*f));
        f->name = xstrdup(name);
        f->help = xstrdup(help ? help : "");
        f->kind = kind;
        if (families_last)
            families_last->next = f;
        else
            families = f;
        families_last = f;
    }
    for (m = f->series; m; m = m->next)
        if (strcmp(m->labels, labels) == 0)
            goto out;
    m = xcalloc(1, sizeof(*m));
    m->fam = f;
    m->labels = xstrdup(labels);
    atomic_init(&m->bits, double_to_bits(0));
    if (kind == KIND_HISTOGRAM) {
        if (nb > 32)
            panic("%s: %s has too many buckets", __func__, name);
        memcpy(m->bounds, buckets, nb * sizeof(double));
        m->nb = nb;
    }
    if (f->last)
        f->last->next = m;
    else
        f->series = m;
    f->last = m;
out:
    pthread_mutex_unlock(&reg_lock);
    return m;
}

struct metric *metric_counter(const char *name, const char *help, const char *labels)
{
    return get(name, help, labels, KIND_COUNTER, NULL, 0);
}

struct metric *metric_gauge(const char *name, const char *help, const char *labels)
{
    return get(name, help, labels, KIND_GAUGE, NULL, 0);
}

struct metric *metric_histogram(const char *name, const char *help, const char *labels,
                                const double *buckets, size_t n)
{
    return get(name, help, labels, KIND_HISTOGRAM, buckets, n);
}

void metric_add(struct metric *m, double v)
{
    uint64_t old = atomic_load(&m->bits);
    while (!atomic_compare_exchange_weak(&m->bits, &old, double_to_bits(bits_to_double(old) + v)))
        ;
}

void metric_inc(struct metric *m)
{
    metric_add(m, 1);
}

void metric_set(struct metric *m, double v)
{
    atomic_store(&m->bits, double_to_bits(v));
}

double metric_value(const struct metric *m)
{
    return bits_to_double(atomic_load(&((struct metric *)m)->bits));
}

/* Histograms are rarer than counters and need their fields consistent for a
 * scrape; a lock per observation is fine at mail rates. */
static pthread_mutex_t hist_lock = PTHREAD_MUTEX_INITIALIZER;

void metric_observe(struct metric *m, double v)
{
    size_t i = 0;
    while (i < m->nb && v > m->bounds[i])
        i++;
    pthread_mutex_lock(&hist_lock);
    m->counts[i]++;
    m->sum += v;
    m->count++;
    pthread_mutex_unlock(&hist_lock);
}

void metrics_on_collect(metrics_collect_cb cb, void *opaque)
{
    struct collector *c = xcalloc(1, sizeof(*c));
    c->cb = cb;
    c->opaque = opaque;
    pthread_mutex_lock(&reg_lock);
    c->next = collectors;
    collectors = c;
    pthread_mutex_unlock(&reg_lock);
}

static void fmt_value(struct strbuf *out, double v)
{
    if (isinf(v))
        strbuf_append(out, v > 0 ? "+Inf" : "-Inf");
    else if (isnan(v))
        strbuf_append(out, "NaN");
    else if (v == (double)(int64_t)v && fabs(v) < 1e15)
        strbuf_appendf(out, "%lld", (long long)v);
    else
        strbuf_appendf(out, "%.9g", v);
}

static void series_name(struct strbuf *out, const char *name, const char *suffix,
                        const char *labels, const char *extra)
{
    strbuf_appendf(out, "%s%s", name, suffix);
    if (*labels || extra) {
        strbuf_append(out, "{");
        strbuf_append(out, labels);
        if (extra) {
            if (*labels)
                strbuf_append(out, ",");
            strbuf_append(out, extra);
        }
        strbuf_append(out, "}");
    }
    strbuf_append(out, " ");
}

void metrics_render(struct strbuf *out)
{
    static const char *types[] = { "counter", "gauge", "histogram" };

    pthread_mutex_lock(&reg_lock);
    for (struct collector *c = collectors; c; c = c->next)
        c->cb(c->opaque);
    for (struct family *f = families; f; f = f->next) {
        strbuf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                       types[f->kind]);
        for (struct metric *m = f->series; m; m = m->next) {
            if (f->kind != KIND_HISTOGRAM) {
                series_name(out, f->name, "", m->labels, NULL);
                fmt_value(out, metric_value(m));
                strbuf_append(out, "\n");
                continue;
            }
            pthread_mutex_lock(&hist_lock);
            uint64_t cum = 0;
            char le[64];
            for (size_t i = 0; i <= m->nb; i++) {
                cum += m->counts[i];
                if (i < m->nb)
                    snprintf(le, sizeof(le), "le=\"%.9g\"", m->bounds[i]);
                else
                    snprintf(le, sizeof(le), "le=\"+Inf\"");
                series_name(out, f->name, "_bucket", m->labels, le);
                strbuf_appendf(out, "%llu\n", (unsigned long long)cum);
            }
            series_name(out, f->name, "_sum", m->labels, NULL);
            fmt_value(out, m->sum);
            strbuf_append(out, "\n");
            series_name(out, f->name, "_count", m->labels, NULL);
            strbuf_appendf(out, "%llu\n", (unsigned long long)m->count);
            pthread_mutex_unlock(&hist_lock);
        }
    }
    pthread_mutex_unlock(&reg_lock);
}
