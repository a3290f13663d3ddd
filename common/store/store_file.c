/* store_file — the file: backend, one file per key under a root directory.
 *
 * Durability: a put writes "<dir>/.~tmp.XXXXXX" in the key's own directory,
 * fsyncs it, renames it over the key and fsyncs the directory, so a reader
 * sees the old object or the new one, never a torn one, and a put that
 * returned 0 survives a crash.  New sub-directories are fsynced into their
 * parents the same way.  A handle that defers (store_defer_sync) skips all
 * of these fsyncs and store_sync makes them up with one syncfs(2), which
 * writes every dirty file and directory of the filesystem, ours included.
 * Until that sync a machine crash can leave a deferred object missing or
 * torn (even one that replaced a durable copy): a deferring caller commits
 * nothing that names it before the sync, and redoes the put after a crash.
 *
 * Group sync: threads sharing a deferring handle (ingest's pool) each call
 * store_sync after their put; one of them runs the syncfs while the others
 * wait for it, and a sync that began after a put returned covers it.  So
 * under load one syncfs covers every put that piled up during the previous
 * one.  Puts are numbered (put_gen); synced_gen says which are settled.
 * A thread remembers its deferred puts to a handle (the last one's number,
 * and how many rounds had failed at the first one) until its next
 * store_sync on that handle.  syncfs
 * reports a writeback error once per descriptor, so the sync of a put fails
 * when any round failed after the put (the one that covered it may have
 * been led by another thread, and a later round succeeds); the caller
 * redoes its put.  That can fail a put another round covered: rare, and
 * safe.  A thread with no put to settle waits for every put made before its
 * call and fails only if a round fails meanwhile.
 *
 * Content type: kept in the user.mailfleet.content_type extended attribute of
 * the object file, set before the rename so object and type arrive together at
 * no extra fsync.  Where the filesystem refuses user xattrs (ENOTSUP), the type
 * goes to a sidecar "<name>~ct" next to the object instead.  '~' is not a key
 * character, so neither temp files nor sidecars can be named by a key or
 * show up in a listing (which skips every name that is not a valid segment). */
#include "store_backend.h"
#include "digest.h"
#include "fsutil.h"
#include "log.h"
#include "strbuf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define XATTR_CT   "user.mailfleet.content_type"
#define SIDECAR_SFX "~ct"
#define IO_CHUNK   (64 * 1024)

struct file_store {
    struct store base;
    char *root;            /* no trailing '/' */
    int root_fd;           /* kept open: syncfs reports a writeback error once per descriptor */
    int sidecar;           /* 1 once xattrs proved unsupported (or forced by tests) */
    /* group sync (see the top): under sync_mu */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_done;
    uint64_t put_gen;      /* deferred puts finished so far */
    uint64_t synced_gen;   /* puts 1..synced_gen are durable */
    uint64_t n_failed;     /* failed rounds so far */
    int syncing;           /* a thread is in syncfs */
    int sync_errno;        /* the last failed round's error */
};

static const struct store_ops file_ops;

/* This thread's deferred puts not yet synced, per handle (see the top):
 * the last one's number, and how many rounds had failed at the first one.
 * A thread of ours puts to two handles at most; a fifth handle takes the
 * oldest slot, whose handle's next sync then waits for every put and fails
 * only on a failure meanwhile (exact for a handle only that thread uses). */
#define MINE_SLOTS 4
static __thread struct mine {
    const struct file_store *store;
    uint64_t gen, fails;
} mine[MINE_SLOTS];
static __thread unsigned mine_next;

static struct mine *mine_find(const struct file_store *f)
{
    for (unsigned i = 0; i < MINE_SLOTS; i++)
        if (mine[i].store == f)
            return &mine[i];
    return NULL;
}

static struct file_store *fs_of(struct store *s)
{
    if (s->ops != &file_ops)
        panic("%s: not a file store", __func__);
    return (struct file_store *)s;
}

static char *join(const char *root, const char *key)
{
    struct strbuf b;

    strbuf_init(&b);
    strbuf_appendf(&b, "%s/%s", root, key);
    return strbuf_detach(&b, NULL);
}

/* fsyncs the directory that holds dir. */
static int fsync_parent(const char *dir, char *err, size_t errlen)
{
    char *parent = xstrdup(dir);
    *strrchr(parent, '/') = '\0';
    int rc = fs_fsync_dir(parent);
    free(parent);
    return rc < 0 ? store_err(err, errlen, rc, "store: fsync of a directory: %s", strerror(-rc)) : 0;
}

/* mkdir -p for the directories of path below root; each directory made here
 * is fsynced into its parent so the later rename cannot be lost with it
 * (unless sync is 0: the caller's store_sync covers it). */
static int make_parents(const char *root, const char *path, int sync, char *err, size_t errlen)
{
    char *p = xstrdup(path);
    size_t rootlen = strlen(root);
    int rc = 0;

    for (char *s = p + rootlen + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        if (mkdir(p, 0750) == 0) {
            if (sync && (rc = fsync_parent(p, err, errlen)) < 0)
                break;
        } else if (errno != EEXIST) {
            rc = store_err(err, errlen, -errno, "store: mkdir for key: %s", strerror(errno));
            break;
        } else {
            struct stat st;
            if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode)) {
                rc = store_err(err, errlen, -ENOTDIR, "store: a key is in the way of a directory");
                break;
            }
        }
        *s = '/';
    }
    free(p);
    return rc;
}

/* Writes the sidecar for path atomically (temp, fsync unless sync is 0,
 * rename); the caller fsyncs the directory once for both renames. */
static int sidecar_write(const char *dir, const char *path, const char *ct, int sync)
{
    struct strbuf tmp, sc;
    int rc = 0;

    strbuf_init(&tmp);
    strbuf_init(&sc);
    strbuf_appendf(&tmp, "%s/.~tmp.XXXXXX", dir);
    strbuf_appendf(&sc, "%s" SIDECAR_SFX, path);
    int fd = mkostemp(tmp.data, O_CLOEXEC);   /* dir exists: the object's temp file is in it */
    if (fd < 0) {
        rc = -errno;
    } else {
        rc = fs_write_all(fd, ct, strlen(ct));
        if (rc == 0 && sync && fsync(fd) < 0)
            rc = -errno;
        close(fd);
        if (rc == 0 && rename(tmp.data, sc.data) < 0)
            rc = -errno;
        if (rc < 0)
            unlink(tmp.data);
    }
    strbuf_free(&tmp);
    strbuf_free(&sc);
    return rc;
}

static void content_type_read(struct file_store *f, const char *path, char *out, size_t outlen)
{
    ssize_t n = -1;

    if (!__atomic_load_n(&f->sidecar, __ATOMIC_RELAXED))
        n = getxattr(path, XATTR_CT, out, outlen - 1);
    if (n < 0) {
        /* also covers objects written while this store used sidecars */
        struct strbuf sc;
        strbuf_init(&sc);
        strbuf_appendf(&sc, "%s" SIDECAR_SFX, path);
        int fd = open(sc.data, O_RDONLY | O_CLOEXEC);
        strbuf_free(&sc);
        if (fd >= 0) {
            n = read(fd, out, outlen - 1);
            close(fd);
        }
    }
    if (n <= 0)
        snprintf(out, outlen, "%s", STORE_DEFAULT_CONTENT_TYPE);
    else
        out[n] = '\0';
}

/* mkostemp in dir; *tmp gets the (malloc'd) name either way. */
static int temp_create(const char *dir, char **tmp)
{
    struct strbuf t;

    strbuf_init(&t);
    strbuf_appendf(&t, "%s/.~tmp.XXXXXX", dir);
    *tmp = strbuf_detach(&t, NULL);
    return mkostemp(*tmp, O_CLOEXEC);
}

static int64_t mtime_ms(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000;
}

/* store_object.version: a put renames a new file over the key, so the inode
 * changes; size and mtime catch a foreign writer that rewrites in place. */
static void file_version(const struct stat *st, char *out, size_t outlen)
{
    snprintf(out, outlen, "%llx-%llx-%llx.%lx", (unsigned long long)st->st_ino, (unsigned long long)st->st_size,
             (unsigned long long)st->st_mtim.tv_sec, (unsigned long)st->st_mtim.tv_nsec);
}

/* The temp file a put writes into, in dir.  Directories usually exist
 * already: try the temp file first and make the parents only when it says
 * ENOENT, which keeps a put to an existing directory at one create, one
 * rename, two fsyncs.  Returns the descriptor with *tmp its (malloc'd) name,
 * or <0 with err set and *tmp NULL. */
static int put_temp_open(struct file_store *f, const char *dir, const char *path, char **tmp, char *err,
                         size_t errlen)
{
    int fd = temp_create(dir, tmp);

    if (fd < 0 && errno == ENOENT && strcmp(dir, f->root) != 0) {
        free(*tmp);
        *tmp = NULL;
        int rc = make_parents(f->root, path, !f->base.defer, err, errlen);
        if (rc < 0)
            return rc;
        fd = temp_create(dir, tmp);
    }
    if (fd < 0) {
        int rc = store_err(err, errlen, -errno, "store: creating temp file: %s", strerror(errno));
        free(*tmp);
        *tmp = NULL;
        return rc;
    }
    return fd;
}

/* Copies the put's source into fd, hashing it on the way; *size gets the
 * number of bytes.  0, or <0 with err set. */
static int put_copy(int fd, const struct store_src *src, const char *key, EVP_MD_CTX *md_ctx, uint64_t *size,
                    char *err, size_t errlen)
{
    int rc = 0;

    if (src->fd < 0) {
        EVP_DigestUpdate(md_ctx, src->buf, src->len);
        rc = fs_write_all(fd, src->buf, src->len);
        if (rc < 0)
            store_err(err, errlen, rc, "store: writing '%s': %s", key, strerror(-rc));
        *size = src->len;
        return rc;
    }
    char *buf = xmalloc(IO_CHUNK);
    for (;;) {
        ssize_t n = read(src->fd, buf, IO_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = store_err(err, errlen, -errno, "store: reading input: %s", strerror(errno));
            break;
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(md_ctx, buf, (size_t)n);
        rc = fs_write_all(fd, buf, (size_t)n);
        if (rc < 0) {
            store_err(err, errlen, rc, "store: writing '%s': %s", key, strerror(-rc));
            break;
        }
        *size += (uint64_t)n;
    }
    free(buf);
    return rc;
}

/* Sets the content type as an xattr on fd, unless the store already keeps
 * sidecars.  A file system without xattrs switches the store to sidecars for
 * good.  *sidecar says whether the caller must write one; 0 or <0. */
static int put_content_type(struct file_store *f, int fd, const char *ct, int *sidecar, char *err,
                            size_t errlen)
{
    *sidecar = __atomic_load_n(&f->sidecar, __ATOMIC_RELAXED);
    if (*sidecar || fsetxattr(fd, XATTR_CT, ct, strlen(ct), 0) == 0)
        return 0;
    if (errno != ENOTSUP && errno != EOPNOTSUPP)
        return store_err(err, errlen, -errno, "store: setting content type: %s", strerror(errno));
    /* every thread that races here reaches the same answer */
    __atomic_store_n(&f->sidecar, 1, __ATOMIC_RELAXED);
    *sidecar = 1;
    return 0;
}

static int file_put(struct store *s, const char *key, const struct store_src *src, const char *ct,
                    struct store_object *out, char *err, size_t errlen)
{
    struct file_store *f = fs_of(s);
    char *path = join(f->root, key);
    char *dir = xstrdup(path);
    char *tmp = NULL;
    uint64_t size = 0;
    int fd = -1, rc = 0, sidecar = 0;
    EVP_MD_CTX *md_ctx = EVP_MD_CTX_new();

    if (!md_ctx)
        panic("%s: out of memory", __func__);
    *strrchr(dir, '/') = '\0';
    fd = put_temp_open(f, dir, path, &tmp, err, errlen);
    if (fd < 0) {
        rc = fd;
        goto out;
    }
    fchmod(fd, 0640);
    if (!EVP_DigestInit_ex(md_ctx, EVP_sha256(), NULL))
        panic("%s: EVP_DigestInit_ex failed", __func__);
    rc = put_copy(fd, src, key, md_ctx, &size, err, errlen);
    if (rc < 0)
        goto out;
    rc = put_content_type(f, fd, ct, &sidecar, err, errlen);
    if (rc < 0)
        goto out;
    if (!f->base.defer && fsync(fd) < 0) {
        rc = store_err(err, errlen, -errno, "store: fsync '%s': %s", key, strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = store_err(err, errlen, -errno, "store: fstat: %s", strerror(errno));
        goto out;
    }
    if (sidecar) {
        rc = sidecar_write(dir, path, ct, !f->base.defer);
        if (rc < 0) {
            store_err(err, errlen, rc, "store: writing content type: %s", strerror(-rc));
            goto out;
        }
    }
    if (rename(tmp, path) < 0) {
        rc = store_err(err, errlen, -errno, "store: rename to '%s': %s", key, strerror(errno));
        goto out;
    }
    free(tmp);
    tmp = NULL;
    rc = f->base.defer ? 0 : fs_fsync_dir(dir);
    if (rc < 0) {
        store_err(err, errlen, rc, "store: fsync of the directory: %s", strerror(-rc));
        goto out;
    }
    if (f->base.defer) {
        pthread_mutex_lock(&f->sync_mu);
        struct mine *me = mine_find(f);
        if (!me) {
            me = mine_find(NULL);
            if (!me)
                me = &mine[mine_next++ % MINE_SLOTS];
            *me = (struct mine){ f, 0, f->n_failed };
        }
        me->gen = ++f->put_gen;
        pthread_mutex_unlock(&f->sync_mu);
    }
    sha256_final_hex(md_ctx, out->sha256);
    out->size = size;
    out->mtime_ms = mtime_ms(&st);
    snprintf(out->content_type, sizeof(out->content_type), "%s", ct);

out:
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    EVP_MD_CTX_free(md_ctx);
    free(dir);
    free(path);
    return rc;
}

/* Opens a key for reading; -ENOENT for anything that is not a regular file. */
static int open_object(struct file_store *f, const char *key, struct stat *st, char *err, size_t errlen)
{
    char *path = join(f->root, key);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    int e = errno;

    free(path);
    if (fd < 0) {
        if (e == ENOENT || e == ENOTDIR || e == ELOOP)
            return store_err(err, errlen, -ENOENT, "store: no object '%s'", key);
        return store_err(err, errlen, -e, "store: opening '%s': %s", key, strerror(e));
    }
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        return store_err(err, errlen, -ENOENT, "store: no object '%s'", key);
    }
    return fd;
}

/* open_object of that version only (NULL: any): -ESTALE once a put renamed
 * another file over the key.  The descriptor keeps reading the file that was
 * checked, whatever happens to the key afterwards. */
static int open_version(struct file_store *f, const char *key, const char *version, struct stat *st, char *err,
                        size_t errlen)
{
    int fd = open_object(f, key, st, err, errlen);

    if (fd < 0 || !version)
        return fd;
    char v[sizeof(((struct store_object *)0)->version)];
    file_version(st, v, sizeof(v));
    if (strcmp(v, version) != 0) {
        close(fd);
        return store_err(err, errlen, -ESTALE, "store: '%s' was replaced", key);
    }
    return fd;
}

static int file_get(struct store *s, const char *key, const char *version, uint64_t off, uint64_t len,
                    store_write_cb cb, void *opaque, char *err, size_t errlen)
{
    struct stat st;
    int fd = open_version(fs_of(s), key, version, &st, err, errlen);
    int rc = 0;

    if (fd < 0)
        return fd;
    uint64_t size = (uint64_t)st.st_size;
    if (off > 0 && off >= size) {
        close(fd);
        return store_err(err, errlen, -EINVAL, "store: range starts past the end of '%s'", key);
    }
    uint64_t left = size - off;
    if (len && len < left)
        left = len;
    char *buf = xmalloc(IO_CHUNK);
    while (left > 0) {
        size_t want = left < IO_CHUNK ? (size_t)left : IO_CHUNK;
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = store_err(err, errlen, -errno, "store: reading '%s': %s", key, strerror(errno));
            break;
        }
        if (n == 0)
            break;   /* shrank under us: a put never truncates in place, so only foreign writers */
        if (cb(opaque, buf, (size_t)n) != 0) {
            rc = store_err(err, errlen, -ECANCELED, "store: get of '%s' stopped by the reader", key);
            break;
        }
        off += (uint64_t)n;
        left -= (uint64_t)n;
    }
    free(buf);
    close(fd);
    return rc;
}

static int file_head(struct store *s, const char *key, struct store_object *out, char *err, size_t errlen)
{
    struct file_store *f = fs_of(s);
    struct stat st;
    int fd = open_object(f, key, &st, err, errlen);

    if (fd < 0)
        return fd;
    out->size = (uint64_t)st.st_size;
    out->mtime_ms = mtime_ms(&st);
    file_version(&st, out->version, sizeof(out->version));
    {
        char *path = join(f->root, key);
        content_type_read(f, path, out->content_type, sizeof(out->content_type));
        free(path);
    }
    close(fd);
    return 0;
}

static int file_del(struct store *s, const char *key, char *err, size_t errlen)
{
    struct file_store *f = fs_of(s);
    char *path = join(f->root, key);
    struct strbuf sc;
    int rc = 0;
    struct stat st;

    if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        free(path);
        return 0;   /* a "directory key" is no object: nothing to delete */
    }
    if (unlink(path) < 0 && errno != ENOENT && errno != ENOTDIR)
        rc = store_err(err, errlen, -errno, "store: deleting '%s': %s", key, strerror(errno));
    strbuf_init(&sc);
    strbuf_appendf(&sc, "%s" SIDECAR_SFX, path);
    unlink(sc.data);
    strbuf_free(&sc);
    free(path);
    return rc;
}

struct list_ent {
    char *key;
    struct store_object obj;
};

struct list_acc {
    struct list_ent *v;
    size_t n, cap;
};

static int list_ent_cmp(const void *a, const void *b)
{
    return strcmp(((const struct list_ent *)a)->key, ((const struct list_ent *)b)->key);
}

static int name_is_segment(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || (n == 1 && name[0] == '.') || (n == 2 && name[0] == '.' && name[1] == '.'))
        return 0;
    for (; *name; name++) {
        unsigned char c = (unsigned char)*name;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Walks dir (the directory of key prefix rel, "" for the root); keys must
 * start with prefix.  Depth is bounded by the 1024-byte key limit. */
static int walk(const char *dir, const char *rel, const char *prefix, struct list_acc *acc, char *err,
                size_t errlen)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int rc = 0;

    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0;
        return store_err(err, errlen, -errno, "store: listing: %s", strerror(errno));
    }
    while ((de = readdir(d)) != NULL) {
        if (!name_is_segment(de->d_name))
            continue;
        struct strbuf key, path;
        strbuf_init(&key);
        strbuf_init(&path);
        strbuf_appendf(&key, "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        strbuf_appendf(&path, "%s/%s", dir, de->d_name);
        size_t plen = strlen(prefix);
        /* descend only where the prefix can still match */
        size_t cmp = key.len < plen ? key.len : plen;
        struct stat st;
        if (key.len <= 1024 && strncmp(key.data, prefix, cmp) == 0 && lstat(path.data, &st) == 0) {
            if (S_ISDIR(st.st_mode)) {
                rc = walk(path.data, key.data, prefix, acc, err, errlen);
            } else if (S_ISREG(st.st_mode) && key.len >= plen) {
                if (acc->n == acc->cap) {
                    acc->cap = acc->cap ? 2 * acc->cap : 64;
                    acc->v = xrealloc(acc->v, acc->cap * sizeof(*acc->v));
                }
                struct list_ent *e = &acc->v[acc->n++];
                memset(&e->obj, 0, sizeof(e->obj));
                e->obj.size = (uint64_t)st.st_size;
                e->obj.mtime_ms = mtime_ms(&st);
                e->key = strbuf_detach(&key, NULL);
            }
        }
        strbuf_free(&key);
        strbuf_free(&path);
        if (rc < 0)
            break;
    }
    closedir(d);
    return rc;
}

static int file_list(struct store *s, const char *prefix, store_list_cb cb, void *opaque, char *err,
                     size_t errlen)
{
    struct file_store *f = fs_of(s);
    struct list_acc acc = { NULL, 0, 0 };
    const char *slash = strrchr(prefix, '/');
    char *rel = slash ? xstrndup(prefix, (size_t)(slash - prefix)) : xstrdup("");
    char *dir = *rel ? join(f->root, rel) : xstrdup(f->root);
    int rc = walk(dir, rel, prefix, &acc, err, errlen);

    free(dir);
    free(rel);
    if (rc == 0 && acc.n > 1)
        qsort(acc.v, acc.n, sizeof(*acc.v), list_ent_cmp);
    for (size_t i = 0; i < acc.n; i++) {
        if (rc == 0 && cb(opaque, acc.v[i].key, &acc.v[i].obj) != 0)
            rc = store_err(err, errlen, -ECANCELED, "store: listing stopped by the reader");
        free(acc.v[i].key);
    }
    free(acc.v);
    return rc;
}

static char *file_local_path(struct store *s, const char *key)
{
    return join(fs_of(s)->root, key);
}

/* Makes every deferred put that returned before this call durable: one
 * syncfs of the store's filesystem (every file and directory written since
 * the last one, ours included), shared by the threads that ask meanwhile
 * (see the top).  syncfs reports writeback errors since Linux 5.8 (Debian 12
 * runs 6.1). */
static int file_sync(struct store *s, char *err, size_t errlen)
{
    struct file_store *f = fs_of(s);

    pthread_mutex_lock(&f->sync_mu);
    uint64_t gen = f->put_gen, fails = f->n_failed;
    struct mine *me = mine_find(f);
    if (me && me->gen <= f->put_gen) {   /* <=: not a closed handle's reused address */
        gen = me->gen;
        fails = me->fails;
    }
    if (me)
        me->store = NULL;
    while (f->synced_gen < gen) {
        if (f->syncing) {
            pthread_cond_wait(&f->sync_done, &f->sync_mu);
            continue;
        }
        /* leader: this round covers every put finished until now */
        uint64_t target = f->put_gen;
        f->syncing = 1;
        pthread_mutex_unlock(&f->sync_mu);
        int e = syncfs(f->root_fd) < 0 ? errno : 0;
        pthread_mutex_lock(&f->sync_mu);
        f->syncing = 0;
        f->synced_gen = target;   /* each put of the round is durable, or failed */
        if (e) {
            f->sync_errno = e;
            f->n_failed++;
        }
        pthread_cond_broadcast(&f->sync_done);
    }
    int failed = f->n_failed != fails;
    int e = f->sync_errno;
    pthread_mutex_unlock(&f->sync_mu);
    if (failed)
        return store_err(err, errlen, -e, "store: syncfs of '%s': %s", f->root, strerror(e));
    return 0;
}

static int file_open_version(struct store *s, const char *key, const char *version, char *err, size_t errlen)
{
    struct stat st;

    return open_version(fs_of(s), key, version, &st, err, errlen);
}

static void file_close(struct store *s)
{
    struct file_store *f = fs_of(s);

    close(f->root_fd);
    struct mine *me = mine_find(f);
    if (me)
        me->store = NULL;
    pthread_mutex_destroy(&f->sync_mu);
    pthread_cond_destroy(&f->sync_done);
    free(f->root);
    free(f);
}

static const struct store_ops file_ops = {
    .put = file_put,
    .get = file_get,
    .head = file_head,
    .del = file_del,
    .list = file_list,
    .presign_get = NULL,
    .local_path = file_local_path,
    .sync = file_sync,
    .open_version = file_open_version,
    .close = file_close,
};

struct store *store_file_open(const char *dir, char *err, size_t errlen)
{
    size_t n = strlen(dir);
    struct stat st;

    while (n > 1 && dir[n - 1] == '/')
        n--;
    char *root = xstrndup(dir, n);
    int rc = fs_mkdir_p(root, 0750);
    if (rc < 0 || stat(root, &st) < 0 || !S_ISDIR(st.st_mode)) {
        store_err(err, errlen, rc < 0 ? rc : -ENOTDIR, "store: cannot use directory '%s': %s", root,
                  strerror(rc < 0 ? -rc : ENOTDIR));
        free(root);
        return NULL;
    }
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        store_err(err, errlen, -errno, "store: cannot open directory '%s': %s", root, strerror(errno));
        free(root);
        return NULL;
    }
    struct file_store *f = xcalloc(1, sizeof(*f));
    f->base.ops = &file_ops;
    f->root = root;
    f->root_fd = fd;
    pthread_mutex_init(&f->sync_mu, NULL);
    pthread_cond_init(&f->sync_done, NULL);
    return &f->base;
}

void store_file_force_sidecar(struct store *s)
{
    __atomic_store_n(&fs_of(s)->sidecar, 1, __ATOMIC_RELAXED);
}
