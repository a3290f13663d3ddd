/* process: SIGTERM/SIGINT reach the main thread's process_wait_stop() and
 * never a thread started after process_init(); a worker can stop the process
 * without a signal; the shutdown grace counts down from the stop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "process.h"
#include "timeutil.h"

struct poke {
    stop_flag_t *stop;
    int sig;              /* 0: set *stop instead of signalling */
    sigset_t mask;        /* the thread's signal mask, as it started */
};

/* Plays a worker thread: checks it was born with the stop signals blocked,
 * then, after a moment, signals the process or sets the flag. */
static void *poke_main(void *arg)
{
    struct poke *p = arg;
    pthread_sigmask(SIG_BLOCK, NULL, &p->mask);
    usleep(50 * 1000);
    if (p->sig)
        kill(getpid(), p->sig);
    else
        atomic_store(p->stop, 1);
    return NULL;
}

static void wait_for(int sig)
{
    stop_flag_t stop = 0;
    struct poke p = { &stop, sig };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, poke_main, &p), 0);
    int64_t t0 = mono_ms();
    process_wait_stop(&stop);
    assert_int_equal(atomic_load(&stop), 1);
    assert_true(mono_ms() - t0 < 5000);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(sigismember(&p.mask, SIGTERM));
    assert_true(sigismember(&p.mask, SIGINT));
}

static void test_grace_before_and_after_stop(void **state)
{
    (void)state;
    assert_int_equal(stop_grace_ms(), STOP_DEFAULT_GRACE_MS);
    stop_set_grace_ms(0);   /* unset in the config: the default */
    assert_int_equal(stop_grace_ms(), STOP_DEFAULT_GRACE_MS);
    stop_set_grace_ms(3000);
    assert_int_equal(stop_grace_left_ms(), 3000);   /* no stop yet: all of it */
    wait_for(0);
    int64_t left = stop_grace_left_ms();
    assert_true(left <= 3000 && left > 1000);
    stop_set_grace_ms(STOP_DEFAULT_GRACE_MS);
}

static void test_signals(void **state)
{
    (void)state;
    static const int sigs[] = { SIGTERM, SIGINT, 0 };
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        wait_for(sigs[i]);
}

static void test_sigpipe_ignored(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    close(fds[0]);
    assert_int_equal(write(fds[1], "x", 1), -1);   /* EPIPE, not death */
    close(fds[1]);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* cgroup v2 memory.max, v1 memory.limit_in_bytes, "no limit" in both
 * spellings, and what is not a number. */
static void test_memory_limit(void **state)
{
    (void)state;
    char dir[] = "/tmp/mf-cgroup-XXXXXX", v1[600];
    assert_non_null(mkdtemp(dir));
    assert_int_equal(process_memory_limit(dir), 0);   /* neither file */
    snprintf(v1, sizeof(v1), "%s/memory", dir);
    assert_int_equal(mkdir(v1, 0700), 0);
    write_file(v1, "memory.limit_in_bytes", "9223372036854771712\n");   /* v1: none */
    assert_int_equal(process_memory_limit(dir), 0);
    write_file(v1, "memory.limit_in_bytes", "268435456\n");
    assert_int_equal(process_memory_limit(dir), 268435456);
    write_file(dir, "memory.max", "max\n");   /* v2 wins: none */
    assert_int_equal(process_memory_limit(dir), 0);
    write_file(dir, "memory.max", "536870912\n");
    assert_int_equal(process_memory_limit(dir), 536870912);
    write_file(dir, "memory.max", "-1\n");
    assert_int_equal(process_memory_limit(dir), 0);
    write_file(dir, "memory.max", "12ab\n");
    assert_int_equal(process_memory_limit(dir), 0);
    char cmd[640];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    process_init(PROCESS_STOP_SIGNALS);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grace_before_and_after_stop),
        cmocka_unit_test(test_signals),
        cmocka_unit_test(test_sigpipe_ignored),
        cmocka_unit_test(test_memory_limit),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    process_shutdown();
    return rc;
}
