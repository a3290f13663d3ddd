/* log — one JSON object per line on stderr.
 *
 * {"ts":"2026-11-26T10:00:00.123Z","level":"info","worker":"ingest","msg":"...","id":"..."}
 * Extra fields come as key/value string pairs ending with NULL.  Values are
 * JSON-escaped here, so callers never build JSON by hand.  Never pass message
 * bodies, AUTH data or keys.  Thread-safe (one write(2) per line). */
#ifndef MF_LOG_H
#define MF_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_init(const char *worker, enum log_level min);
void log_set_worker(const char *worker);          /* per thread (mailfleet run) */
enum log_level log_level_parse(const char *s);    /* "debug".."error", -1 on bad */

/* log_kv(LOG_INFO, "message accepted", "id", id, "size", "123", NULL) */
void log_kv(enum log_level lvl, const char *msg, ...) __attribute__((sentinel));

/* printf-style message, no extra fields */
void log_msgf(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_info(...)  log_msgf(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msgf(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msgf(LOG_ERROR, __VA_ARGS__)
#define log_debug(...) log_msgf(LOG_DEBUG, __VA_ARGS__)

/* Broken invariant: log and abort. */
void panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
