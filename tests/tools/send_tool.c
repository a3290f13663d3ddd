/* send_tool — feeds and reads the send worker's topics in integration tests
 * and the bench, through the bus API.
 *
 *   send_tool produce URI TOPIC       stdin lines "KEY<TAB>VALUE" -> records
 *                                     (VALUE "-" = tombstone); 100 per
 *                                     bus_produce; prints "produced N"
 *   send_tool dump URI TOPIC          every stored record as a JSON line
 *                                     {partition, offset, key, value, headers}
 *   send_tool committed URI TOPIC GROUP   sum over partitions of the group's
 *                                     committed offsets (0 when none)
 *
 * Values are single-line JSON in these tests, so a line is a record. */
#include "bus.h"
#include "strbuf.h"
#include "topics.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 100

static int produce(struct bus *b, const char *topic)
{
    struct bus_record recs[BATCH];
    char *lines[BATCH];
    size_t n = 0, total = 0, cap = 0;
    char *line = NULL, err[256];
    ssize_t len;
    for (;;) {
        len = getline(&line, &cap, stdin);
        if (len > 0) {
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                line[--len] = '\0';
            char *tab = strchr(line, '\t');
            if (!tab) {
                fprintf(stderr, "send_tool: line without a tab\n");
                return 1;
            }
            lines[n] = xmalloc((size_t)len + 1);
            memcpy(lines[n], line, (size_t)len + 1);
            lines[n][tab - line] = '\0';
            char *key = lines[n], *val = lines[n] + (tab - line) + 1;
            int tomb = strcmp(val, "-") == 0;
            recs[n] = (struct bus_record){ .topic = topic, .key = key, .key_len = strlen(key),
                                           .value = tomb ? NULL : val, .value_len = tomb ? 0 : strlen(val),
                                           .partition = -1 };
            n++;
        }
        if ((len < 0 && n > 0) || n == BATCH) {
            if (bus_produce(b, recs, n, 30000, err, sizeof(err)) != 0) {
                fprintf(stderr, "send_tool: produce: %s\n", err);
                return 1;
            }
            for (size_t i = 0; i < n; i++)
                free(lines[i]);
            total += n;
            n = 0;
        }
        if (len < 0)
            break;
    }
    free(line);
    printf("produced %zu\n", total);
    return 0;
}

static int dump(struct bus *b, const char *topic)
{
    struct bus_partition_stats st[64];
    char err[256];
    int np = bus_topic_stats(b, topic, NULL, st, 64, err, sizeof(err));
    if (np < 0) {
        fprintf(stderr, "send_tool: stats: %s\n", err);
        return 1;
    }
    for (int p = 0; p < np; p++) {
        for (int64_t off = st[p].low; off < st[p].high; off++) {
            struct bus_record *r = NULL;
            int rc = bus_read_at(b, topic, st[p].partition, off, &r, 5000);
            if (rc < 0) {   /* an error, never a record that is not there */
                fprintf(stderr, "send_tool: offset %lld: read failed (%d)\n", (long long)off, rc);
                return 1;
            }
            if (rc == 0)
                continue;
            json_t *o = json_object();
            json_object_set_new(o, "partition", json_integer(r->partition));
            json_object_set_new(o, "offset", json_integer(r->offset));
            json_object_set_new(o, "key", r->key ? json_stringn(r->key, r->key_len) : json_null());
            json_object_set_new(o, "value", r->value ? json_stringn(r->value, r->value_len) : json_null());
            json_t *h = json_object();
            for (size_t i = 0; i < r->n_headers; i++)
                json_object_set_new(h, r->headers[i].name,
                                    json_stringn(r->headers[i].value ? r->headers[i].value : "",
                                                 r->headers[i].value ? r->headers[i].value_len : 0));
            json_object_set_new(o, "headers", h);
            char *s = json_dumps(o, JSON_COMPACT);
            puts(s ? s : "{}");
            free(s);
            json_decref(o);
            bus_record_free(r);
        }
    }
    return 0;
}

static int committed(struct bus *b, const char *topic, const char *group)
{
    struct bus_partition_stats st[64];
    char err[256];
    int np = bus_topic_stats(b, topic, group, st, 64, err, sizeof(err));
    if (np < 0) {
        fprintf(stderr, "send_tool: stats: %s\n", err);
        return 1;
    }
    long long sum = 0;
    for (int p = 0; p < np; p++)
        sum += st[p].committed > 0 ? st[p].committed : 0;
    printf("%lld\n", sum);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: send_tool produce|dump URI TOPIC\n");
        return 2;
    }
    char err[256];
    struct bus_options opt = { .client_id = "send_tool" };
    const char *compacted[] = { TOPIC_SUPPRESSION, NULL };
    opt.compacted_topics = compacted;
    struct bus *b = bus_open(argv[2], &opt, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "send_tool: %s\n", err);
        return 1;
    }
    int rc = strcmp(argv[1], "produce") == 0 ? produce(b, argv[3])
             : strcmp(argv[1], "dump") == 0  ? dump(b, argv[3])
             : strcmp(argv[1], "committed") == 0 && argc >= 5 ? committed(b, argv[3], argv[4])
                                             : 2;
    bus_close(b);
    return rc;
}
