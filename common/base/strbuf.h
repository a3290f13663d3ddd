/* strbuf — a growable byte buffer.  Out of memory is fatal (crash-only workers). */
#ifndef MF_STRBUF_H
#define MF_STRBUF_H
#include <stddef.h>

struct strbuf {
    char  *data;    /* always NUL-terminated when len > 0 or after init */
    size_t len;
    size_t cap;
};

void strbuf_init(struct strbuf *b);
void strbuf_free(struct strbuf *b);
void strbuf_reset(struct strbuf *b);
void strbuf_reserve(struct strbuf *b, size_t extra);
void strbuf_append(struct strbuf *b, const char *s);
void strbuf_append_n(struct strbuf *b, const void *p, size_t n);
void strbuf_appendf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a quoted JSON string (control chars, quotes, backslashes escaped;
 * invalid UTF-8 bytes replaced by U+FFFD so output is always valid JSON). */
void strbuf_append_json_string(struct strbuf *b, const char *s);
/* Hands the buffer to the caller (free() it); b is left empty. */
char *strbuf_detach(struct strbuf *b, size_t *len);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
