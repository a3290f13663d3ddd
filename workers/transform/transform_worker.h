/* transform_worker — config loading and helpers shared by the transform
 * worker and the tools. */
#ifndef MF_TRANSFORM_WORKER_H
#define MF_TRANSFORM_WORKER_H
#include <stddef.h>
#include <gmime/gmime.h>
#include "config.h"
#include "ids.h"
#include "transform.h"

struct tokens;
struct worker_def;

extern const struct worker_def transform_worker;

struct transform_settings_owned {
    struct transform_settings s;        /* strings borrowed from the config */
    char **defaults; size_t n_defaults;
    char **blocked;  size_t n_blocked;
    const char **defaults_v, **blocked_v;
    char *links_url;
};

void transform_settings_load(const struct config *cfg, struct transform_settings_owned *o);
void transform_settings_free(struct transform_settings_owned *o);

/* 1 (with why) if the sender is not a mailbox or is a capture address. */
int transform_sender_is_capture(const struct config *cfg, const char *sender, char *why,
                                size_t whylen);

/* A UUIDv7-shaped id derived from the inbound id and a salt: the inbound's
 * timestamp, SHA-256(salt | id) for the rest.  Redelivery gives the same id. */
void transform_derive_id(const char *inbound_id, const char *salt, char out[ID_LEN + 1]);

#endif
