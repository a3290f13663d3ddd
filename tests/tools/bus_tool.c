/* bus_tool — drives the bus from outside a worker, for crash and
 * multi-process tests.
 *
 *   bus_tool produce URI TOPIC N [THREADS]   N records from THREADS threads (default 8),
 *                                            1-3 per bus_produce call; after each call
 *                                            returns 0 prints "ack KEY" per record
 *   bus_tool dump URI TOPIC                  every stored record, group-less (bus_read_at):
 *                                            "OFFSET KEY ok|BAD" (BAD = value does not
 *                                            match what produce derived from the key)
 *   bus_tool consume URI TOPIC GROUP SECONDS prints "ready", then "OFFSET KEY" per record
 *                                            once committed; exit 2 if the group is taken
 *
 * A record's value is derived from its key (length and bytes), so a torn or
 * mixed-up record shows up in dump without any side channel. */
#include "bus.h"
#include "timeutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VALUE_MAX 4200

static size_t value_for(const char *key, size_t klen, char *out)
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (size_t i = 0; i < klen; i++)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    size_t len = 64 + h % 4096;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)(key[i % klen] ^ (h >> (i % 24)));
    return len;
}

struct producer {
    struct bus *bus;
    const char *topic;
    long n;
    atomic_long *next;
    int failed;
};

static void *produce_thread(void *arg)
{
    struct producer *p = arg;
    char keys[3][64], values[3][VALUE_MAX], err[256];
    struct bus_record recs[3];
    unsigned seed = (unsigned)(uintptr_t)&recs;

    for (;;) {
        int want = 1 + (int)(rand_r(&seed) % 3), n = 0;
        for (; n < want; n++) {
            long i = atomic_fetch_add(p->next, 1);
            if (i >= p->n)
                break;
            int klen = snprintf(keys[n], sizeof keys[n], "p%d-%ld", (int)getpid(), i);
            size_t vlen = value_for(keys[n], (size_t)klen, values[n]);
            recs[n] = (struct bus_record){ .topic = p->topic, .key = keys[n], .key_len = (size_t)klen,
                                           .value = values[n], .value_len = vlen, .partition = -1 };
        }
        if (n == 0)
            return NULL;
        if (bus_produce(p->bus, recs, (size_t)n, 30000, err, sizeof err) != 0) {
            fprintf(stderr, "produce: %s\n", err);
            p->failed = 1;
            return NULL;
        }
        /* Only now is the record ours to promise. */
        for (int k = 0; k < n; k++)
            printf("ack %s\n", keys[k]);
    }
}

static int cmd_produce(struct bus *b, const char *topic, long n, int threads)
{
    atomic_long next = 0;
    pthread_t th[64];
    struct producer ps[64];
    if (threads < 1 || threads > 64)
        threads = 8;
    for (int i = 0; i < threads; i++) {
        ps[i] = (struct producer){ b, topic, n, &next, 0 };
        pthread_create(&th[i], NULL, produce_thread, &ps[i]);
    }
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        failed |= ps[i].failed;
    }
    return failed ? 1 : 0;
}

static int record_ok(const struct bus_record *r)
{
    char want[VALUE_MAX];
    if (!r->key || !r->value || r->key_len == 0)
        return 0;
    size_t len = value_for(r->key, r->key_len, want);
    return r->value_len == len && memcmp(r->value, want, len) == 0;
}

static int cmd_dump(struct bus *b, const char *topic)
{
    struct bus_partition_stats st[64];
    char err[256];
    int np = bus_topic_stats(b, topic, NULL, st, 64, err, sizeof err);
    if (np < 0) {
        fprintf(stderr, "stats: %s\n", err);
        return 1;
    }
    for (int p = 0; p < np; p++)
        for (int64_t off = st[p].low; off < st[p].high; off++) {
            struct bus_record *r;
            int rc = bus_read_at(b, topic, st[p].partition, off, &r, 0);
            if (rc < 0) {
                fprintf(stderr, "read %lld: %d\n", (long long)off, rc);
                return 1;
            }
            if (rc == 0)
                continue;
            printf("%lld %.*s %s\n", (long long)off, (int)r->key_len, r->key ? (const char *)r->key : "",
                   record_ok(r) ? "ok" : "BAD");
            bus_record_free(r);
        }
    return 0;
}

static int cmd_consume(struct bus *b, const char *topic, const char *group, int seconds)
{
    const char *topics[] = { topic, NULL };
    char err[256];
    struct bus_consumer *c = bus_consumer_new(b, group, topics, 1, err, sizeof err);
    if (!c) {
        fprintf(stderr, "consume: %s\n", err);
        return 2;
    }
    printf("ready\n");
    int64_t end = mono_ms() + (int64_t)seconds * 1000;
    int rc = 0;
    while (mono_ms() < end) {
        struct bus_record *r;
        int got = bus_consumer_poll(c, &r, 100);
        if (got < 0) {
            rc = 1;
            break;
        }
        if (got == 0)
            continue;
        /* Printed once committed, so a line means "done" to the test. */
        if (bus_consumer_commit(c, r) != 0)
            rc = 1;
        else
            printf("%lld %.*s\n", (long long)r->offset, (int)r->key_len,
                   r->key ? (const char *)r->key : "");
        bus_record_free(r);
    }
    bus_consumer_free(c);
    return rc;
}

static int usage(void)
{
    fprintf(stderr, "usage: bus_tool produce URI TOPIC N [THREADS]\n"
                    "       bus_tool dump URI TOPIC\n"
                    "       bus_tool consume URI TOPIC GROUP SECONDS\n");
    return 64;
}

int main(int argc, char **argv)
{
    char err[256];
    if (argc < 4)
        return usage();
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *cmd = argv[1];
    if (!((strcmp(cmd, "produce") == 0 && (argc == 5 || argc == 6)) ||
          (strcmp(cmd, "dump") == 0 && argc == 4) || (strcmp(cmd, "consume") == 0 && argc == 6)))
        return usage();
    struct bus *b = bus_open(argv[2], NULL, err, sizeof err);
    if (!b) {
        fprintf(stderr, "bus_open: %s\n", err);
        return 1;
    }
    int rc;
    if (strcmp(cmd, "produce") == 0)
        rc = cmd_produce(b, argv[3], atol(argv[4]), argc == 6 ? atoi(argv[5]) : 8);
    else if (strcmp(cmd, "dump") == 0)
        rc = cmd_dump(b, argv[3]);
    else
        rc = cmd_consume(b, argv[3], argv[4], atoi(argv[5]));
    bus_close(b);
    return rc;
}
