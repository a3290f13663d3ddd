/* dev_secrets — see dev_secrets.h for why.  The known development values live
 * here and only here; keep them in step with ops/mailfleet.dev.ini,
 * ops/dev.users and ops/k8s/overlays/dev/kustomization.yaml. */
#include "dev_secrets.h"
#include "config.h"
#include "strbuf.h"

#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The published development values.  Token key secrets are compared without
 * their key id (a renamed kid is the same key); the dev SMTP user is caught by
 * its password, whatever salt hashed it. */
static const char *const dev_token_secrets[] = {
    /* ops/mailfleet.dev.ini and the k8s dev overlay: dev1, hex and as text */
    "6d61696c666c6565742d6465762d6b65792d6f6e652d646f2d6e6f742d757365",
    "mailfleet-dev-key-one-do-not-use",
};
static const char *const dev_api_tokens[] = {
    "dev-api-token",              /* ops/mailfleet.dev.ini */
    "dev-api-token-not-secret",   /* ops/k8s/overlays/dev */
};
static const char dev_user_password[] = "device-password";   /* ops/dev.users: user device */

static const struct { const char *section, *key; } listeners[] = {
    { "mailfleet", "http_listen" }, { "mailfleet", "public_listen" },
    { "ingest", "listen" }, { "ingest", "listen_tls" }, { "ingest", "listen_submission" },
    { "ingest", "metrics_listen" },
    { "transform", "metrics_listen" }, { "send", "metrics_listen" },
    { "feedback", "metrics_listen" }, { "feedback", "public_listen" },
    { "monitor", "metrics_listen" },
    { "links", "metrics_listen" }, { "links", "public_listen" },
};

int dev_secrets_loopback(const char *addr)
{
    char host[256];
    const char *colon;
    if (!addr || !*addr)
        return 1;   /* off */
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || (size_t)(close - addr - 1) >= sizeof(host))
            return 0;
        memcpy(host, addr + 1, (size_t)(close - addr - 1));
        host[close - addr - 1] = '\0';
    } else {
        colon = strrchr(addr, ':');
        size_t hl = colon ? (size_t)(colon - addr) : strlen(addr);
        if (hl >= sizeof(host))
            return 0;
        memcpy(host, addr, hl);
        host[hl] = '\0';
    }
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    unsigned char a[16];
    if (inet_pton(AF_INET, host, a) == 1)
        return a[0] == 127;
    if (inet_pton(AF_INET6, host, a) == 1) {
        static const unsigned char one[16] = { [15] = 1 };
        return memcmp(a, one, 16) == 0;
    }
    return 0;   /* empty host (all addresses), a name, or garbage */
}

static void secret_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static int token_keys_dev(const struct config *cfg)
{
    char *keys = config_secret(cfg, "mailfleet", "token_keys");
    int dev = 0;
    for (char *save = NULL, *k = keys ? strtok_r(keys, ", \t\n", &save) : NULL; k && !dev;
         k = strtok_r(NULL, ", \t\n", &save)) {
        const char *secret = strchr(k, ':');
        secret = secret ? secret + 1 : k;
        for (size_t i = 0; i < sizeof(dev_token_secrets) / sizeof(dev_token_secrets[0]); i++)
            dev |= strcasecmp(secret, dev_token_secrets[i]) == 0;
    }
    secret_free(keys);
    return dev;
}

static int api_token_dev(const struct config *cfg)
{
    char *tok = config_secret(cfg, "feedback", "api_token");
    int dev = 0;
    for (size_t i = 0; tok && i < sizeof(dev_api_tokens) / sizeof(dev_api_tokens[0]); i++) {
        size_t n = strlen(dev_api_tokens[i]);
        dev |= strlen(tok) == n && CRYPTO_memcmp(tok, dev_api_tokens[i], n) == 0;
    }
    secret_free(tok);
    return dev;
}

/* Any user of the users file (ingest's "name:crypt-hash" lines) whose
 * password is the dev one.  A missing file is ingest's business (no users). */
static int users_dev(const struct config *cfg)
{
    FILE *f = fopen(config_str(cfg, "ingest", "users_file"), "r");
    if (!f)
        return 0;
    struct crypt_data *cd = xcalloc(1, sizeof(*cd));
    char line[1024];
    int dev = 0;
    while (!dev && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        const char *hash = line[0] == '#' ? NULL : strchr(line, ':');
        if (!hash || !hash[1])
            continue;
        hash++;
        const char *h = crypt_r(dev_user_password, hash, cd);
        dev = h && h[0] != '*' && strcmp(h, hash) == 0;
    }
    OPENSSL_cleanse(cd, sizeof(*cd));
    free(cd);
    fclose(f);
    return dev;
}

int dev_secrets_check(const struct config *cfg, char *err, size_t errlen)
{
    const char *open_section = NULL, *open_key = NULL;
    for (size_t i = 0; i < sizeof(listeners) / sizeof(listeners[0]) && !open_key; i++)
        if (!dev_secrets_loopback(config_str(cfg, listeners[i].section, listeners[i].key))) {
            open_section = listeners[i].section;
            open_key = listeners[i].key;
        }
    if (!open_key)
        return 0;
    const char *what = token_keys_dev(cfg) ? "[mailfleet] token_keys holds the development token key"
                     : api_token_dev(cfg) ? "[feedback] api_token is the development API token"
                     : users_dev(cfg) ? "[ingest] users_file has the development user's password"
                     : NULL;
    if (!what)
        return 0;
    snprintf(err, errlen, "%s (published in ops/) and [%s] %s = %s is not loopback; "
             "set your own secrets to listen beyond 127.0.0.1", what, open_section, open_key,
             config_str(cfg, open_section, open_key));
    return -EPERM;
}
