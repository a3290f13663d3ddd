/* kv: TTL semantics, put_new atomicity across threads, iteration, reopen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kv.h"
#include "timeutil.h"

/* LMDB's flushes to the disk, counted: fdatasync, fsync, and a write to a
 * descriptor opened with O_DSYNC (how LMDB writes its meta page).  These
 * definitions take the place of libc's for liblmdb too and make the real
 * calls. */
static int syncs;
int fdatasync(int fd)
{
    syncs++;
    return (int)syscall(SYS_fdatasync, fd);
}
int fsync(int fd)
{
    syncs++;
    return (int)syscall(SYS_fsync, fd);
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_DSYNC) == O_DSYNC)
        syncs++;
    return syscall(SYS_pwrite64, fd, buf, n, off);
}

struct fixture {
    char dir[64];
};

static int rm_tree(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/mf-kv-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    rm_tree(f->dir);
    free(f);
    return 0;
}

static struct kv *open_db(const char *dir, const char *db)
{
    char err[256] = "";
    struct kv *k = kv_open(dir, db, 0, err, sizeof(err));
    if (!k)
        fail_msg("kv_open %s/%s: %s", dir, db, err);
    return k;
}

static void test_put_get_del(void **state)
{
    struct fixture *f = *state;
    struct kv *k = open_db(f->dir, "t");
    int64_t now = now_ms();
    static const struct { const char *key, *val; int64_t exp_rel; int live; } rows[] = {
        { "forever", "v1", 0, 1 },
        { "future", "v2", 60000, 1 },
        { "past", "v3", -1, 0 },
        { "long ago", "v4", -86400000, 0 },
        { "empty", "", 0, 1 },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int64_t exp = rows[i].exp_rel ? now + rows[i].exp_rel : 0;
        assert_int_equal(kv_put(k, rows[i].key, strlen(rows[i].key), rows[i].val, strlen(rows[i].val), exp), 0);
    }
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        void *v = (void *)1;
        size_t vl = 99;
        int rc = kv_get(k, rows[i].key, strlen(rows[i].key), &v, &vl);
        if (rc != rows[i].live)
            fail_msg("row %zu (%s): get %d, want %d", i, rows[i].key, rc, rows[i].live);
        if (rc == 1) {
            assert_int_equal(vl, strlen(rows[i].val));
            assert_memory_equal(v, rows[i].val, vl);
            free(v);
        } else {
            assert_null(v);
        }
        /* existence check without copying the value */
        assert_int_equal(kv_get(k, rows[i].key, strlen(rows[i].key), NULL, NULL), rows[i].live);
    }
    assert_int_equal(kv_count(k), 3);
    assert_int_equal(kv_get(k, "absent", 6, NULL, NULL), 0);
    /* overwrite keeps one entry */
    assert_int_equal(kv_put(k, "forever", 7, "v9", 2, 0), 0);
    void *v;
    size_t vl;
    assert_int_equal(kv_get(k, "forever", 7, &v, &vl), 1);
    assert_memory_equal(v, "v9", 2);
    free(v);
    assert_int_equal(kv_del(k, "forever", 7), 0);
    assert_int_equal(kv_get(k, "forever", 7, NULL, NULL), 0);
    assert_int_equal(kv_del(k, "forever", 7), 0);   /* deleting nothing is fine */
    assert_int_equal(kv_count(k), 2);
    /* invalid keys are errors, not crashes */
    assert_int_equal(kv_put(k, "", 0, "x", 1, 0), -EINVAL);
    char big[2048];
    memset(big, 'k', sizeof(big));
    assert_int_equal(kv_put(k, big, sizeof(big), "x", 1, 0), -EINVAL);
    assert_int_equal(kv_get(k, big, sizeof(big), NULL, NULL), -EINVAL);
    kv_close(k);
}

static void test_binary_values(void **state)
{
    struct fixture *f = *state;
    struct kv *k = open_db(f->dir, "bin");
    unsigned char key[4] = { 0, 1, 0, 2 }, val[300];
    for (size_t i = 0; i < sizeof(val); i++)
        val[i] = (unsigned char)i;
    assert_int_equal(kv_put(k, key, sizeof(key), val, sizeof(val), 0), 0);
    void *v;
    size_t vl;
    assert_int_equal(kv_get(k, key, sizeof(key), &v, &vl), 1);
    assert_int_equal(vl, sizeof(val));
    assert_memory_equal(v, val, sizeof(val));
    free(v);
    kv_close(k);
}

static void test_put_new(void **state)
{
    struct fixture *f = *state;
    struct kv *k = open_db(f->dir, "dedupe");
    int64_t now = now_ms();
    assert_int_equal(kv_put_new(k, "m1", 2, "a", 1, now + 60000), 1);
    assert_int_equal(kv_put_new(k, "m1", 2, "b", 1, now + 60000), 0);
    void *v;
    assert_int_equal(kv_get(k, "m1", 2, &v, NULL), 1);
    assert_string_equal(v, "a");   /* the first value stays */
    free(v);
    /* an expired entry counts as absent: put_new replaces it */
    assert_int_equal(kv_put(k, "m2", 2, "old", 3, now - 1), 0);
    assert_int_equal(kv_put_new(k, "m2", 2, "new", 3, 0), 1);
    assert_int_equal(kv_get(k, "m2", 2, &v, NULL), 1);
    assert_string_equal(v, "new");
    free(v);
    kv_close(k);
}

static void test_expire(void **state)
{
    struct fixture *f = *state;
    struct kv *k = open_db(f->dir, "ttl");
    int64_t now = now_ms();
    char key[16];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%03d", i);
        /* even keys expired, odd keys live (or never expiring) */
        int64_t exp = i % 2 == 0 ? now - 1000 + i : (i % 3 == 0 ? 0 : now + 60000);
        assert_int_equal(kv_put(k, key, strlen(key), "v", 1, exp), 0);
    }
    assert_int_equal(kv_count(k), 50);
    assert_int_equal(kv_expire(k, now), 50);
    assert_int_equal(kv_expire(k, now), 0);
    assert_int_equal(kv_count(k), 50);
    /* expiring "later" removes the time-limited ones, keeps the forever ones */
    assert_int_equal(kv_expire(k, now + 120000), 33);
    assert_int_equal(kv_count(k), 17);
    kv_close(k);
}

struct collect {
    char keys[64][16];
    int n, stop_after;
};

static int collect_cb(void *opaque, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct collect *c = opaque;
    assert_true(klen < 16);
    memcpy(c->keys[c->n], key, klen);
    c->keys[c->n][klen] = '\0';
    assert_int_equal(vlen, 1);
    assert_memory_equal(val, "v", 1);
    c->n++;
    return c->stop_after && c->n >= c->stop_after;
}

static void test_iter(void **state)
{
    struct fixture *f = *state;
    struct kv *k = open_db(f->dir, "iter");
    int64_t now = now_ms();
    static const char *keys[] = { "b", "a", "d", "c", "e", "dd" };
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(kv_put(k, keys[i], strlen(keys[i]), "v", 1, strcmp(keys[i], "c") == 0 ? now - 1 : 0), 0);

    static const struct { const char *start; int stop_after; long want_n; const char *want; } rows[] = {
        { NULL, 0, 5, "a,b,d,dd,e" },   /* expired "c" is skipped */
        { "b", 0, 4, "b,d,dd,e" },
        { "bb", 0, 3, "d,dd,e" },
        { "c", 0, 3, "d,dd,e" },
        { "d", 2, 2, "d,dd" },
        { "z", 0, 0, "" },
        { NULL, 1, 1, "a" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct collect c = { .stop_after = rows[i].stop_after };
        long n = kv_iter(k, rows[i].start, rows[i].start ? strlen(rows[i].start) : 0, collect_cb, &c);
        char got[128] = "";
        for (int j = 0; j < c.n; j++) {
            if (j)
                strcat(got, ",");
            strcat(got, c.keys[j]);
        }
        if (n != rows[i].want_n || strcmp(got, rows[i].want) != 0)
            fail_msg("row %zu: n=%ld got '%s', want n=%ld '%s'", i, n, got, rows[i].want_n, rows[i].want);
    }
    kv_close(k);
}

static void test_named_dbs_are_separate(void **state)
{
    struct fixture *f = *state;
    struct kv *a = open_db(f->dir, "a"), *b = open_db(f->dir, "b");
    assert_int_equal(kv_put(a, "k", 1, "in-a", 4, 0), 0);
    assert_int_equal(kv_get(b, "k", 1, NULL, NULL), 0);
    assert_int_equal(kv_put(b, "k", 1, "in-b", 4, 0), 0);
    kv_close(a);   /* closing one handle must not disturb the other */
    void *v;
    assert_int_equal(kv_get(b, "k", 1, &v, NULL), 1);
    assert_string_equal(v, "in-b");
    free(v);
    kv_close(b);
    kv_close(NULL);
}

static void test_reopen_keeps_data(void **state)
{
    struct fixture *f = *state;
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/deep/er/state", f->dir);   /* created on open */
    struct kv *k = open_db(sub, "markers");
    assert_int_equal(kv_put(k, "sent|a@b.example", 16, "1", 1, 0), 0);
    assert_int_equal(kv_put(k, "gone", 4, "1", 1, now_ms() - 5), 0);
    kv_close(k);
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    k = open_db(sub, "markers");
    assert_int_equal(kv_get(k, "sent|a@b.example", 16, NULL, NULL), 1);
    assert_int_equal(kv_get(k, "gone", 4, NULL, NULL), 0);
    assert_int_equal(kv_count(k), 1);
    kv_close(k);
}

static void test_open_errors(void **state)
{
    struct fixture *f = *state;
    char path[128], err[256] = "";
    snprintf(path, sizeof(path), "%s/file", f->dir);
    FILE *fp = fopen(path, "w");
    fclose(fp);
    /* a regular file where the directory should be */
    assert_null(kv_open(path, "x", 0, err, sizeof(err)));
    assert_non_null(strstr(err, path));
    snprintf(path, sizeof(path), "%s/file/below", f->dir);
    err[0] = '\0';
    assert_null(kv_open(path, "x", 0, err, sizeof(err)));
    assert_true(err[0] != '\0');
}

#define THREADS 4
#define KEYS 200

struct race {
    struct kv *k;
    const char *dir;   /* for threads that open their own handle */
    int inserted;
};

static void *race_thread(void *arg)
{
    struct race *r = arg;
    char key[16];
    for (int i = 0; i < KEYS; i++) {
        snprintf(key, sizeof(key), "msg-%04d", i);
        int rc = kv_put_new(r->k, key, strlen(key), "x", 1, 0);
        if (rc < 0)
            return (void *)1;
        r->inserted += rc;
    }
    return NULL;
}

/* Several threads sharing one handle race to insert the same keys: each key is
 * inserted exactly once, which is what ingest's dedupe relies on. */
static void test_put_new_threads(void **state)
{
    struct fixture *f = *state;
    struct kv *k = open_db(f->dir, "race");
    pthread_t th[THREADS];
    struct race r[THREADS];
    for (int i = 0; i < THREADS; i++) {
        r[i] = (struct race){ .k = k };
        assert_int_equal(pthread_create(&th[i], NULL, race_thread, &r[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < THREADS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        assert_null(ret);
        total += r[i].inserted;
    }
    assert_int_equal(total, KEYS);
    assert_int_equal(kv_count(k), KEYS);
    kv_close(k);
}

/* Threads opening their own handles on the same directory share one
 * environment (LMDB allows only one per process) and still dedupe. */
static void *race_open_thread(void *arg)
{
    struct race *r = arg;
    char err[256];
    struct kv *k = kv_open(r->dir, "race2", 0, err, sizeof(err));
    if (!k)
        return (void *)1;
    struct race mine = { .k = k };
    void *ret = race_thread(&mine);
    r->inserted = mine.inserted;
    kv_close(k);
    return ret;
}

static void test_put_new_threads_own_handles(void **state)
{
    struct fixture *f = *state;
    pthread_t th[THREADS];
    struct race r[THREADS];
    for (int i = 0; i < THREADS; i++) {
        r[i] = (struct race){ .dir = f->dir };
        assert_int_equal(pthread_create(&th[i], NULL, race_open_thread, &r[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < THREADS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        assert_null(ret);
        total += r[i].inserted;
    }
    assert_int_equal(total, KEYS);
    struct kv *k = open_db(f->dir, "race2");
    assert_int_equal(kv_count(k), KEYS);
    kv_close(k);
}

/* Ten writes: two syncs each by default, none with KV_VOLATILE, and two for
 * all ten with kv_put_many; every write is there after a reopen. */
static void test_sync_flags(void **state)
{
    struct fixture *f = *state;
    static const struct { const char *sub; unsigned flags; int min, max; } cases[] = {
        { "two", 0, 20, 20 }, { "none", KV_VOLATILE, 0, 0 }, { "many", 0, 2, 2 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char dir[128], err[256], key[16];
        snprintf(dir, sizeof dir, "%s/%s", f->dir, cases[c].sub);
        struct kv *k = kv_open_flags(dir, "db", 0, cases[c].flags, err, sizeof err);
        assert_non_null(k);
        syncs = 0;
        char keys[10][16];
        struct kv_item items[10];
        for (int i = 0; i < 10; i++) {
            snprintf(key, sizeof key, "k%d", i);
            if (strcmp(cases[c].sub, "many") != 0) {
                assert_int_equal(kv_put(k, key, strlen(key), "v", 1, 0), 0);
                continue;
            }
            snprintf(keys[i], sizeof keys[i], "%s", key);
            items[i] = (struct kv_item){ keys[i], strlen(keys[i]), "v", 1, 0 };
        }
        if (strcmp(cases[c].sub, "many") == 0)
            assert_int_equal(kv_put_many(k, items, 10), 0);
        assert_in_range(syncs, cases[c].min, cases[c].max);
        kv_close(k);
        k = kv_open_flags(dir, "db", 0, cases[c].flags, err, sizeof err);
        assert_int_equal(kv_count(k), 10);
        kv_close(k);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_del, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_new, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_named_dbs_are_separate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_new_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_new_threads_own_handles, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
