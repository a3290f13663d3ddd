/* alarms — CloudWatch-style alarm rules over periodic datapoints.
 *
 * Each period the monitor feeds one datapoint per rule (or none: missing
 * data).  A rule keeps the last evaluation_periods datapoints and goes to
 * ALARM when at least datapoints_to_alarm of them breach, OK when enough are
 * present and fewer breach, INSUFFICIENT_DATA when all are missing (subject to
 * treat_missing_data).  A state change yields an alarm.v1 record in the
 * CloudWatch alarm-notification shape.  Pure logic: no I/O, no clock. */
#ifndef MF_ALARMS_H
#define MF_ALARMS_H
#include <stddef.h>
#include <stdint.h>

enum alarm_state { ALARM_INSUFFICIENT = 0, ALARM_OK = 1, ALARM_ALARM = 2 };
enum alarm_cmp { CMP_GT, CMP_GE, CMP_LT, CMP_LE };
enum alarm_missing { MISSING_MISSING, MISSING_BREACHING, MISSING_NOT_BREACHING, MISSING_IGNORE };

struct alarm_rule {
    const char *name;             /* AlarmName, e.g. "inbound-dlq-depth" */
    const char *description;
    const char *metric;           /* MetricName, e.g. "DLQDepth" */
    const char *topic;            /* dimension Topic */
    const char *group;            /* dimension ConsumerGroup (may be NULL) */
    const char *statistic;        /* Maximum, Minimum, Average, Sum, SampleCount */
    int64_t period_ms;
    int evaluation_periods;
    int datapoints_to_alarm;
    enum alarm_cmp cmp;
    double threshold;
    enum alarm_missing missing;
};

struct alarm;

struct alarm *alarm_new(const struct alarm_rule *rule);   /* copies the rule */
void alarm_free(struct alarm *a);
const struct alarm_rule *alarm_rule(const struct alarm *a);
enum alarm_state alarm_state(const struct alarm *a);
const char *alarm_state_name(enum alarm_state s);       /* "OK", "ALARM", "INSUFFICIENT_DATA" */
int alarm_parse_cmp(const char *s, enum alarm_cmp *out);     /* CloudWatch names or > >= < <= */
int alarm_parse_missing(const char *s, enum alarm_missing *out);
const char *alarm_cmp_name(enum alarm_cmp c);           /* "GreaterThanThreshold", ... */

/* Feeds the datapoint for one period (has_value 0 = missing).  Returns 1 and
 * a malloc'd alarm.v1 JSON document in *record when the state changed, or
 * when in ALARM and renotify_ms has passed since the last notification;
 * 0 otherwise.  now_ms stamps StateChangeTime. */
int alarm_evaluate(struct alarm *a, int has_value, double value, int64_t now_ms,
                   int64_t renotify_ms, char **record);
/* Current state as a JSON object (for /alarms and `mailfleet alarms`), malloc'd. */
char *alarm_status_json(const struct alarm *a);

#endif
