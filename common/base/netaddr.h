/* netaddr — IP addresses and CIDR blocks, for lists of trusted peers.
 *
 * An IPv4-mapped IPv6 address ("::ffff:10.0.0.1", what a dual-stack socket
 * reports) is the IPv4 address: a block "10.0.0.0/8" matches it. */
#ifndef MF_BASE_NETADDR_H
#define MF_BASE_NETADDR_H
#include <stddef.h>

struct netaddr {
    int family;                /* AF_INET / AF_INET6 */
    unsigned char addr[16];    /* 4 or 16 bytes used */
};

struct cidr {
    struct netaddr net;
    int prefix;                /* bits */
};

/* An address in text, without port or brackets; -1 if it is not one. */
int netaddr_parse(const char *s, struct netaddr *out);
/* "10.0.0.0/8", "fd00::/8" or a bare address (one host); -1 otherwise. */
int cidr_parse(const char *s, struct cidr *out);
int cidr_match(const struct cidr *c, const struct netaddr *a);
/* 1 if any of the n blocks holds a. */
int cidr_any(const struct cidr *blocks, size_t n, const struct netaddr *a);

#endif
