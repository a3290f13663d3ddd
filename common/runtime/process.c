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
#include <stdlib.h>
#include <time.h>

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
