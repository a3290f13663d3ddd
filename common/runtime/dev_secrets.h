/* dev_secrets — refuse to serve beyond this host with the published
 * development secrets.
 *
 * ops/mailfleet.dev.ini (`make run`) and the ops/k8s dev overlay ship a token
 * key, a suppression API token and an SMTP user whose values are in the
 * repository for anyone to read.  They are fine while every listener is on
 * loopback; a process that listens anywhere else with one of them would let
 * anyone forge links, unsubscribe and bounce tokens, read and edit the
 * suppression list, or relay through ingest.  So a process refuses to start
 * instead. */
#ifndef MF_DEV_SECRETS_H
#define MF_DEV_SECRETS_H
#include <stddef.h>

struct config;

/* 0 when no listener leaves loopback or no development secret is configured;
 * otherwise -EPERM and err names the listener and the config key that holds
 * the development secret (never the secret).  Reads the listener keys of
 * every worker ([mailfleet] http_listen/public_listen, [ingest] listen,
 * listen_tls, [<worker>] metrics_listen/public_listen), [mailfleet]
 * token_keys, [feedback] api_token and [ingest] users_file, so cfg must have
 * been loaded with every worker's key table (as `mailfleet` does). */
int dev_secrets_check(const struct config *cfg, char *err, size_t errlen);

/* 1 when addr ("host:port", "[v6]:port" or ":port"; "" = off) binds only
 * loopback: 127.0.0.0/8, ::1 or localhost. */
int dev_secrets_loopback(const char *addr);

#endif
