/* config — the INI parser and the key tables of the whole binary.
 *
 * Input: a config file (written to the private directory; config_load()
 * reads a path).  It is loaded against every table the mailfleet binary
 * declares; a file that loads is then read through every getter, the
 * receipt rules are built from it (ingest) and transform's settings are
 * derived from it, as the workers do at start.
 *
 * Checked: a rejected file has an error text and no config; in a loaded
 * one every value of a typed key parses as its type (validated at load:
 * getters never see a bad value), and named sections are listed once.
 *
 * A secret given as <key>_file is read from that path: inputs naming a
 * device, /proc or /sys are skipped (reading /dev/zero is not a bug of
 * the parser, only of the test). */
#include "fuzz.h"

#include "common_config.h"
#include "config.h"
#include "timeutil.h"
#include "worker.h"
#include "admin.h"
#include "feedback/feedback.h"
#include "ingest/rules.h"
#include "ingest/users.h"
#include "links/links.h"
#include "monitor/monitor.h"
#include "send/send.h"
#include "transform/transform_worker.h"

extern const struct worker_def ingest_worker;

/* The worker objects linked for their tables refer to these, which the
 * binary's main file defines; nothing here starts a worker or a verb. */
void worker_started(struct worker_env *env)
{
    __builtin_trap();
}

struct config *mailfleet_load_config(int argc, char **argv)
{
    __builtin_trap();
}

static const struct config_key *fuzz_tables[32];

/* The same tables as workers/mailfleet.c's all_tables(). */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const struct worker_def *const workers[] = {
        &feedback_worker, &monitor_worker, &ingest_worker, &transform_worker, &links_worker, &send_worker,
    };
    static const struct admin_verb *const verbs[] = {
        &alarms_verb, &suppression_verb, &retention_verb, &users_verb, &dlq_verb, &links_verb, &send_admin_verb,
    };
    size_t n = 0;
    fuzz_init();
    fuzz_tables[n++] = common_config_keys;
    for (size_t i = 0; i < sizeof(workers) / sizeof(workers[0]); i++)
        if (workers[i]->keys)
            fuzz_tables[n++] = workers[i]->keys;
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (verbs[i]->keys)
            fuzz_tables[n++] = verbs[i]->keys;
    fuzz_tables[n] = NULL;
    return 0;
}

/* One key read through its getter; its value must parse as its type. */
static void read_key(const struct config *c, const char *section, const struct config_key *k)
{
    const char *v = config_str(c, section, k->key);
    bool b;
    char **list;
    switch (k->type) {
    case CONFIG_INT:
        config_int(c, section, k->key);
        break;
    case CONFIG_BOOL:
        FUZZ_CHECK(!v || config_parse_bool(v, &b) == 0);
        config_bool(c, section, k->key);
        break;
    case CONFIG_SIZE:
        FUZZ_CHECK(!v || config_parse_size(v) >= 0);
        config_size(c, section, k->key);
        break;
    case CONFIG_DURATION:
        FUZZ_CHECK(!v || duration_parse_ms(v) >= 0);
        config_duration_ms(c, section, k->key);
        break;
    case CONFIG_SECRET:
        free(config_secret(c, section, k->key));
        break;
    case CONFIG_LIST: {
        size_t n = config_list(c, section, k->key, &list);
        config_list_free(list, n);
        break;
    }
    case CONFIG_STR:
        break;
    }
    FUZZ_CHECK(config_isset(c, section, k->key) == (v != NULL));
}

static void read_all(const struct config *c)
{
    for (size_t t = 0; fuzz_tables[t]; t++) {
        for (const struct config_key *k = fuzz_tables[t]; k->section; k++) {
            const char *star = strstr(k->section, ".*");
            if (strcmp(k->key, "*") == 0) {
                const char **kv;
                size_t n = config_section_keys(c, k->section, &kv);
                for (size_t i = 0; i < 2 * n; i++)
                    FUZZ_CHECK(kv[i] != NULL);
                free(kv);
            } else if (star) {
                char prefix[64];
                snprintf(prefix, sizeof(prefix), "%.*s", (int)(star - k->section), k->section);
                const char **secs;
                size_t n = config_sections(c, prefix, &secs);
                for (size_t i = 0; i < n; i++) {
                    for (size_t j = 0; j < i; j++)
                        FUZZ_CHECK(strcmp(secs[i], secs[j]) != 0);
                    read_key(c, secs[i], k);
                }
                free(secs);
            } else {
                read_key(c, k->section, k);
            }
        }
    }
}

/* What ingest and transform derive from a loaded config at start. */
static void derive(const struct config *c)
{
    char err[256];
    rules_free(rules_from_config(c, err, sizeof(err)));
    struct transform_settings_owned so;
    transform_settings_load(c, &so);
    transform_rule_policies_check(&so, err, sizeof(err));
    transform_settings_free(&so);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memmem(data, size, "dev/", 4) || memmem(data, size, "proc/", 5) || memmem(data, size, "sys/", 4))
        return 0;
    char path[512], err[512] = "";
    fuzz_write_file("mailfleet.ini", data, size, path, sizeof(path));
    struct config *c = config_load(path, fuzz_tables, err, sizeof(err));
    if (!c) {
        FUZZ_CHECK(err[0] != '\0');
        return 0;
    }
    read_all(c);
    derive(c);
    config_free(c);
    return 0;
}
