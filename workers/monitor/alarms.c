/* alarms — the evaluation rules CloudWatch documents for metric alarms
 * (M out of N datapoints, treat-missing-data), producing notification records
 * that existing CloudWatch/SNS consumers can parse. */
#include "alarms.h"
#include "ids.h"
#include "log.h"
#include "strbuf.h"
#include "timeutil.h"
#include "topics.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PERIODS 64

struct alarm {
    struct alarm_rule r;
    char *strings[5];               /* owned copies of the rule's strings */
    int has[MAX_PERIODS];
    double val[MAX_PERIODS];
    int n;                          /* datapoints seen, capped at evaluation_periods */
    enum alarm_state state;
    int64_t changed_ms, notified_ms;
    char reason[512];
};

static const char *cmp_names[] = { "GreaterThanThreshold", "GreaterThanOrEqualToThreshold",
                                   "LessThanThreshold", "LessThanOrEqualToThreshold" };
static const char *cmp_ops[] = { ">", ">=", "<", "<=" };
static const char *missing_names[] = { "missing", "breaching", "notBreaching", "ignore" };

const char *alarm_cmp_name(enum alarm_cmp c)
{
    return cmp_names[c];
}

int alarm_parse_cmp(const char *s, enum alarm_cmp *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, cmp_names[i]) == 0 || strcmp(s, cmp_ops[i]) == 0) {
            *out = (enum alarm_cmp)i;
            return 0;
        }
    return -1;
}

int alarm_parse_missing(const char *s, enum alarm_missing *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, missing_names[i]) == 0) {
            *out = (enum alarm_missing)i;
            return 0;
        }
    return -1;
}

const char *alarm_state_name(enum alarm_state s)
{
    return s == ALARM_OK ? "OK" : s == ALARM_ALARM ? "ALARM" : "INSUFFICIENT_DATA";
}

struct alarm *alarm_new(const struct alarm_rule *rule)
{
    struct alarm *a = xcalloc(1, sizeof(*a));
    a->r = *rule;
    const char **fields[] = { &a->r.name, &a->r.description, &a->r.metric, &a->r.topic, &a->r.group };
    for (int i = 0; i < 5; i++)
        if (*fields[i])
            *fields[i] = a->strings[i] = xstrdup(*fields[i]);
    if (a->r.evaluation_periods < 1)
        a->r.evaluation_periods = 1;
    if (a->r.evaluation_periods > MAX_PERIODS)
        a->r.evaluation_periods = MAX_PERIODS;
    if (a->r.datapoints_to_alarm < 1 || a->r.datapoints_to_alarm > a->r.evaluation_periods)
        a->r.datapoints_to_alarm = a->r.evaluation_periods;
    a->state = ALARM_INSUFFICIENT;
    snprintf(a->reason, sizeof(a->reason), "Unchecked: initial alarm creation");
    return a;
}

void alarm_free(struct alarm *a)
{
    if (!a)
        return;
    for (int i = 0; i < 5; i++)
        free(a->strings[i]);
    free(a);
}

const struct alarm_rule *alarm_rule(const struct alarm *a)
{
    return &a->r;
}

enum alarm_state alarm_state(const struct alarm *a)
{
    return a->state;
}

static int breaches(const struct alarm_rule *r, double v)
{
    switch (r->cmp) {
    case CMP_GT: return v > r->threshold;
    case CMP_GE: return v >= r->threshold;
    case CMP_LT: return v < r->threshold;
    case CMP_LE: return v <= r->threshold;
    }
    return 0;
}

static void fmt_num(char *buf, size_t len, double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, len, "%.1f", v);
    else
        snprintf(buf, len, "%.6g", v);
}

/* Newest datapoint last; returns the next state and writes the reason. */
static enum alarm_state decide(struct alarm *a)
{
    const struct alarm_rule *r = &a->r;
    int present = 0, breaching = 0, considered = 0;
    char list[256] = "";
    size_t ll = 0;

    for (int i = 0; i < a->n; i++) {
        int has = a->has[i];
        int br;
        if (has) {
            present++;
            br = breaches(r, a->val[i]);
            if (ll < sizeof(list) - 32) {
                char num[32];
                fmt_num(num, sizeof(num), a->val[i]);
                ll += (size_t)snprintf(list + ll, sizeof(list) - ll, "%s%s", ll ? ", " : "", num);
            }
        } else if (r->missing == MISSING_BREACHING) {
            br = 1;
        } else if (r->missing == MISSING_NOT_BREACHING) {
            br = 0;
        } else {
            continue;  /* missing / ignore: not counted */
        }
        considered++;
        breaching += br;
    }
    char thr[32];
    fmt_num(thr, sizeof(thr), r->threshold);
    if (breaching >= r->datapoints_to_alarm) {
        snprintf(a->reason, sizeof(a->reason),
                 "Threshold Crossed: %d out of the last %d datapoints [%s] were %s the threshold (%s) "
                 "(minimum %d datapoint%s for OK -> ALARM transition).",
                 breaching, r->evaluation_periods, list,
                 r->cmp == CMP_GT ? "greater than" : r->cmp == CMP_GE ? "greater than or equal to"
                 : r->cmp == CMP_LT ? "less than" : "less than or equal to",
                 thr, r->datapoints_to_alarm, r->datapoints_to_alarm == 1 ? "" : "s");
        return ALARM_ALARM;
    }
    if (considered == 0) {
        if (r->missing == MISSING_IGNORE && a->state != ALARM_INSUFFICIENT)
            return a->state;   /* ignore: keep the current state */
        snprintf(a->reason, sizeof(a->reason),
                 "Insufficient Data: %d datapoint%s were unknown.", a->n, a->n == 1 ? "" : "s");
        return ALARM_INSUFFICIENT;
    }
    (void)present;
    snprintf(a->reason, sizeof(a->reason),
             "Threshold Crossed: %d out of the last %d datapoints [%s] were not %s the threshold (%s) "
             "(minimum %d datapoint%s for ALARM -> OK transition).",
             considered - breaching, r->evaluation_periods, list,
             r->cmp == CMP_GT ? "greater than" : r->cmp == CMP_GE ? "greater than or equal to"
             : r->cmp == CMP_LT ? "less than" : "less than or equal to",
             thr, 1, "");
    return ALARM_OK;
}

/* The notification spells statistics in upper case (SAMPLE_COUNT), the API
 * and our config in CamelCase (SampleCount). */
static const char *statistic_upper(const char *s)
{
    static const char *map[][2] = { { "SampleCount", "SAMPLE_COUNT" }, { "Average", "AVERAGE" },
                                    { "Sum", "SUM" }, { "Minimum", "MINIMUM" }, { "Maximum", "MAXIMUM" } };
    for (size_t i = 0; s && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(s, map[i][0]) == 0)
            return map[i][1];
    return "MAXIMUM";
}

static json_t *trigger_json(const struct alarm_rule *r)
{
    json_t *dims = json_array();
    json_array_append_new(dims, json_pack("{s:s, s:s}", "name", "Topic", "value", r->topic ? r->topic : ""));
    if (r->group)
        json_array_append_new(dims, json_pack("{s:s, s:s}", "name", "ConsumerGroup", "value", r->group));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:i, s:i, s:s, s:f, s:s, s:o}",
                     "MetricName", r->metric, "Namespace", "mailfleet", "StatisticType", "Statistic",
                     "Statistic", statistic_upper(r->statistic),
                     "Unit", "None",
                     "Period", (json_int_t)(r->period_ms / 1000), "EvaluationPeriods",
                     r->evaluation_periods, "DatapointsToAlarm", r->datapoints_to_alarm,
                     "ComparisonOperator", cmp_names[r->cmp], "Threshold", r->threshold,
                     "TreatMissingData", missing_names[r->missing], "Dimensions", dims);
}

static char *record_json(const struct alarm *a, enum alarm_state old, int64_t now_ms)
{
    char ts[32];
    rfc3339_ms(now_ms, ts, sizeof(ts));
    char id[ID_LEN + 1];
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}",
                          "schema", SCHEMA_ALARM, "id", id_new(id), "AlarmName", a->r.name,
                          "AlarmDescription", a->r.description ? a->r.description : "",
                          "NewStateValue", alarm_state_name(a->state),
                          "OldStateValue", alarm_state_name(old),
                          "NewStateReason", a->reason, "StateChangeTime", ts,
                          "Trigger", trigger_json(&a->r));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        panic("%s: json_dumps failed", __func__);
    return s;
}

int alarm_evaluate(struct alarm *a, int has_value, double value, int64_t now_ms,
                   int64_t renotify_ms, char **record)
{
    int np = a->r.evaluation_periods;
    if (a->n == np) {
        memmove(a->has, a->has + 1, (size_t)(np - 1) * sizeof(int));
        memmove(a->val, a->val + 1, (size_t)(np - 1) * sizeof(double));
        a->n--;
    }
    a->has[a->n] = has_value;
    a->val[a->n] = has_value ? value : 0;
    a->n++;

    enum alarm_state old = a->state, next = decide(a);
    *record = NULL;
    if (next != old) {
        a->state = next;
        a->changed_ms = a->notified_ms = now_ms;
        *record = record_json(a, old, now_ms);
        return 1;
    }
    if (next == ALARM_ALARM && renotify_ms > 0 && now_ms - a->notified_ms >= renotify_ms) {
        a->notified_ms = now_ms;
        *record = record_json(a, old, now_ms);
        return 1;
    }
    return 0;
}

char *alarm_status_json(const struct alarm *a)
{
    char ts[32];
    rfc3339_ms(a->changed_ms, ts, sizeof(ts));
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o}", "AlarmName", a->r.name, "StateValue",
                          alarm_state_name(a->state), "StateReason", a->reason,
                          "StateUpdatedTimestamp", a->changed_ms ? ts : "",
                          "Trigger", trigger_json(&a->r));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}
