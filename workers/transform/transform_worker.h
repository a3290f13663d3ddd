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

/* What a receipt rule ([rule.NAME], named by the inbound record) asks of
 * transform: which coded recipients it may reach, and whether the device
 * that sent the mail is named to them. */
struct transform_rule_policy {
    const char *name;                   /* NAME, borrowed from the config */
    char **allowed; size_t n_allowed;   /* allowed_recipients patterns */
    const char **allowed_v;             /* NULL-terminated; NULL when not set */
    int show_sender;
};

struct transform_settings_owned {
    struct transform_settings s;        /* strings borrowed from the config */
    char **defaults; size_t n_defaults;
    char **blocked;  size_t n_blocked;
    const char **defaults_v, **blocked_v;
    char *links_url;
    struct transform_rule_policy *rules; size_t n_rules;
};

void transform_settings_load(const struct config *cfg, struct transform_settings_owned *o);
void transform_settings_free(struct transform_settings_owned *o);

/* The policy of the rule named name, or NULL (no such rule: no allow-list,
 * the sender shown). */
const struct transform_rule_policy *transform_rule_policy(const struct transform_settings_owned *o,
                                                          const char *name);
/* 0, or -EINVAL with why when a rule's allowed_recipients holds something
 * that is not an address.h pattern. */
int transform_rule_policies_check(const struct transform_settings_owned *o, char *why, size_t whylen);

/* 1 (with why) if the sender is not a mailbox or is a capture address. */
int transform_sender_is_capture(const struct config *cfg, const char *sender, char *why,
                                size_t whylen);

/* A UUIDv7-shaped id derived from the inbound id and a salt: the inbound's
 * timestamp, SHA-256(salt | id) for the rest.  Redelivery gives the same id. */
void transform_derive_id(const char *inbound_id, const char *salt, char out[ID_LEN + 1]);

#endif
