/* suppression_admin — `mailfleet suppression ...`: the list as the topic holds
 * it (read from the start, last write per key wins), and changes written as
 * records, so every send worker's copy sees them.
 *
 *   list [--reason R] [--page-size N] [--next-token T]
 *   get ADDR | add ADDR --reason R [--list L] | remove ADDR [--list L]
 *   export [--format json|csv] | import FILE (lines "address[,reason]") */
#include "feedback.h"
#include "bus.h"
#include "common_config.h"
#include "strbuf.h"
#include "suppression.h"
#include "timeutil.h"
#include "tokens.h"
#include "topics.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *opt(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc - 1; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return NULL;
}

/* Positional argument n (after the subcommand), skipping --opt value pairs. */
static const char *arg(int argc, char **argv, int n)
{
    int k = 0;
    for (int i = 2; i < argc; i++) {
        if (strncmp(argv[i], "-", 1) == 0) {
            i++;
            continue;
        }
        if (k++ == n)
            return argv[i];
    }
    return NULL;
}

/* Applies one record in topic order: last write per key wins, a tombstone
 * deletes. */
static int apply_record(void *opaque, const struct bus_record *r)
{
    char *key = xstrndup(r->key ? r->key : "", r->key_len), err[256];
    json_t *v = r->value ? suppression_record_parse(r->value, r->value_len, err, sizeof(err)) : NULL;
    if (v)
        json_object_set_new(opaque, key, v);
    else if (r->value)
        fprintf(stderr, "mailfleet suppression: record %s skipped: %s\n", key, err);
    else
        json_object_del(opaque, key);
    free(key);
    return 0;
}

/* The current list: an object key -> record, built from the topic. */
static json_t *load_list(struct bus *b, char *err, size_t errlen)
{
    json_t *all = json_object();
    if (bus_scan(b, TOPIC_SUPPRESSION, apply_record, all, err, errlen) < 0) {
        json_decref(all);
        return NULL;
    }
    return all;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted keys of the list. */
static const char **sorted_keys(json_t *all, size_t *n)
{
    const char **k = xcalloc(json_object_size(all) + 1, sizeof(char *));
    const char *key;
    json_t *v;
    size_t i = 0;
    json_object_foreach(all, key, v)
        k[i++] = key;
    qsort(k, i, sizeof(char *), cmp_str);
    *n = i;
    return k;
}

static void csv_field(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        if (*s == '"')
            putchar('"');
        putchar(*s);
    }
    putchar('"');
}

static int cmd_list(json_t *all, int argc, char **argv, int export_mode)
{
    const char *reason = opt(argc, argv, "--reason"), *nt = opt(argc, argv, "--next-token");
    const char *fmt = opt(argc, argv, "--format");
    long size = opt(argc, argv, "--page-size") ? strtol(opt(argc, argv, "--page-size"), NULL, 10) : 100;
    if (export_mode)
        size = -1;
    else if (size < 1 || size > 1000) {
        fprintf(stderr, "mailfleet suppression list: --page-size must be 1..1000\n");
        return 2;
    }
    char *after = NULL;
    if (nt) {
        unsigned char *raw;
        size_t rl;
        if (b64url_decode(nt, &raw, &rl) != 0) {
            fprintf(stderr, "mailfleet suppression list: bad --next-token\n");
            return 2;
        }
        after = xstrndup((char *)raw, rl);
        free(raw);
    }
    size_t n, shown = 0;
    const char **keys = sorted_keys(all, &n);
    json_t *out = json_array();
    const char *last = NULL;
    int more = 0;
    for (size_t i = 0; i < n; i++) {
        if (after && strcmp(keys[i], after) <= 0)
            continue;
        json_t *v = json_object_get(all, keys[i]);
        const char *r = json_string_value(json_object_get(v, "reason"));
        if (reason && (!r || strcmp(r, reason) != 0))
            continue;
        if (size > 0 && shown == (size_t)size) {
            more = 1;
            break;
        }
        json_array_append(out, v);
        last = keys[i];
        shown++;
    }
    if (fmt && strcmp(fmt, "csv") == 0) {
        printf("emailAddress,reason,list,lastUpdateTime\n");
        size_t i;
        json_t *v;
        json_array_foreach(out, i, v) {
            csv_field(json_string_value(json_object_get(v, "emailAddress")));
            putchar(',');
            csv_field(json_string_value(json_object_get(v, "reason")));
            putchar(',');
            csv_field(json_string_value(json_object_get(v, "list")));
            putchar(',');
            csv_field(json_string_value(json_object_get(v, "lastUpdateTime")));
            putchar('\n');
        }
    } else {
        json_t *doc = json_pack("{s:O}", "SuppressedDestinationSummaries", out);
        if (more && last) {
            char *tok = b64url_encode(last, strlen(last));
            json_object_set_new(doc, "NextToken", json_string(tok));
            free(tok);
        }
        char *s = json_dumps(doc, JSON_INDENT(2));
        printf("%s\n", s);
        free(s);
        json_decref(doc);
    }
    json_decref(out);
    free(keys);
    free(after);
    return 0;
}

static int cmd_import(struct bus *b, const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        fprintf(stderr, "mailfleet suppression import: cannot open %s\n", path);
        return 1;
    }
    char line[1024], err[256];
    struct bus_record batch[500];
    char *keys[500], *vals[500];
    size_t n = 0, total = 0, bad = 0;
    int rc = 0;
    for (;;) {
        int eof = !fgets(line, sizeof(line), f);
        if (!eof) {
            line[strcspn(line, "\r\n")] = '\0';
            char *comma = strchr(line, ',');
            const char *reason = "MANUAL";
            if (comma) {
                *comma = '\0';
                reason = comma + 1;
            }
            char key[512];
            if (!line[0] || line[0] == '#')
                continue;
            if (suppression_key(line, NULL, key, sizeof(key)) != 0 || !suppression_reason_valid(reason)) {
                bad++;
                continue;
            }
            keys[n] = xstrdup(key);
            vals[n] = suppression_record(line, NULL, reason, now_ms(), "cli", NULL, NULL);
            batch[n] = (struct bus_record){ .topic = TOPIC_SUPPRESSION, .key = keys[n],
                                            .key_len = strlen(keys[n]), .value = vals[n],
                                            .value_len = strlen(vals[n]), .partition = -1 };
            n++;
        }
        if (n == 500 || (eof && n)) {
            if (bus_produce(b, batch, n, 60000, err, sizeof(err)) != 0) {
                fprintf(stderr, "mailfleet suppression import: %s\n", err);
                rc = 1;
            }
            total += n;
            for (size_t i = 0; i < n; i++) {
                free(keys[i]);
                free(vals[i]);
            }
            n = 0;
        }
        if (eof || rc)
            break;
    }
    if (f != stdin)
        fclose(f);
    printf("imported %zu, skipped %zu invalid lines\n", total, bad);
    return rc;
}

static int cmd_suppression(int argc, char **argv)
{
    char err[512];
    const char *sub = argc > 1 ? argv[1] : NULL;
    if (!sub || argv[1][0] == '-') {
        fprintf(stderr, "usage: mailfleet suppression list|get|add|remove|export|import ... -c FILE\n");
        return 2;
    }
    struct config *cfg = mailfleet_load_config(argc, argv);
    if (!cfg)
        return 2;
    struct bus_options bo = { .client_id = "mailfleet-suppression-cli" };
    struct bus *b = common_bus(cfg, &bo, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "mailfleet suppression: %s\n", err);
        config_free(cfg);
        return 1;
    }
    int rc = 0;
    const char *addr = arg(argc, argv, 0), *list = opt(argc, argv, "--list");
    if (strcmp(sub, "add") == 0 || strcmp(sub, "remove") == 0) {
        const char *reason = opt(argc, argv, "--reason");
        if (!addr || (sub[0] == 'a' && !reason)) {
            fprintf(stderr, "usage: mailfleet suppression add ADDR --reason R | remove ADDR\n");
            rc = 2;
        } else if ((sub[0] == 'a' ? suppression_publish(b, addr, list, reason, "cli", NULL, NULL, err, sizeof(err))
                                  : suppression_remove(b, addr, list, err, sizeof(err))) != 0) {
            fprintf(stderr, "mailfleet suppression %s: %s\n", sub, err);
            rc = 1;
        } else {
            printf("%s %s\n", sub[0] == 'a' ? "suppressed" : "removed", addr);
        }
    } else if (strcmp(sub, "import") == 0) {
        rc = addr ? cmd_import(b, addr) : 2;
    } else {
        json_t *all = load_list(b, err, sizeof(err));
        if (!all) {
            fprintf(stderr, "mailfleet suppression: %s\n", err);
            rc = 1;
        } else if (strcmp(sub, "get") == 0) {
            char key[512];
            json_t *v = addr && suppression_key(addr, list, key, sizeof(key)) == 0
                            ? json_object_get(all, key) : NULL;
            if (!v) {
                fprintf(stderr, "%s is not on the suppression list\n", addr ? addr : "(none)");
                rc = 1;
            } else {
                char *s = json_dumps(v, JSON_INDENT(2));
                printf("%s\n", s);
                free(s);
            }
        } else if (strcmp(sub, "list") == 0 || strcmp(sub, "export") == 0) {
            rc = cmd_list(all, argc, argv, sub[0] == 'e');
        } else {
            fprintf(stderr, "mailfleet suppression: unknown subcommand %s\n", sub);
            rc = 2;
        }
        json_decref(all);
    }
    bus_close(b);
    config_free(cfg);
    return rc;
}

const struct admin_verb suppression_verb = {
    "suppression", "list|get|add|remove|export|import the suppression list", NULL, cmd_suppression
};
