/* common_config — config keys shared by all workers ([mailfleet], [kafka], [s3]). */
#ifndef MF_COMMON_CONFIG_H
#define MF_COMMON_CONFIG_H
#include "config.h"

extern const struct config_key common_config_keys[];

#endif
