/* process — one-time, process-wide set-up of libraries and signals.  The
 * reasons and the rules are in process.h. */
#include "process.h"
#include "log.h"
#include "timeutil.h"

#include <curl/curl.h>
#include <errno.h>
#include <gmime/gmime.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* The ingest worker's libuv thread pool does its fsyncs: more threads, more
 * group commit.  The environment wins, so operators can still tune it. */
#define UV_POOL_SIZE "32"

static int initialised;
static void stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
}

void process_init(unsigned flags)
{
    if (initialised)
        return;
    initialised = 1;
    struct sigaction ign = { .sa_handler = SIG_IGN };
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, NULL);
    if (flags & PROCESS_STOP_SIGNALS) {
        sigset_t set;
        stop_signals(&set);
        if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
            panic("%s: pthread_sigmask failed", __func__);
    }
    setenv("UV_THREADPOOL_SIZE", UV_POOL_SIZE, 0);
    if (OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL) != 1)
        panic("%s: OPENSSL_init_ssl failed", __func__);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        panic("%s: curl_global_init failed", __func__);
    g_mime_init();
}

void process_wait_stop(stop_flag_t *stop)
{
    sigset_t set;
    stop_signals(&set);
    /* A short timeout: a worker that fails sets *stop without a signal. */
    struct timespec tick = { 0, 100 * 1000 * 1000 };
    while (!atomic_load(stop)) {
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT)
            atomic_store(stop, 1);
        else if (sig < 0 && errno != EAGAIN && errno != EINTR)
            panic("%s: sigtimedwait failed", __func__);
    }
    stop_grace_begin();
}

void process_shutdown(void)
{
    if (!initialised)
        return;
    initialised = 0;
    g_mime_shutdown();
    curl_global_cleanup();
}

/* The first line of path as an unsigned number; 0 for "max" or anything
 * else that is not one. */
static uint64_t read_limit(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[64] = "";
    if (!fgets(line, sizeof(line), f))
        line[0] = '\0';
    fclose(f);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(line, &end, 10);
    if (errno || end == line || (*end != '\n' && *end != '\0') || line[0] == '-')
        return 0;
    return v >= (1ULL << 60) ? 0 : (uint64_t)v;   /* v1's "no limit" is ~2^63 */
}

uint64_t process_memory_limit(const char *root)
{
    if (!root)
        root = getenv("MAILFLEET_CGROUP_ROOT");
    if (!root || !*root)
        root = "/sys/fs/cgroup";
    char path[4096];
    snprintf(path, sizeof(path), "%s/memory.max", root);
    if (access(path, R_OK) == 0)
        return read_limit(path);
    snprintf(path, sizeof(path), "%s/memory/memory.limit_in_bytes", root);
    return read_limit(path);
}
