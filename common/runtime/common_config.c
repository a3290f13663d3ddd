/* common_config — the keys every worker shares: where the bus and stores are,
 * logging, the all-in-one HTTP port, librdkafka properties, S3 credentials. */
#include "common_config.h"
#include "strbuf.h"
#include "tokens.h"
#include "store.h"
#include "bus.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const struct config_key common_config_keys[] = {
    { "mailfleet", "bus", CONFIG_STR, "local:var/queue", "local:<dir> or kafka:<host:port,...>" },
    { "mailfleet", "instance_id", CONFIG_STR, NULL,
      "names this process in Kafka transactional ids (default <host>-<pid>); two live processes "
      "with one id fence each other" },
    { "mailfleet", "store_incoming", CONFIG_STR, "file:var/store/incoming",
      "raw mail store: file:<dir> or s3://bucket/prefix?endpoint=&region=&path_style=" },
    { "mailfleet", "store_attachments", CONFIG_STR, "file:var/store/attachments", "attachment store" },
    { "mailfleet", "state_dir", CONFIG_STR, "var/state", "LMDB caches (dedupe, markers, copies)" },
    { "mailfleet", "log_level", CONFIG_STR, "info", "debug, info, warn or error" },
    { "mailfleet", "http_listen", CONFIG_STR, "127.0.0.1:9100",
      "metrics/health/alarms for `mailfleet run` (all workers in one process)" },
    { "mailfleet", "public_listen", CONFIG_STR, "127.0.0.1:8025",
      "public HTTP (links /a/, one-click unsubscribe /u/, suppression API /v2/) under `mailfleet run`" },
    { "mailfleet", "public_base_url", CONFIG_STR, "http://127.0.0.1:8025",
      "how recipients reach the public HTTP server (links and unsubscribe URLs)" },
    { "mailfleet", "token_keys", CONFIG_SECRET, NULL,
      "HMAC keys for links, VERP and unsubscribe tokens: kid:secret[,kid:secret...]; the first signs" },
    { "mailfleet", "batch_max", CONFIG_INT, "64",
      "records per batch of every consuming worker (1 = one at a time); [send] batch_max overrides" },
    { "mailfleet", "stuck_after", CONFIG_DURATION, "10m",
      "a worker loop in one batch for longer than this is stuck: /healthz answers 503 (liveness restarts the "
      "pod); longer than any batch may take (send's transfers, back-offs)" },
    { "mailfleet", "queue_retention", CONFIG_DURATION, "14d", "local queue: drop records older than this" },
    { "mailfleet", "shutdown_grace", CONFIG_DURATION, "10s",
      "after SIGTERM the process drains and exits within this, even with every Kafka broker down" },
    { "kafka", "*", CONFIG_STR, NULL, "any librdkafka property, e.g. security.protocol = ssl" },
    { "s3", "access_key", CONFIG_SECRET, NULL, "S3 access key id (or access_key_file)" },
    { "s3", "secret_key", CONFIG_SECRET, NULL, "S3 secret key (or secret_key_file)" },
    { "s3", "session_token", CONFIG_SECRET, NULL, "optional STS session token" },
    CONFIG_KEYS_END
};

/* Wipes and frees a copy of a secret (accepts NULL). */
static void secret_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

struct tokens *common_tokens(const struct config *cfg, char *err, size_t errlen)
{
    char *keys = config_secret(cfg, "mailfleet", "token_keys");
    if (!keys) {
        snprintf(err, errlen, "[mailfleet] token_keys (or token_keys_file) is not set");
        return NULL;
    }
    const char *v[16];
    size_t n = 0;
    for (char *save = NULL, *k = strtok_r(keys, ", \t\n", &save); k && n < 16;
         k = strtok_r(NULL, ", \t\n", &save))
        v[n++] = k;
    struct tokens *t = tokens_new(v, n, err, errlen);
    secret_free(keys);
    return t;
}

struct store *common_store_uri(const struct config *cfg, const char *uri, char *err, size_t errlen)
{
    char *ak = config_secret(cfg, "s3", "access_key");
    char *sk = config_secret(cfg, "s3", "secret_key");
    char *st = config_secret(cfg, "s3", "session_token");
    struct store_options o = { ak, sk, st };
    struct store *s = store_open(uri, &o, err, errlen);
    secret_free(ak);
    secret_free(sk);
    secret_free(st);
    return s;
}

struct store *common_store(const struct config *cfg, const char *key, char *err, size_t errlen)
{
    return common_store_uri(cfg, config_str(cfg, "mailfleet", key), err, errlen);
}

const char **common_kafka_conf(const struct config *cfg)
{
    const char **kv = NULL;
    size_t n = config_section_keys(cfg, "kafka", &kv);   /* key, value, ... */
    const char **out = xcalloc(2 * n + 1, sizeof(char *));
    if (n)
        memcpy(out, kv, 2 * n * sizeof(char *));
    free(kv);
    return out;
}

int common_bus_ready(void *bus, char *why, size_t whylen)
{
    return bus_ready(bus, why, whylen);
}

void common_transactional_id(const struct config *cfg, const char *worker, char *buf, size_t len)
{
    if (config_isset(cfg, "mailfleet", "instance_id")) {
        snprintf(buf, len, "mailfleet-%s-%s", worker, config_str(cfg, "mailfleet", "instance_id"));
        return;
    }
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !*host)
        snprintf(host, sizeof host, "localhost");
    snprintf(buf, len, "mailfleet-%s-%s-%d", worker, host, (int)getpid());
}

struct bus *common_bus(const struct config *cfg, struct bus_options *opt, char *err, size_t errlen)
{
    struct bus_options o = opt ? *opt : (struct bus_options){ 0 };
    const char **kconf = NULL;
    if (!o.kafka_conf)
        o.kafka_conf = kconf = common_kafka_conf(cfg);
    if (!o.retention_ms)
        o.retention_ms = config_duration_ms(cfg, "mailfleet", "queue_retention");
    struct bus *b = bus_open(config_str(cfg, "mailfleet", "bus"), &o, err, errlen);
    free(kconf);
    return b;
}
