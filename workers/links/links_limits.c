/* links_limits — client addresses behind trusted proxies, and download
 * slots per client and per process (see the header). */
#include "links_limits.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "netaddr.h"
#include "strbuf.h"

#define LOG_CLIENTS 64

struct holder {
    char client[LINKS_CLIENT_LEN];   /* charge key: the address, or an IPv6 /64 */
    int64_t n;
};

struct logged {
    char client[LINKS_CLIENT_LEN];
    int64_t at_ms;
};

struct links_limits {
    struct cidr *proxies;
    size_t n_proxies;
    int64_t max_total, max_per_client;
    pthread_mutex_t mu;
    int64_t total;
    struct holder *holders;    /* clients with n > 0 */
    size_t n_holders, cap_holders;
    struct logged logged[LOG_CLIENTS];
};

/* --- addresses -------------------------------------------------------- */

/* The rightmost entry of list[0..*end) into out (trimmed), *end moved to
 * the comma before it; 0 when there is none left. */
static int xff_pop(const char *list, size_t *end, char *out, size_t outlen)
{
    while (*end > 0 && (list[*end - 1] == ' ' || list[*end - 1] == '\t' || list[*end - 1] == ','))
        (*end)--;
    if (*end == 0)
        return 0;
    size_t start = *end;
    while (start > 0 && list[start - 1] != ',')
        start--;
    size_t b = start, e = *end;
    while (b < e && (list[b] == ' ' || list[b] == '\t'))
        b++;
    while (e > b && (list[e - 1] == ' ' || list[e - 1] == '\t'))
        e--;
    *end = start;
    if (e - b >= outlen)
        e = b;   /* too long to be an address: an empty (bad) entry */
    memcpy(out, list + b, e - b);
    out[e - b] = '\0';
    return 1;
}

void links_limits_client(const struct links_limits *lim, const char *peer, const char *xff,
                         char out[LINKS_CLIENT_LEN])
{
    struct netaddr addr;
    snprintf(out, LINKS_CLIENT_LEN, "%s", peer ? peer : "");
    if (netaddr_parse(out, &addr) < 0)
        return;
    /* Walk left while the hop is a trusted proxy.  An entry that is not an
     * address ends the walk at the last proxy: it vouches for nothing. */
    size_t end = xff ? strlen(xff) : 0;
    char hop[LINKS_CLIENT_LEN];
    while (cidr_any(lim->proxies, lim->n_proxies, &addr) && xff_pop(xff, &end, hop, sizeof(hop))) {
        struct netaddr a;
        if (netaddr_parse(hop, &a) < 0)
            break;
        addr = a;
    }
    if (!inet_ntop(addr.family, addr.addr, out, LINKS_CLIENT_LEN))
        out[0] = '\0';
}

/* What a client is charged as: an IPv4 address as is, IPv6 its /64. */
static void charge_key(const char *client, char out[LINKS_CLIENT_LEN])
{
    unsigned char a[16];
    char text[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET6, client, a) == 1) {
        memset(a + 8, 0, 8);
        inet_ntop(AF_INET6, a, text, sizeof(text));
        snprintf(out, LINKS_CLIENT_LEN, "%s/64", text);
    } else {
        snprintf(out, LINKS_CLIENT_LEN, "%s", *client ? client : "unknown");
    }
}

/* --- slots ------------------------------------------------------------ */

struct links_limits *links_limits_new(char *const *proxies, size_t n_proxies, int64_t max_total,
                                      int64_t max_per_client, char *err, size_t errlen)
{
    if (max_total < 0 || max_per_client < 0) {
        snprintf(err, errlen, "download limits cannot be negative");
        return NULL;
    }
    struct links_limits *lim = xcalloc(1, sizeof(*lim));
    lim->proxies = xcalloc(n_proxies ? n_proxies : 1, sizeof(*lim->proxies));
    for (size_t i = 0; i < n_proxies; i++) {
        if (cidr_parse(proxies[i], &lim->proxies[lim->n_proxies]) < 0) {
            snprintf(err, errlen, "trusted_proxies: '%s' is neither an address nor a CIDR", proxies[i]);
            links_limits_free(lim);
            return NULL;
        }
        lim->n_proxies++;
    }
    lim->max_total = max_total;
    lim->max_per_client = max_per_client;
    pthread_mutex_init(&lim->mu, NULL);
    return lim;
}

void links_limits_free(struct links_limits *lim)
{
    if (!lim)
        return;
    pthread_mutex_destroy(&lim->mu);
    free(lim->proxies);
    free(lim->holders);
    free(lim);
}

static struct holder *holder_find(struct links_limits *lim, const char *key)
{
    for (size_t i = 0; i < lim->n_holders; i++)
        if (strcmp(lim->holders[i].client, key) == 0)
            return &lim->holders[i];
    return NULL;
}

enum links_slot links_limits_take(struct links_limits *lim, const char *client)
{
    char key[LINKS_CLIENT_LEN];
    charge_key(client, key);
    pthread_mutex_lock(&lim->mu);
    struct holder *h = holder_find(lim, key);
    enum links_slot r = LINKS_SLOT_TAKEN;
    if (lim->max_per_client && h && h->n >= lim->max_per_client)
        r = LINKS_SLOT_CLIENT_FULL;   /* first: it is this client's doing */
    else if (lim->max_total && lim->total >= lim->max_total)
        r = LINKS_SLOT_TOTAL_FULL;
    if (r == LINKS_SLOT_TAKEN) {
        if (!h) {
            if (lim->n_holders == lim->cap_holders) {
                lim->cap_holders = lim->cap_holders ? 2 * lim->cap_holders : 16;
                lim->holders = xrealloc(lim->holders, lim->cap_holders * sizeof(*lim->holders));
            }
            h = &lim->holders[lim->n_holders++];
            memcpy(h->client, key, sizeof(key));
            h->n = 0;
        }
        h->n++;
        lim->total++;
    }
    pthread_mutex_unlock(&lim->mu);
    return r;
}

void links_limits_release(struct links_limits *lim, const char *client)
{
    char key[LINKS_CLIENT_LEN];
    charge_key(client, key);
    pthread_mutex_lock(&lim->mu);
    struct holder *h = holder_find(lim, key);
    if (!h || lim->total == 0)
        panic("%s: a slot given back that was never taken", __func__);
    lim->total--;
    if (--h->n == 0)
        *h = lim->holders[--lim->n_holders];
    pthread_mutex_unlock(&lim->mu);
}

int links_limits_log_refusal(struct links_limits *lim, const char *client, int64_t now_ms, int64_t interval_ms)
{
    char key[LINKS_CLIENT_LEN];
    charge_key(client, key);
    int r = 0;
    pthread_mutex_lock(&lim->mu);
    struct logged *free_entry = NULL, *mine = NULL;
    for (size_t i = 0; i < LOG_CLIENTS; i++) {
        struct logged *e = &lim->logged[i];
        int expired = e->client[0] == '\0' || now_ms - e->at_ms >= interval_ms;
        if (e->client[0] && strcmp(e->client, key) == 0)
            mine = e;
        else if (expired && !free_entry)
            free_entry = e;
    }
    if (mine && now_ms - mine->at_ms >= interval_ms) {
        mine->at_ms = now_ms;
        r = 1;
    } else if (!mine && free_entry) {
        memcpy(free_entry->client, key, sizeof(key));
        free_entry->at_ms = now_ms;
        r = 1;
    }
    pthread_mutex_unlock(&lim->mu);
    return r;
}
