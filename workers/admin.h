/* admin — command-line verbs beside the workers (suppression, links, dlq, ...).
 * A verb's main gets argv starting at its own name and returns an exit code;
 * it loads the config with mailfleet_load_config().
 *
 * A verb about one worker's data lives with that worker
 * (workers/<w>/<w>_admin.c, declared in its header); a verb about the whole
 * fleet lives in workers/admin/ and is declared here. */
#ifndef MF_ADMIN_H
#define MF_ADMIN_H
#include "config.h"

struct admin_verb {
    const char *name;
    const char *help;
    const struct config_key *keys;   /* extra config keys, or NULL */
    int (*main)(int argc, char **argv);
};

/* Loads -c FILE (or $MAILFLEET_CONFIG) against every table; prints the error
 * and returns NULL on failure. */
struct config *mailfleet_load_config(int argc, char **argv);

/* Fleet-wide verbs (workers/admin/). */
extern const struct admin_verb dlq_verb;   /* mailfleet dlq list|replay|ack */

#endif
