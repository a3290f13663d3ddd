/* send's sent markers (workers/send/sent_marks.c): journaled markers are
 * seen at once, reach the db at a flush, survive a process that never
 * flushed (replayed at the next open), and a torn or bad journal line is
 * dropped without losing the whole lines around it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "process.h"
#include "send/sent_marks.h"

#define DAY_MS 86400000LL

static const char id1[] = "019ac0f2-4000-7123-a456-fedcba987654";
static const char id2[] = "019ac0f2-4000-7123-a456-fedcba987655";

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/mf-sent-marks-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static int has(struct sent_journal *j, const char *id, const char *rcpt, const char *want)
{
    char *resp = NULL;
    int rc = sent_journal_get(j, id, rcpt, &resp);
    if (rc == 1 && want)
        assert_string_equal(resp, want);
    free(resp);
    return rc;
}

static off_t journal_size(int lane)
{
    char p[128];
    struct stat st;
    snprintf(p, sizeof(p), "%s/journal.%d", dir, lane);
    return stat(p, &st) == 0 ? st.st_size : -1;
}

/* Added markers are seen before and after the flush; the flush empties the
 * journal; a second lane sees the first lane's markers once flushed. */
static void test_add_flush_get(void **state)
{
    (void)state;
    char err[256];
    struct sent_marks *m = sent_marks_open(dir, DAY_MS, err, sizeof(err));
    assert_non_null(m);
    struct sent_journal *a = sent_journal_open(m, 0, err, sizeof(err));
    struct sent_journal *b = sent_journal_open(m, 1, err, sizeof(err));
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(has(a, id1, "x@y.org", NULL), 0);
    /* a reply with control characters is kept on one journal line */
    assert_int_equal(sent_journal_add(a, id1, "x@y.org", "250 2.0.0 Ok:\r\n queued\tas X"), 0);
    assert_int_equal(sent_journal_add(a, id1, "z@y.org", "250 ok"), 0);
    assert_true(journal_size(0) > 0);
    assert_int_equal(has(a, id1, "x@y.org", "250 2.0.0 Ok:   queued as X"), 1);
    assert_int_equal(has(b, id1, "x@y.org", NULL), 0);   /* not in the db yet */
    assert_int_equal(sent_journal_flush(a, err, sizeof(err)), 0);
    assert_int_equal(journal_size(0), 0);
    assert_int_equal(has(b, id1, "x@y.org", "250 2.0.0 Ok:   queued as X"), 1);
    assert_int_equal(has(b, id1, "z@y.org", "250 ok"), 1);
    assert_int_equal(has(b, id2, "x@y.org", NULL), 0);
    assert_int_equal(sent_journal_flush(a, err, sizeof(err)), 0);   /* nothing: fine */
    sent_journal_close(a);
    sent_journal_close(b);
    sent_marks_close(m);
}

/* A process killed after the journal write and before any flush: the next
 * open finds the markers in the journal and puts them in the db.  Simulated
 * by copying the journal aside before the clean close flushes it. */
static void test_replay_after_kill(void **state)
{
    (void)state;
    char err[256], src[96], dst[96], cmd[640];
    struct sent_marks *m = sent_marks_open(dir, DAY_MS, err, sizeof(err));
    struct sent_journal *a = sent_journal_open(m, 3, err, sizeof(err));
    assert_int_equal(sent_journal_add(a, id1, "x@y.org", "250 one"), 0);
    assert_int_equal(sent_journal_add(a, id2, "x@y.org", "250 two"), 0);
    snprintf(src, sizeof(src), "%s/journal.3", dir);
    snprintf(dst, sizeof(dst), "%s/saved", dir);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", src, dst);
    assert_int_equal(system(cmd), 0);
    sent_journal_close(a);
    sent_marks_close(m);
    /* a fresh db, and the journal as the killed process left it, with a
     * torn last line (no newline, as a machine crash can leave it) */
    snprintf(cmd, sizeof(cmd), "rm -f '%s'/*.mdb && mv '%s' '%s' && printf '0badc0de 1 torn' >> '%s'", dir, dst,
             src, src);
    assert_int_equal(system(cmd), 0);
    m = sent_marks_open(dir, DAY_MS, err, sizeof(err));
    assert_non_null(m);
    assert_int_equal(journal_size(3), -1);   /* replayed and removed */
    struct sent_journal *b = sent_journal_open(m, 0, err, sizeof(err));
    assert_int_equal(has(b, id1, "x@y.org", "250 one"), 1);
    assert_int_equal(has(b, id2, "x@y.org", "250 two"), 1);
    sent_journal_close(b);
    sent_marks_close(m);
}

/* A line whose check does not match (zeroes, a flipped byte, a piece a
 * failed write left with the next line glued on) is skipped; the lines
 * before and after it count. */
static void test_replay_skips_bad_lines(void **state)
{
    (void)state;
    char err[256], path[128];
    struct sent_marks *m = sent_marks_open(dir, DAY_MS, err, sizeof(err));
    struct sent_journal *a = sent_journal_open(m, 0, err, sizeof(err));
    assert_int_equal(sent_journal_add(a, id1, "good@y.org", "250 a"), 0);
    assert_int_equal(sent_journal_add(a, id1, "bad@y.org", "250 b"), 0);
    assert_int_equal(sent_journal_add(a, id1, "after@y.org", "250 c"), 0);
    snprintf(path, sizeof(path), "%s/journal.0", dir);
    FILE *piece = fopen(path, "ab");
    fputs("0badc0de 17 019a", piece);   /* a write cut short, no newline */
    fclose(piece);
    assert_int_equal(sent_journal_add(a, id2, "glued@y.org", "250 d"), 0);
    assert_int_equal(sent_journal_add(a, id2, "last@y.org", "250 e"), 0);
    /* keep the journal's bytes, flip one byte of the second line */
    FILE *f = fopen(path, "rb");
    char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    char *second = (char *)memchr(buf, '\n', n) + 1;
    char *at = strstr(second, "bad@");
    at[0] = 'B';
    sent_journal_close(a);   /* flushes all three to the db ... */
    sent_marks_close(m);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -f '%s'/*.mdb", dir);   /* ... which a machine crash lost */
    assert_int_equal(system(cmd), 0);
    f = fopen(path, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    m = sent_marks_open(dir, DAY_MS, err, sizeof(err));
    assert_non_null(m);
    struct sent_journal *b = sent_journal_open(m, 0, err, sizeof(err));
    assert_int_equal(has(b, id1, "good@y.org", "250 a"), 1);
    assert_int_equal(has(b, id1, "bad@y.org", NULL), 0);
    assert_int_equal(has(b, id1, "Bad@y.org", NULL), 0);
    assert_int_equal(has(b, id1, "after@y.org", "250 c"), 1);
    assert_int_equal(has(b, id2, "glued@y.org", NULL), 0);   /* lost with the piece it was glued to */
    assert_int_equal(has(b, id2, "last@y.org", "250 e"), 1);
    sent_journal_close(b);
    sent_marks_close(m);
}

/* Markers expire after the TTL. */
static void test_expiry(void **state)
{
    (void)state;
    char err[256];
    struct sent_marks *m = sent_marks_open(dir, 1, err, sizeof(err));   /* 1 ms */
    struct sent_journal *a = sent_journal_open(m, 0, err, sizeof(err));
    assert_int_equal(sent_journal_add(a, id1, "x@y.org", "250"), 0);
    assert_int_equal(sent_journal_flush(a, err, sizeof(err)), 0);
    usleep(5000);
    assert_int_equal(has(a, id1, "x@y.org", NULL), 0);
    assert_int_equal(sent_marks_expire(m), 1);
    sent_journal_close(a);
    sent_marks_close(m);
}

int main(void)
{
    process_init(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_flush_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_after_kill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_skips_bad_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
