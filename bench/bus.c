/* bench/bus — produce and consume throughput of one bus backend.
 *
 *   bus URI [N] [RUNS]   1 KB records; three produce shapes, each followed by
 *                        one consumer reading the records back:
 *                          1 thread,   1 record per bus_produce  (one commit each)
 *                          1 thread,  64 records per bus_produce
 *                         64 threads,  1 record per bus_produce  (group commit)
 *                        N records per shape (default 20000; a shape stops
 *                        early after 10 s), RUNS runs (default 5), medians printed.
 *   bus fsync DIR        the disk's floor: 4 KB write + fdatasync, median of 200.
 *
 * Works for local: and kafka: URIs alike; topics are fresh per run. */
#include "bus.h"
#include "timeutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RECORD_SIZE 1024
#define SHAPE_SECONDS 10
#define MAX_RUNS 15

struct shape {
    const char *name;
    int threads, batch;
};

static const struct shape shapes[] = {
    { "1 thread x 1 record/call", 1, 1 },
    { "1 thread x 64 records/call", 1, 64 },
    { "64 threads x 1 record/call", 64, 1 },
};

struct job {
    struct bus *bus;
    const char *topic;
    long n;
    int batch;
    int64_t deadline;
    atomic_long *next;
    int failed;
};

static void *producer(void *arg)
{
    struct job *j = arg;
    static char payload[RECORD_SIZE];
    struct bus_record recs[64];
    char keys[64][32], err[256];

    while (mono_ms() < j->deadline) {
        long first = atomic_fetch_add(j->next, j->batch);
        if (first >= j->n)
            break;
        int n = (int)(j->n - first < j->batch ? j->n - first : j->batch);
        for (int i = 0; i < n; i++) {
            snprintf(keys[i], sizeof keys[i], "k%ld", first + i);
            recs[i] = (struct bus_record){ .topic = j->topic, .key = keys[i], .key_len = strlen(keys[i]),
                                           .value = payload, .value_len = sizeof payload,
                                           .partition = -1 };
        }
        if (bus_produce(j->bus, recs, (size_t)n, 30000, err, sizeof err) != 0) {
            fprintf(stderr, "produce: %s\n", err);
            j->failed = 1;
            break;
        }
    }
    return NULL;
}

/* Returns records produced (the count claimed before the deadline) or -1. */
static long run_produce(struct bus *b, const char *topic, const struct shape *s, long n, double *secs)
{
    atomic_long next = 0;
    pthread_t th[64];
    struct job jobs[64];
    int64_t t0 = mono_us();
    for (int i = 0; i < s->threads; i++) {
        jobs[i] = (struct job){ b, topic, n, s->batch, mono_ms() + SHAPE_SECONDS * 1000, &next, 0 };
        pthread_create(&th[i], NULL, producer, &jobs[i]);
    }
    int failed = 0;
    for (int i = 0; i < s->threads; i++) {
        pthread_join(th[i], NULL);
        failed |= jobs[i].failed;
    }
    *secs = (double)(mono_us() - t0) / 1e6;
    long done = atomic_load(&next);
    return failed ? -1 : done < n ? done : n;
}

/* Times from the first record to the last, so a Kafka group join is not
 * counted as consume time. */
static long run_consume(struct bus *b, const char *topic, const char *group, long n, double *secs)
{
    const char *topics[] = { topic, NULL };
    char err[256];
    struct bus_consumer *c = bus_consumer_new(b, group, topics, 1, err, sizeof err);
    if (!c) {
        fprintf(stderr, "consumer: %s\n", err);
        return -1;
    }
    long got = 0;
    int64_t t0 = 0, idle_since = mono_ms();
    while (got < n && mono_ms() - idle_since < 30000) {
        struct bus_record *r;
        int rc = bus_consumer_poll(c, &r, 200);
        if (rc < 0)
            break;
        if (rc == 0)
            continue;
        if (got++ == 0)
            t0 = mono_us();
        idle_since = mono_ms();
        bus_record_free(r);
    }
    *secs = got ? (double)(mono_us() - t0) / 1e6 : 0;
    bus_consumer_free(c);
    return got;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int bench_fsync(const char *dir)
{
    char path[4096], block[4096];
    double us[200];
    snprintf(path, sizeof path, "%s/fsync-probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    memset(block, 'x', sizeof block);
    for (int i = 0; i < 200; i++) {
        int64_t t0 = mono_us();
        if (pwrite(fd, block, sizeof block, (off_t)i * (off_t)sizeof block) != (ssize_t)sizeof block ||
            fdatasync(fd) != 0) {
            perror("write/fdatasync");
            close(fd);
            return 1;
        }
        us[i] = (double)(mono_us() - t0);
    }
    close(fd);
    unlink(path);
    double m = median(us, 200);
    printf("disk: 4 KB write + fdatasync median %.0f us (%.0f syncs/s) in %s\n", m, 1e6 / m, dir);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "fsync") == 0)
        return bench_fsync(argv[2]);
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: bus URI [N] [RUNS]\n       bus fsync DIR\n");
        return 64;
    }
    const char *uri = argv[1];
    long n = argc > 2 ? atol(argv[2]) : 20000;
    int runs = argc > 3 ? atoi(argv[3]) : 5;
    if (n < 1 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "bus: N >= 1, 1 <= RUNS <= %d\n", MAX_RUNS);
        return 64;
    }
    char err[256];
    struct bus *b = bus_open(uri, NULL, err, sizeof err);
    if (!b) {
        fprintf(stderr, "bus_open %s: %s\n", uri, err);
        return 1;
    }
    long run_id = (long)now_ms();
    printf("bus %s (%s): %ld records of %d bytes per shape, median of %d runs\n", uri, bus_backend(b),
           n, RECORD_SIZE, runs);
    int rc = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0] && rc == 0; s++) {
        double prod[MAX_RUNS], cons[MAX_RUNS];
        long count = 0;
        for (int r = 0; r < runs; r++) {
            char topic[96], group[128];
            double ps, cs;
            snprintf(topic, sizeof topic, "bench-%ld-%zu-%d", run_id, s, r);
            snprintf(group, sizeof group, "%s-g", topic);
            count = run_produce(b, topic, &shapes[s], n, &ps);
            if (count <= 0) {
                rc = 1;
                break;
            }
            long got = run_consume(b, topic, group, count, &cs);
            if (got != count) {
                fprintf(stderr, "consumed %ld of %ld\n", got, count);
                rc = 1;
                break;
            }
            prod[r] = (double)count / ps;
            cons[r] = cs > 0 ? (double)count / cs : 0;
        }
        if (rc)
            break;
        double pm = median(prod, runs), cm = median(cons, runs);
        printf("  %-28s produce %9.0f rec/s %7.1f MB/s   consume %9.0f rec/s %7.1f MB/s  (%ld rec/run)\n",
               shapes[s].name, pm, pm * RECORD_SIZE / 1e6, cm, cm * RECORD_SIZE / 1e6, count);
    }
    bus_close(b);
    return rc;
}
