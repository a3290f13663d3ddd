/* feedback — bounces, complaints, SES notifications and unsubscribes into
 * the suppression list. */
#ifndef MF_FEEDBACK_H
#define MF_FEEDBACK_H
#include "worker.h"
#include "admin.h"

extern const struct worker_def feedback_worker;
extern const struct config_key feedback_config_keys[];
extern const struct admin_verb suppression_verb;

/* Token payloads (common/tokens) shared with send, which signs them:
 *   VERP return path  bounce+<token>@<bounce domain>:  "<message id>|<recipient>"
 *   unsubscribe       /u/<token>, unsubscribe+<token>@: "u|<recipient>|<list>"  */

#endif
