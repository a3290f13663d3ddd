/* netaddr — IP addresses and CIDR blocks (see the header). */
#include "netaddr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

int netaddr_parse(const char *s, struct netaddr *out)
{
    static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, s, out->addr) == 1) {
        out->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, s, out->addr) == 1) {
        out->family = AF_INET6;
        if (memcmp(out->addr, mapped, sizeof(mapped)) == 0) {
            memmove(out->addr, out->addr + 12, 4);
            memset(out->addr + 4, 0, 12);
            out->family = AF_INET;
        }
        return 0;
    }
    return -1;
}

int cidr_parse(const char *s, struct cidr *out)
{
    char a[INET6_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof(a))
        return -1;
    memcpy(a, s, alen);
    a[alen] = '\0';
    if (netaddr_parse(a, &out->net) < 0)
        return -1;
    int max = out->net.family == AF_INET ? 32 : 128;
    out->prefix = max;
    if (slash) {
        char *e;
        long p = strtol(slash + 1, &e, 10);
        if (e == slash + 1 || *e || p < 0 || p > max)
            return -1;
        out->prefix = (int)p;
    }
    return 0;
}

int cidr_match(const struct cidr *c, const struct netaddr *a)
{
    if (c->net.family != a->family)
        return 0;
    int full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->net.addr, a->addr, (size_t)full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (c->net.addr[full] & mask) == (a->addr[full] & mask);
}

int cidr_any(const struct cidr *blocks, size_t n, const struct netaddr *a)
{
    for (size_t i = 0; i < n; i++)
        if (cidr_match(&blocks[i], a))
            return 1;
    return 0;
}
