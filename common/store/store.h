/* store — objects by key, two backends.
 *
 *   file:<dir>    write temp, fsync, rename, fsync dir.  Keys are checked:
 *                 [A-Za-z0-9._-] segments separated by '/', no "." or ".."
 *                 segments, no leading '/', at most 1024 bytes; anything else
 *                 is -EINVAL, so a key can never escape the root.
 *   s3://<bucket>/<prefix>?endpoint=http://127.0.0.1:4568&region=us-east-1&path_style=1
 *                 libcurl, SigV4 (common/sigv4).  Credentials from the options
 *                 or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
 *
 * Every call returns 0 or a negative errno-style code and fills err.
 * -ENOENT means the object does not exist. */
#ifndef MF_STORE_H
#define MF_STORE_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct store;

struct store_options {
    const char *access_key;
    const char *secret_key;
    const char *session_token;
};

struct store_object {
    uint64_t size;
    char sha256[65];           /* hex, filled by put */
    char content_type[128];    /* filled by head/put */
    int64_t mtime_ms;          /* filled by head/list */
    char version[128];         /* filled by head: differs once the key holds another
                                  object (S3: the ETag; file: inode, size, mtime) */
};

struct store *store_open(const char *uri, const struct store_options *opt, char *err, size_t errlen);
void store_close(struct store *s);   /* accepts NULL */
int store_key_valid(const char *key);   /* 1 / 0, same rule for both backends */

/* Streams from fd (read to EOF) / buffer; out gets size and SHA-256. */
int store_put_fd(struct store *s, const char *key, int fd, const char *content_type,
                 struct store_object *out, char *err, size_t errlen);
int store_put_buf(struct store *s, const char *key, const void *buf, size_t len,
                  const char *content_type, struct store_object *out, char *err, size_t errlen);

/* Streams the object (or the byte range [off, off+len), len 0 = to the end)
 * to fd or to a callback; the callback returns 0 to go on, non-zero to stop. */
typedef int (*store_write_cb)(void *opaque, const void *buf, size_t len);
int store_get_fd(struct store *s, const char *key, int fd, char *err, size_t errlen);
int store_get_cb(struct store *s, const char *key, uint64_t off, uint64_t len,
                 store_write_cb cb, void *opaque, char *err, size_t errlen);
/* store_get_cb of one version of the object (store_object.version from
 * store_head), for reading it in pieces: -ESTALE, before any byte reaches cb,
 * once the key holds another object.  s3: a piece (len > 0) gets 15 s per MiB
 * in all, else -ETIMEDOUT, so a stalled store cannot hold the caller long. */
int store_get_version(struct store *s, const char *key, const char *version, uint64_t off, uint64_t len,
                      store_write_cb cb, void *opaque, char *err, size_t errlen);
int store_head(struct store *s, const char *key, struct store_object *out, char *err, size_t errlen);
int store_delete(struct store *s, const char *key, char *err, size_t errlen);

/* Calls cb for each key under prefix (sorted for file:, S3 order for s3:). */
typedef int (*store_list_cb)(void *opaque, const char *key, const struct store_object *obj);
int store_list(struct store *s, const char *prefix, store_list_cb cb, void *opaque, char *err,
               size_t errlen);

/* Pre-signed GET URL (s3 only; -ENOTSUP for file), expires 1..604800 s,
 * signing time now_s (seconds since epoch).  Returns malloc'd URL or NULL. */
char *store_presign_get(struct store *s, const char *key, int expires_s, int64_t now_s,
                        char *err, size_t errlen);

/* Batches.  With defer on, this handle's file-store puts skip their fsyncs
 * (data, directory, new sub-directories), and store_sync() then makes every
 * put made through the handle since the last sync durable at once (one
 * syncfs of its filesystem): a worker loop pays one sync per batch instead
 * of three or four per object.  A put is not durable before that sync, so
 * only a caller that commits nothing before it may defer (worker_loop's
 * before_commit).  Threads may share a deferring handle: store_sync makes
 * every put that returned before it durable, and the threads that call it
 * at the same time share one syncfs (group sync: ingest's pool calls it
 * after each put, before the 250).  A failed sync fails every put it was
 * to cover; their callers redo them.  s3: puts are durable when they
 * return; store_sync does nothing.  store_defer_sync is set before the
 * handle is shared. */
void store_defer_sync(struct store *s, int on);
int store_sync(struct store *s, char *err, size_t errlen);

/* file: only — the path of a key, so a reader can open it seekably (GMime).
 * Returns malloc'd path, or NULL for s3 stores / bad keys. */
char *store_local_path(struct store *s, const char *key);

/* file: only — a read-only descriptor of that version of the object
 * (store_object.version from store_head), so what it reads is what the head
 * described: -ESTALE once the key holds another object, -ENOTSUP for s3. */
int store_open_version(struct store *s, const char *key, const char *version, char *err, size_t errlen);

#endif
