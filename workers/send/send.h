/* send — the worker that delivers outbound messages (DESIGN.md §4.3). */
#ifndef MF_SEND_SEND_H
#define MF_SEND_SEND_H
#include "admin.h"
#include "worker.h"

extern const struct worker_def send_worker;
extern const struct admin_verb send_admin_verb;   /* mailfleet send pause|resume|status */
extern const struct config_key send_config_keys[];

/* The pause flag file: [send] pause_file, or <state_dir>/send.paused.  malloc'd. */
char *send_pause_file(const struct config *cfg);

#endif
