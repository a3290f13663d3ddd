/* log — JSON lines on stderr.  Escaping is done here once for every caller. */
#include "log.h"
#include "timeutil.h"
#include "strbuf.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *default_worker = "mailfleet";
static __thread const char *thread_worker;
static enum log_level min_level = LOG_INFO;
static const char *level_names[] = { "debug", "info", "warn", "error" };

void log_init(const char *worker, enum log_level min)
{
    if (worker)
        default_worker = worker;
    min_level = min;
}

/* Also names the thread "mf-<worker>" (15 bytes at most), so that top -H,
 * perf and /proc/<pid>/task/<tid>/comm tell the workers of `mailfleet run`
 * apart. */
void log_set_worker(const char *worker)
{
    thread_worker = worker;
    char name[16];
    snprintf(name, sizeof(name), "mf-%s", worker);
    pthread_setname_np(pthread_self(), name);
}

enum log_level log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return (enum log_level)i;
    return (enum log_level)-1;
}

static void emit(enum log_level lvl, const char *msg, va_list *kv)
{
    struct strbuf b;
    char ts[32];

    strbuf_init(&b);
    rfc3339_ms(now_ms(), ts, sizeof(ts));
    strbuf_appendf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"worker\":", ts, level_names[lvl]);
    strbuf_append_json_string(&b, thread_worker ? thread_worker : default_worker);
    strbuf_append(&b, ",\"msg\":");
    strbuf_append_json_string(&b, msg);
    if (kv) {
        const char *k;
        while ((k = va_arg(*kv, const char *)) != NULL) {
            const char *v = va_arg(*kv, const char *);
            strbuf_append(&b, ",");
            strbuf_append_json_string(&b, k);
            strbuf_append(&b, ":");
            strbuf_append_json_string(&b, v ? v : "");
        }
    }
    strbuf_append(&b, "}\n");
    ssize_t rc = write(STDERR_FILENO, b.data, b.len);
    (void)rc;
    strbuf_free(&b);
}

void log_kv(enum log_level lvl, const char *msg, ...)
{
    va_list ap;

    if (lvl < min_level)
        return;
    va_start(ap, msg);
    emit(lvl, msg, &ap);
    va_end(ap);
}

void log_msgf(enum log_level lvl, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;

    if (lvl < min_level)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    emit(lvl, buf, NULL);
}

void panic(const char *fmt, ...)
{
    char buf[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    emit(LOG_ERROR, buf, NULL);
    abort();
}
