/* proxy_header — PROXY protocol v1 and v2 (see the header). */
#include "proxy_header.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"

static const unsigned char v2_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

#define V1_MAX 107   /* "PROXY TCP6 " + two full IPv6 addresses + two ports + CRLF */

/* An IPv4-mapped IPv6 source is written as the IPv4 address, so a client
 * counts as one address whichever way the balancer reached us. */
static void canonical(char *addr, size_t len)
{
    struct netaddr a;
    if (netaddr_parse(addr, &a) == 0)
        inet_ntop(a.family, a.addr, addr, (socklen_t)len);
}

static int fail(const char **why, const char *text)
{
    *why = text;
    return -1;
}

/* A decimal port 0..65535 without sign or leading zeros. */
static int port_parse(const char *s, unsigned *out)
{
    if (!*s || strlen(s) > 5 || (s[0] == '0' && s[1]) || strspn(s, "0123456789") != strlen(s))
        return -1;
    unsigned long v = strtoul(s, NULL, 10);
    if (v > 65535)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int parse_v1(const unsigned char *buf, size_t len, struct proxy_source *out, const char **why)
{
    const unsigned char *crlf = NULL;
    for (size_t i = 0; i + 1 < len && i < V1_MAX; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n') {
            crlf = buf + i;
            break;
        }
    if (!crlf)
        return len >= V1_MAX ? fail(why, "PROXY v1 line too long") : 0;
    size_t n = (size_t)(crlf - buf);
    char line[V1_MAX + 1];
    memcpy(line, buf, n);
    line[n] = '\0';
    if (memchr(line, '\0', n))
        return fail(why, "PROXY v1 line with a NUL");
    char *f[7];
    int nf = 0;
    for (char *save = NULL, *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (nf == 6)
            return fail(why, "PROXY v1 line with too many fields");
        f[nf++] = t;
    }
    /* "PROXY UNKNOWN" may carry anything after it, or nothing */
    if (nf >= 2 && strcmp(f[1], "UNKNOWN") == 0) {
        out->local = 1;
        return (int)(n + 2);
    }
    if (nf != 6)
        return fail(why, "PROXY v1 line needs 6 fields");
    int family = strcmp(f[1], "TCP4") == 0 ? AF_INET : strcmp(f[1], "TCP6") == 0 ? AF_INET6 : 0;
    if (!family)
        return fail(why, "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN");
    unsigned char a[16];
    unsigned dport;
    if (inet_pton(family, f[2], a) != 1 || inet_pton(family, f[3], a) != 1)
        return fail(why, "PROXY v1 address does not match its protocol");
    if (port_parse(f[4], &out->port) < 0 || port_parse(f[5], &dport) < 0)
        return fail(why, "PROXY v1 bad port");
    out->local = 0;
    snprintf(out->addr, sizeof(out->addr), "%s", f[2]);
    canonical(out->addr, sizeof(out->addr));
    return (int)(n + 2);
}

static int parse_v2(const unsigned char *buf, size_t len, struct proxy_source *out, const char **why)
{
    if (len < 16)
        return 0;
    if ((buf[12] >> 4) != 2)
        return fail(why, "PROXY v2 version is not 2");
    size_t body = ((size_t)buf[14] << 8) | buf[15];
    if (16 + body > PROXY_HEADER_MAX)
        return fail(why, "PROXY v2 header too long");
    if (len < 16 + body)
        return 0;
    int cmd = buf[12] & 0x0f, family = buf[13] >> 4, proto = buf[13] & 0x0f;
    if (cmd == 0) {   /* LOCAL: the balancer's own connection */
        out->local = 1;
        return (int)(16 + body);
    }
    if (cmd != 1)
        return fail(why, "PROXY v2 command is neither LOCAL nor PROXY");
    const unsigned char *p = buf + 16;
    if (family == 1 && proto == 1) {   /* TCP over IPv4: src, dst, sport, dport */
        if (body < 12)
            return fail(why, "PROXY v2 IPv4 block too short");
        inet_ntop(AF_INET, p, out->addr, sizeof(out->addr));
        out->port = ((unsigned)p[8] << 8) | p[9];
    } else if (family == 2 && proto == 1) {
        if (body < 36)
            return fail(why, "PROXY v2 IPv6 block too short");
        inet_ntop(AF_INET6, p, out->addr, sizeof(out->addr));
        out->port = ((unsigned)p[32] << 8) | p[33];
    } else if (family == 0) {   /* UNSPEC: no address to use */
        out->local = 1;
        return (int)(16 + body);
    } else {
        return fail(why, "PROXY v2 carries neither TCP over IPv4 nor over IPv6");
    }
    out->local = 0;
    canonical(out->addr, sizeof(out->addr));
    return (int)(16 + body);
}

int proxy_header_parse(const unsigned char *buf, size_t len, struct proxy_source *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    *why = NULL;
    /* Decide the version from as many bytes as have come: a prefix of
     * either signature waits for more. */
    if (len >= sizeof(v2_sig) && memcmp(buf, v2_sig, sizeof(v2_sig)) == 0)
        return parse_v2(buf, len, out, why);
    if (len >= 6 && memcmp(buf, "PROXY ", 6) == 0)
        return parse_v1(buf, len, out, why);
    if ((len < sizeof(v2_sig) && memcmp(buf, v2_sig, len) == 0) || (len < 6 && memcmp(buf, "PROXY ", len) == 0))
        return 0;
    return fail(why, "no PROXY header where one is required");
}
