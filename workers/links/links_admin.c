/* links_admin — `mailfleet links revoke --message ID | --link TOKEN|URL
 * [--reason TEXT]` and `links unrevoke ...`: publish a revocation.v1 record
 * (or a tombstone) to the compacted mailfleet.revocations, keyed by the
 * target; every links process applies it from its copy within a poll. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "bus.h"
#include "common_config.h"
#include "config.h"
#include "ids.h"
#include "links.h"
#include "timeutil.h"
#include "topics.h"

static int links_usage(void)
{
    fprintf(stderr, "usage: mailfleet links revoke|unrevoke (--message INBOUND_ID | --link TOKEN_OR_URL) "
                    "[--reason TEXT] [-c FILE]\n");
    return 2;
}

static int links_main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "revoke") != 0 && strcmp(argv[1], "unrevoke") != 0))
        return links_usage();
    int undo = strcmp(argv[1], "unrevoke") == 0;
    const char *kind = NULL, *target = NULL, *reason = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--message") == 0 && i + 1 < argc) {
            kind = "message";
            target = argv[++i];
        } else if (strcmp(argv[i], "--link") == 0 && i + 1 < argc) {
            kind = "link";
            target = argv[++i];
        } else if (strcmp(argv[i], "--reason") == 0 && i + 1 < argc) {
            reason = argv[++i];
        } else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            i++;
        } else {
            return links_usage();
        }
    }
    if (!kind)
        return links_usage();
    if (strcmp(kind, "link") == 0) {
        /* A whole URL is fine: the token is what follows the last "/a/". */
        const char *a = strstr(target, "/a/");
        while (a && strstr(a + 1, "/a/"))
            a = strstr(a + 1, "/a/");
        if (a)
            target = a + 3;
        const char *dot = strchr(target, '.');
        if (!dot || dot == target || !dot[1] || strspn(target, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") != strlen(target)) {
            fprintf(stderr, "mailfleet links: not a link token\n");
            return 2;
        }
    } else if (!id_valid(target)) {
        fprintf(stderr, "mailfleet links: --message takes an inbound id (UUIDv7)\n");
        return 2;
    }
    struct config *cfg = mailfleet_load_config(argc, argv);
    if (!cfg)
        return 2;
    char err[256], ts[32];
    struct bus_options bo = { .client_id = "mailfleet-links-admin" };
    struct bus *b = common_bus(cfg, &bo, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "mailfleet links: %s\n", err);
        config_free(cfg);
        return 1;
    }
    char *v = NULL;
    if (!undo) {
        json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s}", "schema", SCHEMA_REVOCATION, "kind", kind,
                              "target", target, "revoked_at", rfc3339_ms(now_ms(), ts, sizeof(ts)),
                              "by", "mailfleet links revoke");
        if (reason)
            json_object_set_new(o, "reason", json_string(reason));
        v = json_dumps(o, JSON_COMPACT);
        json_decref(o);
    }
    struct bus_record r = { .topic = TOPIC_REVOCATIONS, .key = target, .key_len = strlen(target),
                            .value = v, .value_len = v ? strlen(v) : 0, .partition = -1 };
    int rc = bus_produce(b, &r, 1, 10000, err, sizeof(err));
    free(v);
    bus_close(b);
    config_free(cfg);
    if (rc != 0) {
        fprintf(stderr, "mailfleet links: %s\n", err);
        return 1;
    }
    printf("%s %s %s\n", undo ? "unrevoked" : "revoked", kind, target);
    return 0;
}

const struct admin_verb links_verb = { "links", "revoke|unrevoke --message ID | --link TOKEN", NULL,
                                       links_main };
