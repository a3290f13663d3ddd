/* fuzz — what the libFuzzer harnesses of tests/fuzz/ share.
 *
 * Every harness defines LLVMFuzzerTestOneInput() and, where it needs set-up,
 * LLVMFuzzerInitialize() (libFuzzer calls it once, before any input).  A
 * harness touches no network and no disk outside one private directory
 * made here once (fuzz_dir(), removed at exit), never calls exit(), and
 * frees everything an input made before it returns, so libFuzzer's leak
 * check holds per input.  A broken invariant is __builtin_trap(): libFuzzer
 * reports it as a crash with the input that caused it.
 *
 * Header-only (static inline): each harness is one translation unit, and
 * `make fuzz` links each alone. */
#ifndef MF_FUZZ_H
#define MF_FUZZ_H
#include <fcntl.h>
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"
#include "process.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* An invariant of the code under test failed: a finding, not a harness
 * error.  Says which before libFuzzer's report. */
#define FUZZ_CHECK(cond)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            __builtin_trap();                                                         \
        }                                                                             \
    } while (0)

static char fuzz_dir_path[256];

static inline int fuzz_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

/* Removes everything below path (and path itself). */
static inline void fuzz_rm_tree(const char *path)
{
    nftw(path, fuzz_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void fuzz_dir_remove(void)
{
    if (fuzz_dir_path[0])
        fuzz_rm_tree(fuzz_dir_path);
}

/* The harness's private directory ($TMPDIR or /tmp), made on first use. */
static inline const char *fuzz_dir(void)
{
    if (!fuzz_dir_path[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fuzz_dir_path, sizeof(fuzz_dir_path), "%s/mf-fuzz-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(fuzz_dir_path))
            panic("%s: mkdtemp %s failed", __func__, fuzz_dir_path);
        atexit(fuzz_dir_remove);
    }
    return fuzz_dir_path;
}

/* Process set-up every harness needs: the libraries (GMime, OpenSSL, ...)
 * initialised once, and logging quiet (log lines would drown libFuzzer's). */
static inline void fuzz_init(void)
{
    process_init(0);
    log_init("fuzz", (enum log_level)(LOG_ERROR + 1));
}

/* Writes buf to <fuzz_dir()>/name (replacing it) and returns the path in out. */
static inline void fuzz_write_file(const char *name, const void *buf, size_t len, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s", fuzz_dir(), name);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || fs_write_all(fd, buf, len) != 0)
        panic("%s: cannot write %s", __func__, out);
    close(fd);
}

/* The input as a NUL-terminated copy (malloc'd), for APIs that take strings;
 * an input with a NUL in it reads as cut there, as it would for them. */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* Consumes the first byte of *data (0 when empty): harnesses take their
 * switches (limits, modes) from it, so the fuzzer explores them too. */
static inline unsigned fuzz_take_byte(const uint8_t **data, size_t *size)
{
    if (*size == 0)
        return 0;
    unsigned b = (*data)[0];
    (*data)++;
    (*size)--;
    return b;
}

#endif
