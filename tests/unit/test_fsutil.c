/* fsutil: mkdir -p (nested, existing, trailing and doubled slashes, a file in
 * the way, the mode given), the parent-of-a-file variant, write-all through a
 * pipe larger than its buffer, and directory fsync. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fsutil.h"

static char root[] = "/tmp/mf-fsutil-XXXXXX";

static int setup(void **state)
{
    umask(022);
    return mkdtemp(root) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    return system(cmd) == 0 ? 0 : -1;
}

static char *at(const char *rel)
{
    static char buf[4][256];
    static int i;
    char *b = buf[i++ % 4];
    snprintf(b, sizeof(buf[0]), "%s/%s", root, rel);
    return b;
}

static int is_dir_mode(const char *path, mode_t mode)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == mode;
}

static void test_mkdir_p_table(void **state)
{
    /* A file "m/file" sits in the way of the last rows. */
    static const struct {
        const char *rel;     /* path made, below root */
        mode_t mode;
        int rc;              /* expected */
        const char *check;   /* a directory that must exist afterwards */
    } cases[] = {
        { "a", 0750, 0, "a" },
        { "b/c/d", 0750, 0, "b/c" },
        { "b/c/d", 0750, 0, "b/c/d" },        /* all there already */
        { "e/f/", 0700, 0, "e/f" },           /* trailing slash */
        { "g//h", 0755, 0, "g/h" },           /* doubled slash */
        { "m/file/x", 0750, -ENOTDIR, NULL },
        { "m/file/x/y", 0750, -ENOTDIR, NULL },
    };
    assert_int_equal(fs_mkdir_p(at("m"), 0750), 0);
    int fd = open(at("m/file"), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    close(fd);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = fs_mkdir_p(at(cases[i].rel), cases[i].mode);
        if (rc != cases[i].rc)
            fail_msg("%s: rc %d, want %d", cases[i].rel, rc, cases[i].rc);
        if (cases[i].check && !is_dir_mode(at(cases[i].check), cases[i].mode))
            fail_msg("%s: %s is not a directory of mode %o", cases[i].rel, cases[i].check,
                     (unsigned)cases[i].mode);
    }
    assert_int_equal(fs_mkdir_p("", 0750), -EINVAL);
    assert_int_equal(fs_mkdir_p("/", 0750), 0);
}

static void test_mkdir_parent_table(void **state)
{
    static const struct {
        const char *file;
        int rc;
        const char *dir;   /* made; NULL: nothing to check */
    } cases[] = {
        { "p/q/r.pem", 0, "p/q" },
        { "p/s.pem", 0, "p" },
        { "plain.pem", 0, NULL },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(fs_mkdir_parent(at(cases[i].file), 0700), cases[i].rc);
        if (cases[i].dir)
            assert_true(is_dir_mode(at(cases[i].dir), 0700));
    }
    assert_false(is_dir_mode(at("p/q/r.pem"), 0700));   /* the file itself is not made */
    assert_int_equal(fs_mkdir_parent("relative", 0700), 0);
    assert_int_equal(fs_mkdir_parent("/top", 0700), 0);
}

/* More than a pipe holds, read by a child, so the writer sees short writes. */
static void test_write_all_pipe(void **state)
{
    enum { N = 1 << 20 };
    unsigned char *buf = malloc(N);
    assert_non_null(buf);
    for (size_t i = 0; i < N; i++)
        buf[i] = (unsigned char)(i * 31 + 7);
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[1]);
        size_t got = 0;
        unsigned char c[4096];
        int same = 1;
        for (ssize_t n; (n = read(p[0], c, sizeof(c))) > 0; got += (size_t)n)
            for (ssize_t k = 0; k < n; k++)
                same &= c[k] == (unsigned char)((got + (size_t)k) * 31 + 7);
        _exit(got == N && same ? 0 : 1);
    }
    close(p[0]);
    assert_int_equal(fs_write_all(p[1], buf, N), 0);
    assert_int_equal(fs_write_all(p[1], buf, 0), 0);
    close(p[1]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    free(buf);
}

static void test_write_all_errors(void **state)
{
    assert_int_equal(fs_write_all(-1, "x", 1), -EBADF);
    int fd = open(at("ro"), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    close(fd);
    fd = open(at("ro"), O_RDONLY | O_CLOEXEC);
    assert_int_equal(fs_write_all(fd, "x", 1), -EBADF);
    close(fd);
}

static void test_fsync_dir(void **state)
{
    assert_int_equal(fs_fsync_dir(root), 0);
    assert_int_equal(fs_fsync_dir(at("no/such")), -ENOENT);
    assert_int_equal(fs_fsync_dir(at("ro")), -ENOTDIR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mkdir_p_table),
        cmocka_unit_test(test_mkdir_parent_table),
        cmocka_unit_test(test_write_all_pipe),
        cmocka_unit_test(test_write_all_errors),
        cmocka_unit_test(test_fsync_dir),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
