/* store: the key rule, the file: backend end to end in a temp directory, and
 * the parts of s3:// that need no network (URI parsing, pre-signed URLs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "digest.h"
#include "process.h"
#include "sigv4.h"
#include "store.h"
#include "store_backend.h"
#include "strbuf.h"

static void test_key_valid(void **state)
{
    static const struct { const char *key; int ok; } cases[] = {
        { "a", 1 },
        { "incoming/2026/11/26/abc-DEF_0.eml", 1 },
        { "..a", 1 },
        { "a..", 1 },
        { ".hidden", 1 },
        { "", 0 },
        { "/a", 0 },
        { "a/", 0 },
        { "a//b", 0 },
        { ".", 0 },
        { "..", 0 },
        { "a/../b", 0 },
        { "a/./b", 0 },
        { "../etc/passwd", 0 },
        { "a b", 0 },
        { "a~ct", 0 },
        { "a\\b", 0 },
        { "a\nb", 0 },
        { "caf\xc3\xa9", 0 },
        { "a%2F", 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (store_key_valid(cases[i].key) != cases[i].ok)
            fail_msg("key '%s': want %d", cases[i].key, cases[i].ok);
    assert_int_equal(store_key_valid(NULL), 0);
    char big[1026];
    memset(big, 'k', sizeof(big));
    big[1024] = '\0';
    assert_int_equal(store_key_valid(big), 1);
    big[1024] = 'k';
    big[1025] = '\0';
    assert_int_equal(store_key_valid(big), 0);
}

struct fixture {
    char dir[64];
    char uri[80];
    struct store *s;
};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));
    char err[256];

    snprintf(f->dir, sizeof(f->dir), "/tmp/mf-store-test-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->uri, sizeof(f->uri), "file:%s/root", f->dir);
    f->s = store_open(f->uri, NULL, err, sizeof(err));
    if (!f->s)
        return -1;
    *state = f;
    return 0;
}

static void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char sub[1024];
            snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
            rm_rf(sub);
        }
        if (d)
            closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->s);
    rm_rf(f->dir);
    free(f);
    return 0;
}

/* Counts the store's fsyncs and syncfs calls: these definitions take the
 * place of libc's for the code linked into this test, and make the real
 * calls. */
static int fsyncs, syncfses;
int fsync(int fd)
{
    fsyncs++;
    return (int)syscall(SYS_fsync, fd);
}
/* syncfs also has a gate the group-sync tests close to hold a round open,
 * and an errno it can fail with. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_closed, gate_entered, syncfs_errno;
int syncfs(int fd)
{
    pthread_mutex_lock(&gate_mu);
    syncfses++;
    gate_entered++;
    pthread_cond_broadcast(&gate_cv);
    while (gate_closed)
        pthread_cond_wait(&gate_cv, &gate_mu);
    int e = syncfs_errno;
    pthread_mutex_unlock(&gate_mu);
    if (e) {
        errno = e;
        return -1;
    }
    return (int)syscall(SYS_syncfs, fd);
}

static void gate_set(int closed, int fail_errno)
{
    pthread_mutex_lock(&gate_mu);
    gate_closed = closed;
    syncfs_errno = fail_errno;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

static void gate_wait_entered(int n)
{
    pthread_mutex_lock(&gate_mu);
    while (gate_entered < n)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
}

static int collect(void *opaque, const void *buf, size_t len)
{
    strbuf_append_n(opaque, buf, len);
    return 0;
}

static char *get_all(struct store *s, const char *key, uint64_t off, uint64_t len, int *rc, size_t *n)
{
    struct strbuf b;
    char err[256];
    strbuf_init(&b);
    *rc = store_get_cb(s, key, off, len, collect, &b, err, sizeof(err));
    return strbuf_detach(&b, n);
}

static void test_put_get_head_delete(void **state)
{
    struct fixture *f = *state;
    struct store_object o;
    char err[256];
    int rc;
    size_t n;
    static const char data[] = "hello\0world\r\n\xff\x00\x01";

    assert_int_equal(store_put_buf(f->s, "a/b/c.bin", data, sizeof(data), "application/x-test", &o, err,
                                   sizeof(err)), 0);
    assert_int_equal(o.size, sizeof(data));
    char want[65];
    sha256_hex(data, sizeof(data), want);
    assert_string_equal(o.sha256, want);
    assert_string_equal(o.content_type, "application/x-test");

    char *got = get_all(f->s, "a/b/c.bin", 0, 0, &rc, &n);
    assert_int_equal(rc, 0);
    assert_int_equal(n, sizeof(data));
    assert_memory_equal(got, data, sizeof(data));
    free(got);

    memset(&o, 0, sizeof(o));
    assert_int_equal(store_head(f->s, "a/b/c.bin", &o, err, sizeof(err)), 0);
    assert_int_equal(o.size, sizeof(data));
    assert_string_equal(o.content_type, "application/x-test");
    assert_true(o.mtime_ms > 1700000000000LL);

    /* overwrite replaces content and type */
    assert_int_equal(store_put_buf(f->s, "a/b/c.bin", "xy", 2, NULL, &o, err, sizeof(err)), 0);
    assert_int_equal(store_head(f->s, "a/b/c.bin", &o, err, sizeof(err)), 0);
    assert_int_equal(o.size, 2);
    assert_string_equal(o.content_type, "application/octet-stream");

    assert_int_equal(store_delete(f->s, "a/b/c.bin", err, sizeof(err)), 0);
    assert_int_equal(store_head(f->s, "a/b/c.bin", &o, err, sizeof(err)), -ENOENT);
    got = get_all(f->s, "a/b/c.bin", 0, 0, &rc, &n);
    assert_int_equal(rc, -ENOENT);
    free(got);
    /* delete is idempotent; a directory is not an object */
    assert_int_equal(store_delete(f->s, "a/b/c.bin", err, sizeof(err)), 0);
    assert_int_equal(store_head(f->s, "a/b", &o, err, sizeof(err)), -ENOENT);
    assert_int_equal(store_put_buf(f->s, "empty", "", 0, "text/plain", &o, err, sizeof(err)), 0);
    assert_string_equal(o.sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    got = get_all(f->s, "empty", 0, 0, &rc, &n);
    assert_int_equal(rc, 0);
    assert_int_equal(n, 0);
    free(got);
}

static void test_ranges(void **state)
{
    struct fixture *f = *state;
    char err[256];
    static const struct { uint64_t off, len; int rc; const char *want; } cases[] = {
        { 0, 0, 0, "0123456789" },
        { 0, 3, 0, "012" },
        { 3, 4, 0, "3456" },
        { 7, 0, 0, "789" },
        { 8, 100, 0, "89" },
        { 9, 1, 0, "9" },
        { 10, 0, -EINVAL, "" },
        { 11, 2, -EINVAL, "" },
    };
    assert_int_equal(store_put_buf(f->s, "r", "0123456789", 10, NULL, NULL, err, sizeof(err)), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc;
        size_t n;
        char *got = get_all(f->s, "r", cases[i].off, cases[i].len, &rc, &n);
        assert_int_equal(rc, cases[i].rc);
        if (rc == 0)
            assert_string_equal(got, cases[i].want);
        free(got);
    }
}

static void test_bad_keys_never_escape(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct store_object o;
    static const char *bad[] = { "../x", "a/../../x", "/etc/passwd", "a//b", "", "x~ct", ".~tmp.abc" };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(store_put_buf(f->s, bad[i], "x", 1, NULL, NULL, err, sizeof(err)), -EINVAL);
        assert_int_equal(store_head(f->s, bad[i], &o, err, sizeof(err)), -EINVAL);
        assert_int_equal(store_delete(f->s, bad[i], err, sizeof(err)), -EINVAL);
        assert_null(store_local_path(f->s, bad[i]));
    }
    char path[128];
    snprintf(path, sizeof(path), "%s/x", f->dir);
    assert_int_equal(access(path, F_OK), -1);
    /* content types are single printable lines */
    assert_int_equal(store_put_buf(f->s, "k", "x", 1, "text/plain\r\nX-Evil: 1", NULL, err, sizeof(err)), -EINVAL);
    assert_int_equal(store_list(f->s, "../", NULL, NULL, err, sizeof(err)), -EINVAL);
}

struct list_acc { struct strbuf keys; int stop_after; int seen; };

static int list_cb(void *opaque, const char *key, const struct store_object *obj)
{
    struct list_acc *a = opaque;
    strbuf_appendf(&a->keys, "%s:%llu,", key, (unsigned long long)obj->size);
    return a->stop_after && ++a->seen >= a->stop_after;
}

static char *list(struct store *s, const char *prefix, int *rc, int stop_after)
{
    struct list_acc a = { { 0 }, stop_after, 0 };
    char err[256];
    strbuf_init(&a.keys);
    strbuf_append(&a.keys, "");
    *rc = store_list(s, prefix, list_cb, &a, err, sizeof(err));
    return strbuf_detach(&a.keys, NULL);
}

static void test_list_sorted_and_hides_internal_files(void **state)
{
    struct fixture *f = *state;
    char err[256];
    static const char *keys[] = { "in/b", "in/a/2", "in/a/1", "inx", "out/z", "in-1", "i" };
    int rc;

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        assert_int_equal(store_put_buf(f->s, keys[i], keys[i], strlen(keys[i]), NULL, NULL, err, sizeof(err)), 0);
    /* litter that must never be listed: a temp file, a sidecar, a bad name */
    char path[256];
    snprintf(path, sizeof(path), "%s/root/in/.~tmp.ABCDEF", f->dir);
    close(open(path, O_CREAT | O_WRONLY, 0600));
    snprintf(path, sizeof(path), "%s/root/in/b~ct", f->dir);
    close(open(path, O_CREAT | O_WRONLY, 0600));
    snprintf(path, sizeof(path), "%s/root/in/sp ace", f->dir);
    close(open(path, O_CREAT | O_WRONLY, 0600));

    static const struct { const char *prefix; const char *want; } cases[] = {
        { "", "i:1,in-1:4,in/a/1:6,in/a/2:6,in/b:4,inx:3,out/z:5," },
        { "in/", "in/a/1:6,in/a/2:6,in/b:4," },
        { "in", "in-1:4,in/a/1:6,in/a/2:6,in/b:4,inx:3," },
        { "in/a", "in/a/1:6,in/a/2:6," },
        { "in/a/", "in/a/1:6,in/a/2:6," },
        { "in/b", "in/b:4," },
        { "nope/", "" },
        { "out/z/", "" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = list(f->s, cases[i].prefix, &rc, 0);
        assert_int_equal(rc, 0);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("prefix '%s': got %s want %s", cases[i].prefix, got, cases[i].want);
        free(got);
    }
    char *got = list(f->s, "", &rc, 2);
    assert_int_equal(rc, -ECANCELED);
    assert_string_equal(got, "i:1,in-1:4,");
    free(got);
}

static void test_put_fd_pipe_and_file(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct store_object o;
    int p[2];
    size_t big = 3 * 65536 + 17;
    char *data = xmalloc(big);

    for (size_t i = 0; i < big; i++)
        data[i] = (char)(i * 7);
    assert_int_equal(pipe(p), 0);
    if (fork() == 0) {
        close(p[0]);
        for (size_t off = 0; off < big;) {
            ssize_t w = write(p[1], data + off, big - off);
            if (w <= 0)
                _exit(1);
            off += (size_t)w;
        }
        _exit(0);
    }
    close(p[1]);
    assert_int_equal(store_put_fd(f->s, "piped", p[0], "x/y", &o, err, sizeof(err)), 0);
    close(p[0]);
    assert_int_equal(o.size, big);
    char want[65];
    sha256_hex(data, big, want);
    assert_string_equal(o.sha256, want);

    /* get_fd into a file, then put_fd from that file under a new key */
    char path[128];
    snprintf(path, sizeof(path), "%s/copy", f->dir);
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    assert_int_equal(store_get_fd(f->s, "piped", fd, err, sizeof(err)), 0);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    assert_int_equal(store_put_fd(f->s, "copied", fd, NULL, &o, err, sizeof(err)), 0);
    close(fd);
    assert_string_equal(o.sha256, want);
    char *lp = store_local_path(f->s, "copied");
    struct stat st;
    assert_int_equal(stat(lp, &st), 0);
    assert_int_equal(st.st_size, big);
    free(lp);
    free(data);
    /* a get that writes to a closed fd reports the write error */
    assert_int_equal(store_get_fd(f->s, "copied", fd, err, sizeof(err)), -EBADF);
    assert_int_equal(store_put_fd(f->s, "k", -1, NULL, &o, err, sizeof(err)), -EBADF);
}

static int stop_now(void *opaque, const void *buf, size_t len)
{
    return 1;
}

static void test_get_cb_stop(void **state)
{
    struct fixture *f = *state;
    char err[256];

    assert_int_equal(store_put_buf(f->s, "s", "abc", 3, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(store_get_cb(f->s, "s", 0, 0, stop_now, NULL, err, sizeof(err)), -ECANCELED);
}

/* store_get_version: the version head saw reads on; once the key holds
 * another object (a put renames a new file over it) it is -ESTALE and the
 * callback sees nothing. */
static void test_get_version(void **state)
{
    struct fixture *f = *state;
    struct store_object o, o2;
    struct strbuf b;
    char err[256];

    assert_int_equal(store_put_buf(f->s, "v", "first", 5, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(store_head(f->s, "v", &o, err, sizeof(err)), 0);
    assert_true(o.version[0] != '\0');
    strbuf_init(&b);
    assert_int_equal(store_get_version(f->s, "v", o.version, 1, 3, collect, &b, err, sizeof(err)), 0);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "irs", 3);
    assert_int_equal(store_put_buf(f->s, "v", "other", 5, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(store_head(f->s, "v", &o2, err, sizeof(err)), 0);
    assert_string_not_equal(o.version, o2.version);
    strbuf_reset(&b);
    assert_int_equal(store_get_version(f->s, "v", o.version, 0, 0, collect, &b, err, sizeof(err)), -ESTALE);
    assert_int_equal(b.len, 0);
    assert_int_equal(store_get_version(f->s, "v", o2.version, 0, 0, collect, &b, err, sizeof(err)), 0);
    assert_int_equal(b.len, 5);
    assert_int_equal(store_get_version(f->s, "v", "", 0, 0, collect, &b, err, sizeof(err)), -EINVAL);
    strbuf_free(&b);
}

/* store_open_version: the descriptor of the file head saw, which keeps
 * reading those bytes after a put replaced the key; once it has, opening
 * that version again is -ESTALE. */
static void test_open_version(void **state)
{
    struct fixture *f = *state;
    struct store_object o, o2;
    char err[256], buf[16];

    assert_int_equal(store_put_buf(f->s, "v", "first", 5, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(store_head(f->s, "v", &o, err, sizeof(err)), 0);
    int fd = store_open_version(f->s, "v", o.version, err, sizeof(err));
    assert_true(fd >= 0);
    assert_int_equal(store_put_buf(f->s, "v", "second", 6, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(pread(fd, buf, sizeof(buf), 0), 5);
    assert_memory_equal(buf, "first", 5);
    close(fd);
    assert_int_equal(store_open_version(f->s, "v", o.version, err, sizeof(err)), -ESTALE);
    assert_int_equal(store_head(f->s, "v", &o2, err, sizeof(err)), 0);
    fd = store_open_version(f->s, "v", o2.version, err, sizeof(err));
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, sizeof(buf), 0), 6);
    close(fd);
    assert_int_equal(store_open_version(f->s, "gone", o2.version, err, sizeof(err)), -ENOENT);
    assert_int_equal(store_open_version(f->s, "v", "", err, sizeof(err)), -EINVAL);
    assert_int_equal(store_open_version(f->s, "../v", o2.version, err, sizeof(err)), -EINVAL);
}

static void test_sidecar_content_type(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct store_object o;
    int rc;

    store_file_force_sidecar(f->s);
    assert_int_equal(store_put_buf(f->s, "d/m.eml", "x", 1, "message/rfc822", NULL, err, sizeof(err)), 0);
    assert_int_equal(store_head(f->s, "d/m.eml", &o, err, sizeof(err)), 0);
    assert_string_equal(o.content_type, "message/rfc822");
    char path[256];
    snprintf(path, sizeof(path), "%s/root/d/m.eml~ct", f->dir);
    assert_int_equal(access(path, F_OK), 0);
    char *got = list(f->s, "", &rc, 0);
    assert_string_equal(got, "d/m.eml:1,");
    free(got);
    assert_int_equal(store_delete(f->s, "d/m.eml", err, sizeof(err)), 0);
    assert_int_equal(access(path, F_OK), -1);
}

static void test_key_in_the_way(void **state)
{
    struct fixture *f = *state;
    char err[256];

    assert_int_equal(store_put_buf(f->s, "a", "x", 1, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(store_put_buf(f->s, "a/b", "x", 1, NULL, NULL, err, sizeof(err)), -ENOTDIR);
    /* nothing left behind in the root but the object */
    int rc;
    char *got = list(f->s, "", &rc, 0);
    assert_string_equal(got, "a:1,");
    free(got);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    while (d && (de = readdir(d)))
        n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    if (d)
        closedir(d);
    return n;
}

/* A put whose input fails leaves neither the object nor a temp file. */
static void test_failed_put_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    char err[256], path[256];
    struct store_object o;

    assert_int_equal(store_put_buf(f->s, "d/keep", "x", 1, NULL, NULL, err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/wronly", f->dir);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    assert_int_equal(store_put_fd(f->s, "d/new", fd, NULL, &o, err, sizeof(err)), -EBADF);
    close(fd);
    assert_int_equal(store_head(f->s, "d/new", &o, err, sizeof(err)), -ENOENT);
    snprintf(path, sizeof(path), "%s/root/d", f->dir);
    assert_int_equal(count_entries(path), 1);
}

/* Deferred puts make no fsync of their own; one syncfs in store_sync covers
 * them, and a handle with nothing to sync makes none. */
static void test_deferred_sync(void **state)
{
    struct fixture *f = *state;
    char err[256], key[64];
    struct store_object o;
    int rc;
    size_t n;

    fsyncs = syncfses = 0;
    assert_int_equal(store_put_buf(f->s, "now/a", "x", 1, NULL, &o, err, sizeof(err)), 0);
    assert_true(fsyncs >= 2);   /* the file and its new directory, at least */
    assert_int_equal(store_sync(f->s, err, sizeof(err)), 0);
    assert_int_equal(syncfses, 0);   /* nothing deferred */

    store_defer_sync(f->s, 1);
    fsyncs = 0;
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "later/d%d/k%d", i % 5, i);
        assert_int_equal(store_put_buf(f->s, key, key, strlen(key), "text/plain", &o, err, sizeof(err)), 0);
    }
    store_file_force_sidecar(f->s);   /* the sidecar path defers too */
    assert_int_equal(store_put_buf(f->s, "later/sc", "z", 1, "text/csv", &o, err, sizeof(err)), 0);
    assert_int_equal(fsyncs, 0);
    assert_int_equal(store_sync(f->s, err, sizeof(err)), 0);
    assert_int_equal(syncfses, 1);
    assert_int_equal(fsyncs, 0);
    assert_int_equal(store_sync(f->s, err, sizeof(err)), 0);
    assert_int_equal(syncfses, 1);   /* clean: no second syncfs */
    char *got = get_all(f->s, "later/d3/k48", 0, 0, &rc, &n);
    assert_int_equal(rc, 0);
    assert_memory_equal(got, "later/d3/k48", n);
    free(got);
    assert_int_equal(store_head(f->s, "later/sc", &o, err, sizeof(err)), 0);
    assert_string_equal(o.content_type, "text/csv");

    store_defer_sync(f->s, 0);
    fsyncs = 0;
    assert_int_equal(store_put_buf(f->s, "later/d0/again", "y", 1, NULL, &o, err, sizeof(err)), 0);
    assert_true(fsyncs >= 2);   /* the file, its sidecar, its directory */
}

/* One thread of a group: a deferred put (unless key is empty), then
 * (when hold is set, once go is set) store_sync; puts_done counts finished
 * puts. */
struct group_job {
    struct store *s;
    char key[32];
    int hold, go;
    int put_rc, sync_rc;
    pthread_t tid;
};
static int puts_done;

static void *put_and_sync(void *arg)
{
    struct group_job *j = arg;
    char err[256];
    if (j->key[0]) {
        j->put_rc = store_put_buf(j->s, j->key, j->key, strlen(j->key), NULL, NULL, err, sizeof(err));
        __atomic_add_fetch(&puts_done, 1, __ATOMIC_SEQ_CST);
    }
    while (j->hold && !__atomic_load_n(&j->go, __ATOMIC_SEQ_CST))
        usleep(1000);
    j->sync_rc = store_sync(j->s, err, sizeof(err));
    return NULL;
}

static void wait_puts(int n)
{
    while (__atomic_load_n(&puts_done, __ATOMIC_SEQ_CST) < n)
        usleep(1000);
}

/* Threads sharing a deferring handle share syncfs rounds: while one round
 * is held open, seven more threads finish their puts; every put is durable
 * after two rounds, not eight. */
static void test_group_sync(void **state)
{
    struct fixture *f = *state;
    struct group_job jobs[8];
    char err[256];

    store_defer_sync(f->s, 1);
    syncfses = gate_entered = puts_done = 0;
    gate_set(1, 0);
    for (int i = 0; i < 8; i++) {
        jobs[i] = (struct group_job){ .s = f->s };
        snprintf(jobs[i].key, sizeof(jobs[i].key), "g/k%d", i);
    }
    assert_int_equal(pthread_create(&jobs[0].tid, NULL, put_and_sync, &jobs[0]), 0);
    gate_wait_entered(1);   /* the first round covers job 0's put alone */
    for (int i = 1; i < 8; i++)
        assert_int_equal(pthread_create(&jobs[i].tid, NULL, put_and_sync, &jobs[i]), 0);
    wait_puts(8);
    gate_set(0, 0);
    for (int i = 0; i < 8; i++) {
        pthread_join(jobs[i].tid, NULL);
        assert_int_equal(jobs[i].put_rc, 0);
        assert_int_equal(jobs[i].sync_rc, 0);
    }
    assert_int_equal(syncfses, 2);
    assert_int_equal(store_sync(f->s, err, sizeof(err)), 0);
    assert_int_equal(syncfses, 2);   /* nothing new: no round */
}

/* A failed round fails every put it covered, the leader's and the
 * others' (syncfs reports the error once), and the next put syncs anew:
 * two threads put, one leads the round that covers both, and it fails. */
static void test_group_sync_failure(void **state)
{
    struct fixture *f = *state;
    struct group_job jobs[2];
    char err[256];

    store_defer_sync(f->s, 1);
    syncfses = gate_entered = puts_done = 0;
    gate_set(1, EIO);
    for (int i = 0; i < 2; i++) {
        jobs[i] = (struct group_job){ .s = f->s, .hold = 1 };
        snprintf(jobs[i].key, sizeof(jobs[i].key), "h/k%d", i);
        assert_int_equal(pthread_create(&jobs[i].tid, NULL, put_and_sync, &jobs[i]), 0);
    }
    wait_puts(2);
    __atomic_store_n(&jobs[0].go, 1, __ATOMIC_SEQ_CST);
    gate_wait_entered(1);   /* job 0 leads a round that covers both puts */
    __atomic_store_n(&jobs[1].go, 1, __ATOMIC_SEQ_CST);
    gate_set(0, EIO);
    for (int i = 0; i < 2; i++) {
        pthread_join(jobs[i].tid, NULL);
        assert_int_equal(jobs[i].put_rc, 0);
        assert_int_equal(jobs[i].sync_rc, -EIO);
    }
    assert_int_equal(syncfses, 1);
    gate_set(0, 0);
    assert_int_equal(store_put_buf(f->s, "h/c", "c", 1, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(store_sync(f->s, err, sizeof(err)), 0);
    assert_int_equal(syncfses, 2);
}

/* The round that covered a put failed before its thread asked (and the
 * thread put again since): a later round succeeds (syncfs reported the
 * error once), and the sync still fails, and the handle is not stuck: the
 * next put syncs. */
static void test_group_sync_failure_before_asking(void **state)
{
    struct fixture *f = *state;
    struct group_job y = { .s = f->s }, z = { .s = f->s };   /* y: sync only */
    char err[256];

    store_defer_sync(f->s, 1);
    syncfses = gate_entered = puts_done = 0;
    assert_int_equal(store_put_buf(f->s, "i/x", "x", 1, NULL, NULL, err, sizeof(err)), 0);
    gate_set(0, EIO);
    assert_int_equal(pthread_create(&y.tid, NULL, put_and_sync, &y), 0);
    pthread_join(y.tid, NULL);
    assert_int_equal(y.sync_rc, -EIO);
    gate_set(0, 0);
    /* another put of ours after the failure does not hide it */
    assert_int_equal(store_put_buf(f->s, "i/w", "w", 1, NULL, NULL, err, sizeof(err)), 0);
    snprintf(z.key, sizeof(z.key), "i/z");
    assert_int_equal(pthread_create(&z.tid, NULL, put_and_sync, &z), 0);
    pthread_join(z.tid, NULL);
    assert_int_equal(z.sync_rc, 0);
    assert_int_equal(store_sync(f->s, err, sizeof(err)), -EIO);   /* x's round failed */
    assert_int_equal(syncfses, 2);
    assert_int_equal(store_sync(f->s, err, sizeof(err)), 0);       /* reported once */
    assert_int_equal(store_put_buf(f->s, "i/x", "x", 1, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(store_sync(f->s, err, sizeof(err)), 0);
    assert_int_equal(syncfses, 3);
}

static void test_open_errors_and_s3_offline(void **state)
{
    char err[256];
    struct store_options opt = { "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", NULL };
    static const char *bad[] = {
        "ftp://x", "file:", "s3://", "s3://b", "s3://bucket?endpoint=ftp://x",
        "s3://bucket?path_style=2", "s3://bucket?nope=1", "s3://bucket?max_keys=0",
        "s3://bucket/../x", "s3://bucket?endpoint=http://h/path", "s3://bucket?region",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        struct store *s = store_open(bad[i], &opt, err, sizeof(err));
        if (s)
            fail_msg("'%s' opened", bad[i]);
        assert_true(err[0] != '\0');
    }
    assert_null(store_open(NULL, NULL, err, sizeof(err)));

    /* AWS's pre-signed URL example through the store: virtual-host style */
    struct store *s = store_open("s3://examplebucket?endpoint=https://s3.amazonaws.com&region=us-east-1", &opt, err,
                                 sizeof(err));
    assert_non_null(s);
    char *url = store_presign_get(s, "test.txt", 86400, 1369353600, err, sizeof(err));
    assert_string_equal(url, "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                             "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
                             "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
                             "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
    free(url);
    assert_null(store_presign_get(s, "test.txt", 604801, 1369353600, err, sizeof(err)));
    assert_null(store_presign_get(s, "test.txt", 0, 1369353600, err, sizeof(err)));
    assert_null(store_presign_get(s, "../x", 60, 1369353600, err, sizeof(err)));
    assert_null(store_local_path(s, "test.txt"));
    assert_int_equal(store_open_version(s, "test.txt", "\"etag\"", err, sizeof(err)), -ENOTSUP);
    store_close(s);

    /* path style, a prefix, a non-default port and the default port dropped */
    s = store_open("s3://bkt/att/2026/?endpoint=http://127.0.0.1:4568&path_style=1", &opt, err, sizeof(err));
    assert_non_null(s);
    url = store_presign_get(s, "k.bin", 60, 1369353600, err, sizeof(err));
    assert_int_equal(strncmp(url, "http://127.0.0.1:4568/bkt/att/2026/k.bin?X-Amz-Algorithm=", 57), 0);
    free(url);
    store_close(s);
    s = store_open("s3://bkt?endpoint=http://127.0.0.1:80&path_style=1", &opt, err, sizeof(err));
    url = store_presign_get(s, "k", 60, 1369353600, err, sizeof(err));
    assert_int_equal(strncmp(url, "http://127.0.0.1/bkt/k?", 23), 0);
    free(url);
    store_close(s);

    struct store_options evil = { "AKID\r\nX-Injected: 1", "secret", NULL };
    assert_null(store_open("s3://bkt", &evil, err, sizeof(err)));
    evil.access_key = "AKID";
    evil.session_token = "tok\nen";
    assert_null(store_open("s3://bkt", &evil, err, sizeof(err)));

    /* credentials: from the environment when the options have none */
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    assert_null(store_open("s3://bkt", NULL, err, sizeof(err)));
    setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "SECRET", 1);
    setenv("AWS_SESSION_TOKEN", "TOKEN", 1);
    s = store_open("s3://bkt", NULL, err, sizeof(err));
    assert_non_null(s);
    url = store_presign_get(s, "k", 60, 1369353600, err, sizeof(err));
    assert_non_null(strstr(url, "X-Amz-Credential=AKID%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"));
    assert_non_null(strstr(url, "&X-Amz-Security-Token=TOKEN&"));
    assert_int_equal(strncmp(url, "https://bkt.s3.us-east-1.amazonaws.com/k?", 41), 0);
    free(url);
    store_close(s);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");

    /* file stores cannot pre-sign */
    s = store_open("file:/tmp", NULL, err, sizeof(err));
    assert_null(store_presign_get(s, "k", 60, 0, err, sizeof(err)));
    store_close(s);
    store_close(NULL);
}

int main(void)
{
    process_init(0);   /* GMime, libcurl, OpenSSL: before any test */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_valid),
        cmocka_unit_test_setup_teardown(test_put_get_head_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_keys_never_escape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_sorted_and_hides_internal_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_fd_pipe_and_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_cb_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sidecar_content_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_in_the_way, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_put_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_sync_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_sync_failure_before_asking, setup, teardown),
        cmocka_unit_test(test_open_errors_and_s3_offline),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    process_shutdown();
    return rc;
}
