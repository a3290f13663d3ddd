/* common_config — config keys shared by all workers ([mailfleet], [kafka], [s3]). */
#ifndef MF_COMMON_CONFIG_H
#define MF_COMMON_CONFIG_H
#include "config.h"

extern const struct config_key common_config_keys[];

struct tokens;
/* The token keys of [mailfleet] token_keys (links, VERP, unsubscribe).
 * NULL with err when unset or malformed. */
struct tokens *common_tokens(const struct config *cfg, char *err, size_t errlen);

struct store;
/* Opens the store named by [mailfleet] <key> (store_incoming,
 * store_attachments) with the [s3] credentials; the copies of the secrets
 * are wiped before it returns (the store keeps its own, wiped on close).
 * Every worker opens its stores this way: with no [s3] credentials the store
 * falls back to AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. */
struct store *common_store(const struct config *cfg, const char *key, char *err, size_t errlen);
/* The same for a store URI that is not a [mailfleet] key (ingest's spool_store). */
struct store *common_store_uri(const struct config *cfg, const char *uri, char *err, size_t errlen);

struct bus;
struct bus_options;
/* Opens [mailfleet] bus with every [kafka] property (TLS, SASL, tuning) and
 * the queue retention; opt (may be NULL) gives the rest (client id, ...). */
struct bus *common_bus(const struct config *cfg, struct bus_options *opt, char *err, size_t errlen);
/* The transactional id of a consume-produce worker's Kafka producer:
 * "mailfleet-<worker>-<instance>", the instance being [mailfleet]
 * instance_id or else "<host>-<pid>".  Unique per process, so replicas never
 * fence each other (Kafka fences a zombie by the group generation sent with
 * its offsets), and stable for a restarted container of the same pod (pid 1,
 * same host name): its first transaction call fences what is left of the
 * one before and aborts its open transaction at once. */
void common_transactional_id(const struct config *cfg, const char *worker, char *buf, size_t len);
/* A readiness check (http_ready_check) on a struct bus *: bus_ready(). */
int common_bus_ready(void *bus, char *why, size_t whylen);
/* The [kafka] properties as name, value, ..., NULL (malloc'd array; the
 * strings stay owned by cfg). */
const char **common_kafka_conf(const struct config *cfg);

#endif
