/* store — the public entry points: argument checks, then the backend.
 *
 * Keys, prefixes and content types are checked here, once, for both
 * backends, so a key can never escape a file store's root and an S3 request
 * never carries a key the file backend would refuse (the two stay
 * interchangeable).  Behaviour common to both backends:
 *   - delete of a missing key succeeds (S3 cannot tell, so neither does file:);
 *   - a callback that returns non-zero stops get/list, which return -ECANCELED;
 *   - a range starting at or past the end of a non-empty object is -EINVAL. */
#include "store_backend.h"
#include "fsutil.h"
#include "strbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int store_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int key_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

/* One segment [s, s+n): non-empty, key characters only, not "." or "..". */
static int segment_valid(const char *s, size_t n)
{
    if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!key_char((unsigned char)s[i]))
            return 0;
    return 1;
}

int store_key_valid(const char *key)
{
    size_t n;

    if (!key || (n = strlen(key)) == 0 || n > 1024)
        return 0;
    for (const char *s = key;;) {
        const char *slash = strchr(s, '/');
        size_t seg = slash ? (size_t)(slash - s) : strlen(s);
        if (!segment_valid(s, seg))
            return 0;
        if (!slash)
            return 1;
        s = slash + 1;
    }
}

/* A list prefix: "" or whole valid segments each followed by '/', then an
 * optional partial segment of key characters ("in/2026-", "in/", "a"). */
static int prefix_valid(const char *p)
{
    if (!p)
        return 0;
    if (strlen(p) > 1024)
        return 0;
    for (const char *s = p;;) {
        const char *slash = strchr(s, '/');
        if (!slash) {
            for (; *s; s++)
                if (!key_char((unsigned char)*s))
                    return 0;
            return 1;
        }
        if (!segment_valid(s, (size_t)(slash - s)))
            return 0;
        s = slash + 1;
    }
}

static int content_type_valid(const char *ct)
{
    size_t n = strlen(ct);

    if (n == 0 || n >= sizeof(((struct store_object *)0)->content_type))
        return 0;
    for (; *ct; ct++)
        if ((unsigned char)*ct < 0x20 || (unsigned char)*ct > 0x7e)
            return 0;
    return 1;
}

struct store *store_open(const char *uri, const struct store_options *opt, char *err, size_t errlen)
{
    if (!uri) {
        store_err(err, errlen, -EINVAL, "store: no URI");
        return NULL;
    }
    if (strncmp(uri, "file:", 5) == 0) {
        const char *dir = uri + 5;
        /* accept file:///abs as well as file:/abs and file:rel */
        if (strncmp(dir, "//", 2) == 0)
            dir += 2;
        if (!*dir) {
            store_err(err, errlen, -EINVAL, "store: file: needs a directory");
            return NULL;
        }
        return store_file_open(dir, err, errlen);
    }
    if (strncmp(uri, "s3://", 5) == 0)
        return store_s3_open(uri + 5, opt, err, errlen);
    store_err(err, errlen, -EINVAL, "store: unknown scheme in '%.64s' (file: or s3://)", uri);
    return NULL;
}

void store_close(struct store *s)
{
    if (s)
        s->ops->close(s);
}

#define CHECK_KEY(key)                                                                        \
    do {                                                                                      \
        if (!store_key_valid(key))                                                            \
            return store_err(err, errlen, -EINVAL, "store: invalid key '%.80s'", key ? key : "(null)"); \
    } while (0)

static int put_common(struct store *s, const char *key, const struct store_src *src,
                      const char *content_type, struct store_object *out, char *err, size_t errlen)
{
    struct store_object tmp;

    CHECK_KEY(key);
    if (!content_type)
        content_type = STORE_DEFAULT_CONTENT_TYPE;
    if (!content_type_valid(content_type))
        return store_err(err, errlen, -EINVAL, "store: invalid content type");
    memset(&tmp, 0, sizeof(tmp));
    int rc = s->ops->put(s, key, src, content_type, out ? out : &tmp, err, errlen);
    if (rc == 0 && out && !out->content_type[0])
        snprintf(out->content_type, sizeof(out->content_type), "%s", content_type);
    return rc;
}

int store_put_fd(struct store *s, const char *key, int fd, const char *content_type,
                 struct store_object *out, char *err, size_t errlen)
{
    struct store_src src = { fd, NULL, 0 };

    if (fd < 0)
        return store_err(err, errlen, -EBADF, "store: bad fd");
    if (out)
        memset(out, 0, sizeof(*out));
    return put_common(s, key, &src, content_type, out, err, errlen);
}

int store_put_buf(struct store *s, const char *key, const void *buf, size_t len,
                  const char *content_type, struct store_object *out, char *err, size_t errlen)
{
    struct store_src src = { -1, buf, len };

    if (!buf && len)
        return store_err(err, errlen, -EINVAL, "store: NULL buffer");
    if (out)
        memset(out, 0, sizeof(*out));
    return put_common(s, key, &src, content_type, out, err, errlen);
}

void store_defer_sync(struct store *s, int on)
{
    s->defer = on != 0;
}

int store_sync(struct store *s, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    return s->ops->sync ? s->ops->sync(s, err, errlen) : 0;
}

struct fd_sink { int fd; int err; };

static int fd_sink_write(void *opaque, const void *buf, size_t len)
{
    struct fd_sink *k = opaque;
    int rc = fs_write_all(k->fd, buf, len);

    if (rc < 0) {
        k->err = -rc;
        return 1;
    }
    return 0;
}

int store_get_fd(struct store *s, const char *key, int fd, char *err, size_t errlen)
{
    struct fd_sink k = { fd, 0 };

    int rc = store_get_cb(s, key, 0, 0, fd_sink_write, &k, err, errlen);
    if (rc == -ECANCELED && k.err)
        return store_err(err, errlen, -k.err, "store: writing '%s' out: %s", key, strerror(k.err));
    return rc;
}

int store_get_cb(struct store *s, const char *key, uint64_t off, uint64_t len,
                 store_write_cb cb, void *opaque, char *err, size_t errlen)
{
    CHECK_KEY(key);
    if (!cb)
        return store_err(err, errlen, -EINVAL, "store: no callback");
    if (len && off + len < off)
        return store_err(err, errlen, -EINVAL, "store: range overflows");
    return s->ops->get(s, key, NULL, off, len, cb, opaque, err, errlen);
}

int store_get_version(struct store *s, const char *key, const char *version, uint64_t off, uint64_t len,
                      store_write_cb cb, void *opaque, char *err, size_t errlen)
{
    CHECK_KEY(key);
    if (!cb || !version || !*version)
        return store_err(err, errlen, -EINVAL, "store: no callback or no version");
    if (len && off + len < off)
        return store_err(err, errlen, -EINVAL, "store: range overflows");
    return s->ops->get(s, key, version, off, len, cb, opaque, err, errlen);
}

int store_head(struct store *s, const char *key, struct store_object *out, char *err, size_t errlen)
{
    struct store_object tmp;

    CHECK_KEY(key);
    if (!out)
        out = &tmp;
    memset(out, 0, sizeof(*out));
    return s->ops->head(s, key, out, err, errlen);
}

int store_delete(struct store *s, const char *key, char *err, size_t errlen)
{
    CHECK_KEY(key);
    return s->ops->del(s, key, err, errlen);
}

int store_list(struct store *s, const char *prefix, store_list_cb cb, void *opaque, char *err,
               size_t errlen)
{
    if (!prefix)
        prefix = "";
    if (!prefix_valid(prefix))
        return store_err(err, errlen, -EINVAL, "store: invalid prefix '%.80s'", prefix);
    if (!cb)
        return store_err(err, errlen, -EINVAL, "store: no callback");
    return s->ops->list(s, prefix, cb, opaque, err, errlen);
}

char *store_presign_get(struct store *s, const char *key, int expires_s, int64_t now_s,
                        char *err, size_t errlen)
{
    if (!store_key_valid(key)) {
        store_err(err, errlen, -EINVAL, "store: invalid key");
        return NULL;
    }
    if (expires_s < 1 || expires_s > 604800) {
        store_err(err, errlen, -EINVAL, "store: expiry %d outside 1..604800 s", expires_s);
        return NULL;
    }
    if (!s->ops->presign_get) {
        store_err(err, errlen, -ENOTSUP, "store: this backend cannot pre-sign URLs");
        return NULL;
    }
    return s->ops->presign_get(s, key, expires_s, now_s, err, errlen);
}

char *store_local_path(struct store *s, const char *key)
{
    if (!s || !store_key_valid(key) || !s->ops->local_path)
        return NULL;
    return s->ops->local_path(s, key);
}

int store_open_version(struct store *s, const char *key, const char *version, char *err, size_t errlen)
{
    CHECK_KEY(key);
    if (!version || !*version)
        return store_err(err, errlen, -EINVAL, "store: no version");
    if (!s->ops->open_version)
        return store_err(err, errlen, -ENOTSUP, "store: this backend has no local files");
    return s->ops->open_version(s, key, version, err, errlen);
}
