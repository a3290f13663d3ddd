/* timeutil — clocks and the two text forms of time mailfleet uses. */
#include "timeutil.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mono_ms(void)
{
    return mono_us() / 1000;
}

int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

char *rfc3339_ms(int64_t ms, char *buf, size_t len)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return buf;
}

/* Exactly n digits at p into *out; 0 or -1. */
static int fixed_digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i]))
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

static int days_in_month(int y, int m)
{
    static const int d[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : d[m - 1];
}

/* Strict by hand rather than strptime: strptime skips blanks, takes one-digit
 * fields and accepts February 30 (timegm then silently moves it to March). */
int64_t rfc3339_parse(const char *s)
{
    int y, mo, d, h, mi, sec, frac_ms = 0;
    const char *p = s;

    if (fixed_digits(p, 4, &y) || p[4] != '-' || fixed_digits(p + 5, 2, &mo) || p[7] != '-'
        || fixed_digits(p + 8, 2, &d) || (p[10] != 'T' && p[10] != 't')
        || fixed_digits(p + 11, 2, &h) || p[13] != ':' || fixed_digits(p + 14, 2, &mi)
        || p[16] != ':' || fixed_digits(p + 17, 2, &sec))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
        return -1;
    p += 19;
    if (*p == '.') {
        int digits = 0;
        p++;
        while (isdigit((unsigned char)*p)) {
            if (digits < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            frac_ms *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (fixed_digits(p + 1, 2, &oh) || p[3] != ':' || fixed_digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return -1;
        off = (int64_t)(oh * 60 + om) * 60 * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                     .tm_hour = h, .tm_min = mi, .tm_sec = sec };
    return ((int64_t)timegm(&tm) - off) * 1000 + frac_ms;
}

int64_t duration_parse_ms(const char *s)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    /* plain decimal only: strtod would also take "1e3", "0x10" and "1e400" */
    size_t num = strspn(s, "0123456789.");
    double v = strtod(s, &end);
    if (end == s || v < 0 || (size_t)(end - s) != num)
        return -1;
    double mult;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60e3;
    else if (strcmp(end, "h") == 0)
        mult = 3600e3;
    else if (strcmp(end, "d") == 0)
        mult = 86400e3;
    else
        return -1;
    if (v * mult >= 9.2e18)   /* would not fit int64_t */
        return -1;
    return (int64_t)(v * mult);
}

int sleep_unless_stopped(int64_t ms, stop_flag_t *stop)
{
    while (ms > 0) {
        if (stop && *stop)
            return 1;
        int64_t step = ms > 50 ? 50 : ms;
        struct timespec ts = { 0, (long)(step * 1000000) };
        nanosleep(&ts, NULL);   /* a signal cuts it short: *stop is looked at sooner */
        ms -= step;
    }
    return stop && *stop ? 1 : 0;
}
