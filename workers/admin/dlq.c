/* dlq — `mailfleet dlq list|replay|ack [--topic mailfleet.inbound.dlq]`.
 *
 * Fleet-wide: transform dead-letters to mailfleet.inbound.dlq and send to
 * mailfleet.outbound.dlq, so the verb belongs to no worker.
 *
 * A DLQ record is the original record plus mf.error.* / mf.source.* /
 * mf.attempts headers (schemas/README.md).  "Pending" means past the
 * committed offset of the operator group "dlq-operator" (the monitor's DLQ
 * depth counts the same).  replay re-publishes each pending value to its
 * mf.source.topic with the same key and the original headers minus mf.*,
 * then advances dlq-operator past it, one record at a time so an
 * interrupted replay resumes where it stopped.  Works on both bus backends
 * (group-less reads + explicit group offsets). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "bus.h"
#include "common_config.h"
#include "config.h"
#include "strbuf.h"
#include "topics.h"

static int dlq_usage(void)
{
    fprintf(stderr, "usage: mailfleet dlq list|replay|ack [--topic " TOPIC_INBOUND_DLQ "|" TOPIC_OUTBOUND_DLQ
                    "] [-c FILE]\n");
    return 2;
}

static void print_record(const struct bus_record *r)
{
    struct strbuf b;
    strbuf_init(&b);
    strbuf_appendf(&b, "{\"partition\":%d,\"offset\":%lld,\"key\":", r->partition, (long long)r->offset);
    char *key = xstrndup(r->key ? r->key : "", r->key ? r->key_len : 0);
    strbuf_append_json_string(&b, key);
    free(key);
    strbuf_appendf(&b, ",\"value_bytes\":%zu,\"headers\":{", r->value_len);
    for (size_t i = 0; i < r->n_headers; i++) {
        char *v = xstrndup(r->headers[i].value ? r->headers[i].value : "", r->headers[i].value_len);
        strbuf_append(&b, i ? "," : "");
        strbuf_append_json_string(&b, r->headers[i].name);
        strbuf_append(&b, ":");
        strbuf_append_json_string(&b, v);
        free(v);
    }
    strbuf_append(&b, "}}\n");
    fwrite(b.data, 1, b.len, stdout);
    strbuf_free(&b);
}

static int replay_one(struct bus *b, const char *topic, const struct bus_record *r)
{
    char err[256];
    char *src = bus_record_header_str(r, "mf.source.topic");
    int rc = -1;
    if (!src || !src[0] || strstr(src, ".dlq")) {
        fprintf(stderr, "mailfleet dlq: record %lld has no usable mf.source.topic; left in place\n",
                (long long)r->offset);
        goto out;
    }
    struct bus_header hs[32];
    size_t nh = 0;
    for (size_t i = 0; i < r->n_headers && nh < 32; i++)
        if (strncmp(r->headers[i].name, "mf.", 3) != 0)
            hs[nh++] = r->headers[i];
    struct bus_record out = { .topic = src, .key = r->key, .key_len = r->key_len, .value = r->value,
                              .value_len = r->value_len, .headers = hs, .n_headers = nh,
                              .partition = -1 };
    if (bus_produce(b, &out, 1, 10000, err, sizeof(err)) != 0) {
        fprintf(stderr, "mailfleet dlq: replay to %s: %s\n", src, err);
        goto out;
    }
    if (bus_group_set_offset(b, GROUP_DLQ_OPERATOR, topic, r->partition, r->offset + 1, err, sizeof(err)) != 0) {
        fprintf(stderr, "mailfleet dlq: advancing %s: %s\n", GROUP_DLQ_OPERATOR, err);
        goto out;
    }
    printf("replayed %s:%d:%lld -> %s\n", topic, r->partition, (long long)r->offset, src);
    rc = 0;
out:
    free(src);
    return rc;
}

static int dlq_main(int argc, char **argv)
{
    if (argc < 2)
        return dlq_usage();
    int replay = strcmp(argv[1], "replay") == 0, ack = strcmp(argv[1], "ack") == 0;
    if (!replay && !ack && strcmp(argv[1], "list") != 0)
        return dlq_usage();
    const char *topic = TOPIC_INBOUND_DLQ;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc)
            topic = argv[++i];
        else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            i++;
        else
            return dlq_usage();
    }
    struct config *cfg = mailfleet_load_config(argc, argv);
    if (!cfg)
        return 2;
    char err[256];
    struct bus_options bo = { .client_id = "mailfleet-dlq" };
    struct bus *b = common_bus(cfg, &bo, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "mailfleet dlq: %s\n", err);
        config_free(cfg);
        return 1;
    }
    struct bus_partition_stats st[64];
    int np = bus_topic_stats(b, topic, GROUP_DLQ_OPERATOR, st, 64, err, sizeof(err));
    int rc = 0;
    if (np < 0)
        np = 0;   /* no such topic yet: nothing dead-lettered */
    for (int p = 0; ack && p < np && rc == 0; p++) {
        /* ack: the operator has looked; the depth (and its alarm) goes to 0 */
        int64_t from = st[p].committed >= 0 ? st[p].committed : st[p].low;
        if (st[p].high > from) {
            rc = bus_group_set_offset(b, GROUP_DLQ_OPERATOR, topic, st[p].partition, st[p].high, err, sizeof(err)) ? 1 : 0;
            if (rc)
                fprintf(stderr, "mailfleet dlq ack: %s\n", err);
            else
                printf("acknowledged %lld records of %s:%d\n", (long long)(st[p].high - from), topic,
                       st[p].partition);
        }
    }
    for (int p = 0; !ack && p < np && rc == 0; p++) {
        int64_t from = st[p].committed >= 0 ? st[p].committed : st[p].low;
        if (from < st[p].low)
            from = st[p].low;
        for (int64_t off = from; off < st[p].high; off++) {
            struct bus_record *r = NULL;
            int got = bus_read_at(b, topic, st[p].partition, off, &r, 5000);
            if (got < 0) {
                fprintf(stderr, "mailfleet dlq: read %lld failed\n", (long long)off);
                rc = 1;
                break;
            }
            if (got == 0)
                continue;
            if (replay)
                rc = replay_one(b, topic, r) == 0 ? 0 : 1;
            else
                print_record(r);
            bus_record_free(r);
            if (rc)
                break;
        }
        /* Past the end too: on Kafka the DLQ is written in transactions, and
         * the commit marker after the last record still counts as depth. */
        if (replay && rc == 0 && st[p].high > from &&
            bus_group_set_offset(b, GROUP_DLQ_OPERATOR, topic, st[p].partition, st[p].high, err,
                                 sizeof(err)) != 0) {
            fprintf(stderr, "mailfleet dlq replay: %s\n", err);
            rc = 1;
        }
    }
    bus_close(b);
    config_free(cfg);
    return rc;
}

const struct admin_verb dlq_verb = { "dlq", "list|replay|ack [--topic T]: dead-lettered records", NULL,
                                     dlq_main };
