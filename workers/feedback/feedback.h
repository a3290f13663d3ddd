/* feedback — bounces, complaints, SES notifications and unsubscribes into
 * the suppression list. */
#ifndef MF_FEEDBACK_H
#define MF_FEEDBACK_H
#include "worker.h"
#include "admin.h"

extern const struct worker_def feedback_worker;
extern const struct config_key feedback_config_keys[];
extern const struct admin_verb suppression_verb;

/* Tokens, made by send:
 *   VERP return path   bounce+<verp token "verp">@<bounce domain>       (common/verp)
 *   mailto unsubscribe unsubscribe+<verp token "unsubscribe">@<domain>  (common/verp)
 *   one-click URL      /u/<tokens.h token of "u|recipient|list">
 * A VERP token binds a message id to one recipient without carrying the
 * address: it verifies only against the recipient the report names. */

#endif
