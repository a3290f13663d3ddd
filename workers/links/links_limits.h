/* links_limits — whom a download is charged to, and how many each may hold.
 *
 * The client is the socket peer, or, when the peer is a trusted proxy (the
 * ingress), the rightmost X-Forwarded-For address that is not a trusted
 * proxy: everything left of it was written by the client and proves
 * nothing.  IPv6 clients are charged per /64 (one subscriber's network), so
 * hopping between addresses inside it gains nothing.
 *
 * Slots: at most max_total downloads at once in the process and
 * max_per_client per client (0: no limit).  Only clients holding a slot are
 * kept, so the table is as small as the downloads are few.  Thread-safe. */
#ifndef MF_LINKS_LIMITS_H
#define MF_LINKS_LIMITS_H
#include <stddef.h>
#include <stdint.h>

struct links_limits;

#define LINKS_CLIENT_LEN 64   /* an IPv6 address in text, "/64" and the NUL fit */

enum links_slot {
    LINKS_SLOT_TAKEN,
    LINKS_SLOT_CLIENT_FULL,   /* this client holds max_per_client already */
    LINKS_SLOT_TOTAL_FULL,    /* the process holds max_total already */
};

/* proxies: "10.0.0.0/8", "fd00::/8" or a bare address (one host).  NULL,
 * with err set, for a bad entry or a negative limit. */
struct links_limits *links_limits_new(char *const *proxies, size_t n_proxies, int64_t max_total,
                                      int64_t max_per_client, char *err, size_t errlen);
void links_limits_free(struct links_limits *lim);   /* accepts NULL */

/* The client's address, in canonical text, from the peer address and the
 * request's X-Forwarded-For (NULL when absent; all its lines joined). */
void links_limits_client(const struct links_limits *lim, const char *peer, const char *xff,
                         char out[LINKS_CLIENT_LEN]);

/* A slot for client (from links_limits_client), or which limit is reached.
 * Every LINKS_SLOT_TAKEN is given back with one links_limits_release. */
enum links_slot links_limits_take(struct links_limits *lim, const char *client);
void links_limits_release(struct links_limits *lim, const char *client);

/* 1 when a refusal of client is to be logged: once per client per
 * interval_ms, and for at most 64 clients per interval (a counter sees the
 * rest), so a flood of refusals cannot flood the log. */
int links_limits_log_refusal(struct links_limits *lim, const char *client, int64_t now_ms, int64_t interval_ms);

#endif
