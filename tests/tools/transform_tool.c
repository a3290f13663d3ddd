/* transform_tool — runs the transform core (no bus) over .eml files and
 * prints one JSON line per file: the golden tests and bench/transform.sh.
 *
 *   transform_tool --store DIR [-c FILE] [--key kid:secret] [--id ID]
 *                  [--received-ms MS] [--mime-out FILE] [--repeat N] FILE...
 *
 * --repeat N runs every file N times and prints one summary line instead
 * (msgs/s, MB/s of MIME input, peak RSS from /proc/self/status VmHWM). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

static void usage(void)
{
    fprintf(stderr, "usage: transform_tool --store DIR [-c FILE] [--key kid:secret] [--id ID] "
                    "[--received-ms MS] [--mime-out FILE] [--repeat N] FILE...\n");
}

int main(int argc, char **argv)
{
    const char *cfg_path = NULL, *store_dir = NULL, *key = "tool:transform-tool-key-0123456789";
    const char *id = NULL, *mime_out = NULL;
    int64_t received_ms = 1795000000000LL;   /* 2026-11-18: keys are reproducible */
    long repeat = 0;
    int i = 1;
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
            struct inbound_info in = { idbuf, "device@example.com", received_ms };
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
