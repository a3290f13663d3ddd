/* sent_marks — see sent_marks.h.
 *
 * A journal line is "<check> <expires_ms> <id>|<rcpt>\t<response>\n", check
 * being FNV-1a (32 bits, hex) of everything after its space and before the
 * newline.  It only has to tell a whole line from what a machine crash can
 * leave (a torn line, zeroes) and from what a failed write left: replay
 * skips every line that does not check and goes on with the next one.  The response has its control characters
 * replaced, so it never holds a tab or a newline; ids and normalized
 * addresses hold neither. */
#include "sent_marks.h"
#include "kv.h"
#include "log.h"
#include "strbuf.h"
#include "timeutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RESPONSE_MAX 400

struct sent_marks {
    struct kv *kv;
    char *dir;
    int64_t ttl_ms;
};

struct pending {
    char *key, *response;
    int64_t expires_ms;
};

struct sent_journal {
    struct sent_marks *m;
    int fd;
    char *path;
    struct pending *p;
    size_t n, cap;
};

static uint32_t fnv1a(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static char *mark_key(const char *id, const char *rcpt)
{
    struct strbuf b;
    strbuf_init(&b);
    strbuf_appendf(&b, "%s|%s", id, rcpt);
    return strbuf_detach(&b, NULL);
}

/* Parses one journal line (without its newline) into *it, pointing into
 * line, which it modifies.  1 = a whole marker, 0 = not one. */
static int parse_line(char *line, size_t len, struct kv_item *it)
{
    char *sp = memchr(line, ' ', len);
    if (!sp || sp - line != 8)
        return 0;
    char *rest = sp + 1;
    size_t rlen = len - 9;
    char check[9];
    snprintf(check, sizeof(check), "%08" PRIx32, fnv1a(rest, rlen));
    if (memcmp(line, check, 8) != 0)
        return 0;
    if (rlen == 0 || rest[0] < '0' || rest[0] > '9')
        return 0;   /* strtoll would skip spaces and newlines, into the next line */
    char *end;
    errno = 0;
    long long exp = strtoll(rest, &end, 10);
    if (errno || end >= rest + rlen || *end != ' ')
        return 0;
    char *key = end + 1;
    char *tab = memchr(key, '\t', rlen - (size_t)(key - rest));
    if (!tab || tab == key)
        return 0;
    *tab = '\0';
    line[len] = '\0';
    *it = (struct kv_item){ key, (size_t)(tab - key), tab + 1, strlen(tab + 1), exp };
    return 1;
}

/* Puts the whole lines of one journal file into the kv db; -errno when the
 * file cannot be read or the db refuses them. */
static int replay_file(struct sent_marks *m, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct strbuf b;
    strbuf_init(&b);
    char buf[65536];
    ssize_t r;
    while ((r = read(fd, buf, sizeof(buf))) > 0)
        strbuf_append_n(&b, buf, (size_t)r);
    int rc = r < 0 ? -errno : 0;
    close(fd);
    struct kv_item *items = NULL;
    size_t n = 0, cap = 0, pos = 0, torn = 0;
    while (rc == 0 && pos < b.len) {
        char *nl = memchr(b.data + pos, '\n', b.len - pos);
        size_t len = nl ? (size_t)(nl - (b.data + pos)) : b.len - pos;
        struct kv_item it;
        if (!nl || !parse_line(b.data + pos, len, &it)) {
            torn += len + (nl != NULL);
        } else {
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                items = xrealloc(items, cap * sizeof(*items));
            }
            items[n++] = it;
        }
        pos += len + 1;
    }
    if (rc == 0)
        rc = kv_put_many(m->kv, items, n);
    if (rc == 0 && (n || torn)) {
        char nb[24], tb[24];
        snprintf(nb, sizeof(nb), "%zu", n);
        snprintf(tb, sizeof(tb), "%zu", torn);
        log_kv(torn ? LOG_WARN : LOG_INFO, "sent markers replayed from a journal", "journal", path, "markers", nb,
               "torn_bytes_dropped", tb, NULL);
    }
    free(items);
    strbuf_free(&b);
    return rc;
}

static int replay_all(struct sent_marks *m, char *err, size_t errlen)
{
    DIR *d = opendir(m->dir);
    if (!d) {
        int e = errno;
        snprintf(err, errlen, "sent markers: cannot read %s: %s", m->dir, strerror(e));
        return -e;
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (strncmp(e->d_name, "journal.", 8) != 0)
            continue;
        char *path = xmalloc(strlen(m->dir) + strlen(e->d_name) + 2);
        sprintf(path, "%s/%s", m->dir, e->d_name);
        rc = replay_file(m, path);
        if (rc == 0)
            unlink(path);   /* its markers are in the db now; a replay after a lost unlink repeats them */
        else
            snprintf(err, errlen, "sent markers: cannot replay %s: %s", path, strerror(-rc));
        free(path);
    }
    closedir(d);
    return rc;
}

struct sent_marks *sent_marks_open(const char *dir, int64_t ttl_ms, char *err, size_t errlen)
{
    /* fully synced (LMDB default: no MDB_NOMETASYNC): a flush is once per batch, and the
     * flushed batch is committed, so a machine crash must not undo it */
    struct kv *kv = kv_open_flags(dir, "sent", 0, 0, err, errlen);
    if (!kv)
        return NULL;
    struct sent_marks *m = xcalloc(1, sizeof(*m));
    m->kv = kv;
    m->dir = xstrdup(dir);
    m->ttl_ms = ttl_ms;
    if (replay_all(m, err, errlen) != 0) {
        sent_marks_close(m);
        return NULL;
    }
    return m;
}

void sent_marks_close(struct sent_marks *m)
{
    if (!m)
        return;
    kv_close(m->kv);
    free(m->dir);
    free(m);
}

int sent_journal_get(struct sent_journal *j, const char *id, const char *rcpt, char **response)
{
    char *k = mark_key(id, rcpt);
    *response = NULL;
    for (size_t i = j->n; i-- > 0;)   /* empty but after a failed flush */
        if (strcmp(j->p[i].key, k) == 0) {
            *response = xstrdup(j->p[i].response);
            free(k);
            return 1;
        }
    void *v = NULL;
    int rc = kv_get(j->m->kv, k, strlen(k), &v, NULL);
    free(k);
    if (rc == 1)
        *response = v ? v : xstrdup("");
    else
        free(v);
    return rc;
}

long sent_marks_expire(struct sent_marks *m)
{
    return kv_expire(m->kv, now_ms());
}

/* Drops the markers held for the next flush. */
static void pending_clear(struct sent_journal *j)
{
    for (size_t i = 0; i < j->n; i++) {
        free(j->p[i].key);
        free(j->p[i].response);
    }
    j->n = 0;
}

struct sent_journal *sent_journal_open(struct sent_marks *m, int lane, char *err, size_t errlen)
{
    struct sent_journal *j = xcalloc(1, sizeof(*j));
    j->m = m;
    j->path = xmalloc(strlen(m->dir) + 32);
    sprintf(j->path, "%s/journal.%d", m->dir, lane);
    j->fd = open(j->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (j->fd < 0) {
        snprintf(err, errlen, "sent markers: cannot open %s: %s", j->path, strerror(errno));
        free(j->path);
        free(j);
        return NULL;
    }
    return j;
}

void sent_journal_close(struct sent_journal *j)
{
    if (!j)
        return;
    char err[256];
    if (sent_journal_flush(j, err, sizeof(err)) != 0)
        log_kv(LOG_WARN, "sent markers not in the db: the journal keeps them for the next start (but for "
               "any it could not write)", "error", err, NULL);
    close(j->fd);
    free(j->path);
    pending_clear(j);
    free(j->p);
    free(j);
}

int sent_journal_add(struct sent_journal *j, const char *id, const char *rcpt, const char *response)
{
    int64_t exp = now_ms() + j->m->ttl_ms;
    char resp[RESPONSE_MAX + 1];
    snprintf(resp, sizeof(resp), "%s", response ? response : "");
    for (char *c = resp; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = ' ';
    struct strbuf rest, line;
    strbuf_init(&rest);
    strbuf_init(&line);
    strbuf_appendf(&rest, "%lld %s|%s\t%s", (long long)exp, id, rcpt, resp);
    strbuf_appendf(&line, "%08" PRIx32 " %s\n", fnv1a(rest.data, rest.len), rest.data);
    /* O_APPEND: one write of one line; a short write is a full disk, and
     * its piece is cut off again so the next line starts a line */
    ssize_t w = write(j->fd, line.data, line.len);
    int rc = w == (ssize_t)line.len ? 0 : w < 0 ? -errno : -ENOSPC;
    if (w > 0 && w < (ssize_t)line.len) {
        off_t end = lseek(j->fd, 0, SEEK_END);
        if (end >= w && ftruncate(j->fd, end - w) != 0)
            log_kv(LOG_WARN, "cannot cut a partial sent-marker line; replay skips it", NULL);
    }
    strbuf_free(&rest);
    strbuf_free(&line);
    /* kept for the flush even when the journal refused it: the db gets it
     * there (only a killed process in between would lose it) */
    if (j->n == j->cap) {
        j->cap = j->cap ? j->cap * 2 : 64;
        j->p = xrealloc(j->p, j->cap * sizeof(*j->p));
    }
    j->p[j->n++] = (struct pending){ mark_key(id, rcpt), xstrdup(resp), exp };
    return rc;
}

int sent_journal_flush(struct sent_journal *j, char *err, size_t errlen)
{
    if (j->n == 0)
        return 0;
    struct kv_item *items = xcalloc(j->n, sizeof(*items));
    for (size_t i = 0; i < j->n; i++)
        items[i] = (struct kv_item){ j->p[i].key, strlen(j->p[i].key), j->p[i].response,
                                     strlen(j->p[i].response), j->p[i].expires_ms };
    int rc = kv_put_many(j->m->kv, items, j->n);
    free(items);
    if (rc != 0) {
        snprintf(err, errlen, "sent markers: writing %zu to the db: %s", j->n, strerror(-rc));
        return rc;
    }
    pending_clear(j);
    /* Everything in the journal is in the db now.  A failed truncate only
     * means a replay repeats those markers. */
    if (ftruncate(j->fd, 0) != 0)
        log_kv(LOG_WARN, "cannot empty the sent-marker journal", "journal", j->path, "error", strerror(errno),
               NULL);
    return 0;
}
