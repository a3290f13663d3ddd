/* links — the attachment link gateway worker and its admin verb. */
#ifndef MF_LINKS_H
#define MF_LINKS_H
#include <stddef.h>
#include <stdint.h>
#include "admin.h"
#include "worker.h"

struct bus;
struct http_request;
struct http_response;
struct kv;
struct links;
struct store;
struct strbuf;
struct tokens;

extern const struct worker_def links_worker;
extern const struct admin_verb links_verb;   /* mailfleet links revoke ... */
extern const struct config_key links_config_keys[];

/* The GET|HEAD /a/<token> handler over borrowed parts, without the
 * worker's revocation reader and event thread (tests, fuzzing: no thread of
 * its own, so a fuzzing run stays deterministic): what kv holds is what is
 * revoked, each download event is produced to bus as it happens.
 * links_serve is the route's handler (opaque: the gateway). */
struct links *links_gateway_new(struct tokens *tok, struct store *st, struct kv *kv, struct bus *bus,
                                int redirect);
/* Only once every response it answered is freed (their downloads hold its
 * limits); the parts stay the caller's. */
void links_gateway_free(struct links *l);
void links_serve(void *opaque, const struct http_request *req, struct http_response *resp);

/* Range header against an object of size bytes: 0 = none (serve all),
 * 1 = one satisfiable range (offset in off, length in len), -1 = not
 * satisfiable (416). */
int links_parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len);

/* attachment; filename="ascii"; filename* as UTF-8 percent-encoded (RFC 8187) */
void links_content_disposition(const char *name, struct strbuf *out);

/* LMDB key of a revocation: kind ('l' link / 'm' message) + SHA-256 hex. */
void links_revocation_key(char kind, const char *target, size_t len, char out[66]);

#endif
