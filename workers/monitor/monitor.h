/* monitor — lag, oldest age, volume, DLQ depth and rates -> alarms. */
#ifndef MF_MONITOR_H
#define MF_MONITOR_H
#include "worker.h"
#include "admin.h"

extern const struct worker_def monitor_worker;
extern const struct config_key monitor_config_keys[];
extern const struct admin_verb alarms_verb;
extern const struct admin_verb retention_verb;

#endif
