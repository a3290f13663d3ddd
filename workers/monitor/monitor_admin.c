/* monitor_admin — `mailfleet alarms` (latest state of each alarm as published
 * on mailfleet.alarms, the same records an SRE dashboard reads) and
 * `mailfleet retention` (the S3 lifecycle rule equal to file-store retention). */
#include "monitor.h"
#include "bus.h"
#include "common_config.h"
#include "jsonx.h"
#include "log.h"
#include "strbuf.h"
#include "topics.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Last record per AlarmName (the topic is keyed by it), in first-seen order. */
static int keep_latest(void *opaque, const struct bus_record *r)
{
    char err[256];
    json_t *o = r->value ? jsonx_record_parse(r->value, r->value_len, SCHEMA_ALARM, err, sizeof(err)) : NULL;
    const char *name = NULL;
    if (r->value && (!o || jsonx_want_str(o, "AlarmName", 1, &name, err, sizeof(err)) != 0))
        fprintf(stderr, "mailfleet alarms: record at offset %lld skipped: %s\n", (long long)r->offset, err);
    if (name)
        json_object_set(opaque, name, o);
    json_decref(o);
    return 0;
}

static int cmd_alarms(int argc, char **argv)
{
    char err[512];
    int as_json = 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--json") == 0)
            as_json = 1;
    struct config *cfg = mailfleet_load_config(argc, argv);
    if (!cfg)
        return 2;
    struct bus_options bo = { .client_id = "mailfleet-alarms-cli" };
    struct bus *b = common_bus(cfg, &bo, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "mailfleet alarms: %s\n", err);
        config_free(cfg);
        return 1;
    }
    json_t *latest = json_object();
    long n = bus_scan(b, TOPIC_ALARMS, keep_latest, latest, err, sizeof(err));
    if (n < 0)
        fprintf(stderr, "mailfleet alarms: %s\n", err);
    const char *name;
    json_t *rec;
    if (as_json) {
        json_t *arr = json_array();
        json_object_foreach(latest, name, rec)
            json_array_append(arr, rec);
        char *s = json_dumps(arr, JSON_INDENT(2));
        printf("%s\n", s);
        free(s);
        json_decref(arr);
    } else {
        printf("%-28s %-18s %-25s %s\n", "ALARM", "STATE", "SINCE", "REASON");
        json_object_foreach(latest, name, rec)
            printf("%-28s %-18s %-25s %s\n", name,
                   json_string_value(json_object_get(rec, "NewStateValue")),
                   json_string_value(json_object_get(rec, "StateChangeTime")),
                   json_string_value(json_object_get(rec, "NewStateReason")));
        if (json_object_size(latest) == 0)
            printf("(no alarm has changed state yet)\n");
    }
    json_decref(latest);
    bus_close(b);
    config_free(cfg);
    return n < 0 ? 1 : 0;
}

/* Prints the lifecycle configuration (PutBucketLifecycleConfiguration JSON)
 * that expires incoming mail and attachments after the retention. */
static int cmd_retention(int argc, char **argv)
{
    struct config *cfg = mailfleet_load_config(argc, argv);
    if (!cfg)
        return 2;
    int64_t days = config_duration_ms(cfg, "monitor", "retention") / 86400000;
    if (days < 1)
        days = 1;
    json_t *rules = json_array();
    const char *keys[] = { "store_incoming", "store_attachments" };
    for (int i = 0; i < 2; i++) {
        const char *uri = config_str(cfg, "mailfleet", keys[i]);
        char prefix[512] = "";
        if (uri && strncmp(uri, "s3://", 5) == 0) {
            const char *slash = strchr(uri + 5, '/');
            if (slash) {
                snprintf(prefix, sizeof(prefix), "%s", slash + 1);
                prefix[strcspn(prefix, "?")] = '\0';
            }
        }
        json_array_append_new(rules, json_pack("{s:s, s:s, s:{s:s}, s:{s:I}, s:{s:i}}",
            "ID", i == 0 ? "mailfleet-incoming-retention" : "mailfleet-attachments-retention",
            "Status", "Enabled", "Filter", "Prefix", prefix, "Expiration", "Days", (json_int_t)days,
            "AbortIncompleteMultipartUpload", "DaysAfterInitiation", 1));
    }
    json_t *doc = json_pack("{s:o}", "Rules", rules);
    char *s = json_dumps(doc, JSON_INDENT(2));
    printf("%s\n", s);
    free(s);
    json_decref(doc);
    config_free(cfg);
    return 0;
}

const struct admin_verb alarms_verb = { "alarms", "show each alarm's latest state [--json]", NULL, cmd_alarms };
const struct admin_verb retention_verb = { "retention", "print the S3 lifecycle rule for the retention",
                                           NULL, cmd_retention };
