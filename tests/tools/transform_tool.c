/* transform_tool — runs the transform core (no bus) over .eml files and
 * prints one JSON line per file: the golden tests and bench/transform.sh.
 *
 *   transform_tool --store DIR [-c FILE] [--key kid:secret] [--id ID]
 *                  [--received-ms MS] [--mime-out FILE] [--repeat N] FILE...
 *
 * --repeat N runs every file N times and prints one summary line instead
 * (msgs/s, MB/s of MIME input, peak RSS from /proc/self/status VmHWM).
 *
 * Bus helpers for the integration tests (records with JSON values):
 *   transform_tool publish URI TOPIC KEY     value from stdin
 *   transform_tool read URI TOPIC            one JSON line per record (group-less):
 *                                            {"partition","offset","key","value","headers"}
 *   transform_tool consume URI TOPIC GROUP IDLE_MS   the same through a consumer group */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "process.h"
#include "bus.h"
#include "common_config.h"
#include "config.h"
#include "log.h"
#include "store.h"
#include "strbuf.h"
#include "timeutil.h"
#include "tokens.h"
#include "transform/transform.h"
#include "transform/transform_worker.h"


static long vm_hwm_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

static int cmd_publish(const char *uri, const char *topic, const char *key)
{
    char err[256];
    struct strbuf v;
    strbuf_init(&v);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
        strbuf_append_n(&v, buf, n);
    struct bus *b = bus_open(uri, NULL, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "bus_open: %s\n", err);
        return 1;
    }
    struct bus_record r = { .topic = topic, .key = key, .key_len = strlen(key), .value = v.data ? v.data : "",
                            .value_len = v.len, .partition = -1 };
    int rc = bus_produce(b, &r, 1, 10000, err, sizeof(err));
    if (rc)
        fprintf(stderr, "produce: %s\n", err);
    bus_close(b);
    strbuf_free(&v);
    return rc ? 1 : 0;
}

static void print_record(const struct bus_record *r)
{
    struct strbuf o;
    strbuf_init(&o);
    char *k = xstrndup(r->key ? r->key : "", r->key ? r->key_len : 0);
    char *v = r->value ? xstrndup(r->value, r->value_len) : NULL;
    strbuf_appendf(&o, "{\"partition\":%d,\"offset\":%lld,\"key\":", r->partition,
                   (long long)r->offset);
    strbuf_append_json_string(&o, k);
    strbuf_append(&o, ",\"value\":");
    if (v)
        strbuf_append_json_string(&o, v);
    else
        strbuf_append(&o, "null");
    strbuf_append(&o, ",\"headers\":{");
    for (size_t i = 0; i < r->n_headers; i++) {
        char *hv = xstrndup(r->headers[i].value ? r->headers[i].value : "", r->headers[i].value_len);
        strbuf_append(&o, i ? "," : "");
        strbuf_append_json_string(&o, r->headers[i].name);
        strbuf_append(&o, ":");
        strbuf_append_json_string(&o, hv);
        free(hv);
    }
    strbuf_append(&o, "}}\n");
    fwrite(o.data, 1, o.len, stdout);
    strbuf_free(&o);
    free(k);
    free(v);
}

static int print_cb(void *opaque, const struct bus_record *r)
{
    print_record(r);
    return 0;
}

static int cmd_read(const char *uri, const char *topic)
{
    char err[256];
    struct bus *b = bus_open(uri, NULL, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "bus_open: %s\n", err);
        return 1;
    }
    long n = bus_scan(b, topic, print_cb, NULL, err, sizeof(err));
    if (n == -ENOENT)
        n = 0;   /* no such topic yet: nothing in it */
    if (n < 0)
        fprintf(stderr, "read %s: %s\n", topic, err);
    bus_close(b);
    return n < 0 ? 1 : 0;
}

/* Everything in the topic through a fresh consumer group (read_committed on
 * Kafka), until idle_ms pass without a record. */
static int cmd_consume(const char *uri, const char *topic, const char *group, int idle_ms)
{
    char err[256];
    struct bus *b = bus_open(uri, NULL, err, sizeof(err));
    const char *topics[] = { topic, NULL };
    struct bus_consumer *c = b ? bus_consumer_new(b, group, topics, 1, err, sizeof(err)) : NULL;
    if (!c) {
        fprintf(stderr, "consume: %s\n", err);
        bus_close(b);
        return 1;
    }
    /* The first poll also waits out the group join (seconds on Kafka). */
    int wait_ms = idle_ms > 8000 ? idle_ms : 8000;
    for (;;) {
        struct bus_record *r;
        int got = bus_consumer_poll(c, &r, wait_ms);
        wait_ms = idle_ms;
        if (got <= 0)
            break;
        print_record(r);
        bus_record_free(r);
    }
    bus_consumer_free(c);
    bus_close(b);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: transform_tool --store DIR [-c FILE] [--key kid:secret] [--id ID] "
                    "[--received-ms MS] [--mime-out FILE] [--repeat N] FILE...\n");
}

static int tool_main(int argc, char **argv)
{
    const char *cfg_path = NULL, *store_dir = NULL, *key = "tool:transform-tool-key-0123456789";
    const char *id = NULL, *mime_out = NULL;
    int64_t received_ms = 1795000000000LL;   /* 2026-11-18: keys are reproducible */
    long repeat = 0;
    int i = 1;
    if (argc == 5 && strcmp(argv[1], "publish") == 0)
        return cmd_publish(argv[2], argv[3], argv[4]);
    if (argc == 4 && strcmp(argv[1], "read") == 0)
        return cmd_read(argv[2], argv[3]);
    if (argc == 6 && strcmp(argv[1], "consume") == 0)
        return cmd_consume(argv[2], argv[3], argv[4], atoi(argv[5]));
    for (; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            cfg_path = argv[++i];
        else if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
            store_dir = argv[++i];
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            key = argv[++i];
        else if (strcmp(argv[i], "--id") == 0 && i + 1 < argc)
            id = argv[++i];
        else if (strcmp(argv[i], "--received-ms") == 0 && i + 1 < argc)
            received_ms = strtoll(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--mime-out") == 0 && i + 1 < argc)
            mime_out = argv[++i];
        else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
            repeat = strtol(argv[++i], NULL, 10);
        else if (argv[i][0] == '-') {
            usage();
            return 2;
        } else
            break;
    }
    if (!store_dir || i >= argc) {
        usage();
        return 2;
    }
    char err[512];
    log_init("transform_tool", LOG_WARN);
    const struct config_key *tables[] = { common_config_keys, transform_config_keys, NULL };
    struct config *cfg = config_load(cfg_path, tables, err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "transform_tool: %s\n", err);
        return 2;
    }
    struct transform_settings_owned so;
    transform_settings_load(cfg, &so);
    char uri[4200];
    snprintf(uri, sizeof(uri), "file:%s", store_dir);
    struct store *st = store_open(uri, NULL, err, sizeof(err));
    const char *keys[] = { key };
    struct tokens *tok = st ? tokens_new(keys, 1, err, sizeof(err)) : NULL;
    struct transform *t = tok ? transform_new(&so.s, st, tok, err, sizeof(err)) : NULL;
    if (!t) {
        fprintf(stderr, "transform_tool: %s\n", err);
        return 2;
    }
    int rc = 0;
    uint64_t bytes = 0, msgs = 0;
    int64_t t0 = mono_us();
    for (long rep = 0; rep < (repeat > 0 ? repeat : 1); rep++) {
        for (int f = i; f < argc; f++) {
            char idbuf[64];
            if (id)
                snprintf(idbuf, sizeof(idbuf), "%s", id);
            else
                snprintf(idbuf, sizeof(idbuf), "msg-%03d", f - i + 1);
            /* as a rule with the defaults takes it: no allow-list, sender shown */
            struct inbound_info in = { idbuf, "device@example.com", received_ms, NULL, 1 };
            struct transform_result r;
            int x = transform_message(t, argv[f], &in, &r, err, sizeof(err));
            struct stat sb;
            if (stat(argv[f], &sb) == 0)
                bytes += (uint64_t)sb.st_size;
            msgs++;
            if (repeat <= 0) {
                struct strbuf b;
                strbuf_init(&b);
                strbuf_append(&b, "{\"file\":");
                strbuf_append_json_string(&b, argv[f]);
                strbuf_appendf(&b, ",\"rc\":%d,\"error\":", x);
                strbuf_append_json_string(&b, x ? err : "");
                strbuf_append(&b, ",\"result\":");
                transform_result_json(&r, &b);
                strbuf_append(&b, "}\n");
                fwrite(b.data, 1, b.len, stdout);
                strbuf_free(&b);
                if (mime_out && r.mime) {
                    FILE *o = fopen(mime_out, "wb");
                    if (o) {
                        fwrite(r.mime, 1, r.mime_len, o);
                        fclose(o);
                    }
                }
            }
            if (x)
                rc = 1;
            transform_result_free(&r);
        }
    }
    double secs = (double)(mono_us() - t0) / 1e6;
    if (repeat > 0)
        printf("{\"msgs\":%llu,\"bytes\":%llu,\"seconds\":%.4f,\"msgs_per_s\":%.1f,"
               "\"mb_per_s\":%.1f,\"vm_hwm_kb\":%ld}\n",
               (unsigned long long)msgs, (unsigned long long)bytes, secs, (double)msgs / secs,
               (double)bytes / 1e6 / secs, vm_hwm_kb());
    else
        fprintf(stderr, "vm_hwm_kb %ld\n", vm_hwm_kb());
    transform_free(t);
    tokens_free(tok);
    store_close(st);
    transform_settings_free(&so);
    config_free(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    process_init(0);   /* GMime, libcurl, OpenSSL before anything uses them */
    int rc = tool_main(argc, argv);
    process_shutdown();
    return rc;
}
