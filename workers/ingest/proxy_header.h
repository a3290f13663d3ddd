/* proxy_header — the PROXY protocol header (HAProxy's, versions 1 and 2)
 * that a load balancer sends first on a connection to tell the client's
 * address.
 *
 * Version 1 is one text line, "PROXY TCP4 <src> <dst> <sport> <dport>\r\n"
 * (TCP6, or "PROXY UNKNOWN ...\r\n"), at most 107 bytes.  Version 2 is a
 * 12-byte signature, a version/command byte, a family byte, a 16-bit length
 * and the addresses, then TLVs (read past, not used).  A LOCAL command (v2)
 * or UNKNOWN (v1) is the balancer's own connection, a health check: the
 * socket's peer stays the client.  Pure parsing, no I/O. */
#ifndef MF_INGEST_PROXY_HEADER_H
#define MF_INGEST_PROXY_HEADER_H
#include <stddef.h>

#define PROXY_HEADER_MAX 1024   /* a v2 header with more TLVs than this is refused */

struct proxy_source {
    int local;                 /* LOCAL/UNKNOWN: no address given */
    char addr[64];             /* the client's address in text, when !local */
    unsigned port;
};

/* > 0: a whole header of that many bytes, *out filled; 0: not enough bytes
 * yet; -1: not a PROXY header or a bad one (*why says what). */
int proxy_header_parse(const unsigned char *buf, size_t len, struct proxy_source *out, const char **why);

#endif
