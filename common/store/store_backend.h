/* store_backend — what store.c dispatches to (internal to common/store*.c).
 *
 * store.c checks keys, content types and arguments once, then calls the
 * backend; a backend never sees an invalid key.  Each backend's struct
 * starts with a struct store so the public handle is the backend's own. */
#ifndef MF_STORE_BACKEND_H
#define MF_STORE_BACKEND_H
#include "store.h"

#include <stdarg.h>

/* What a put reads: fd >= 0 (to EOF) or the buffer. */
struct store_src {
    int fd;
    const void *buf;
    size_t len;
};

struct store_ops {
    int (*put)(struct store *s, const char *key, const struct store_src *src, const char *content_type,
               struct store_object *out, char *err, size_t errlen);
    /* version: NULL for any, else -ESTALE unless the object has it */
    int (*get)(struct store *s, const char *key, const char *version, uint64_t off, uint64_t len,
               store_write_cb cb, void *opaque, char *err, size_t errlen);
    int (*head)(struct store *s, const char *key, struct store_object *out, char *err, size_t errlen);
    int (*del)(struct store *s, const char *key, char *err, size_t errlen);
    int (*list)(struct store *s, const char *prefix, store_list_cb cb, void *opaque, char *err,
                size_t errlen);
    char *(*presign_get)(struct store *s, const char *key, int expires_s, int64_t now_s, char *err,
                         size_t errlen);
    char *(*local_path)(struct store *s, const char *key);
    int (*sync)(struct store *s, char *err, size_t errlen);   /* NULL: nothing to do */
    int (*open_version)(struct store *s, const char *key, const char *version, char *err, size_t errlen);
    void (*close)(struct store *s);
};

struct store {
    const struct store_ops *ops;
    int defer;   /* store_defer_sync: put skips its fsyncs until store_sync */
};

/* dir / the part after "s3://"; return NULL and fill err on failure. */
struct store *store_file_open(const char *dir, char *err, size_t errlen);
struct store *store_s3_open(const char *rest, const struct store_options *opt, char *err, size_t errlen);

/* Formats err and returns code (a negative errno), so error paths are one line. */
int store_err(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define STORE_DEFAULT_CONTENT_TYPE "application/octet-stream"

/* Tests only: make a file store keep content types in sidecars, as it does
 * on filesystems without user xattrs. */
void store_file_force_sidecar(struct store *s);

#endif
