/* transport_outbox — the embedded default: each recipient's copy becomes
 * <dir>/<rcpt>/<id>.eml, written to a temp file, fsynced, renamed into place
 * and the directory fsynced, so a reader never sees a torn message and a
 * redelivered record simply replaces the same file.  The recipient was
 * validated by address_normalize (no "..", no control characters); '/' and
 * '%' are still escaped so every recipient is exactly one directory.
 *
 * The outbox is a final delivery, so each file starts with the Return-Path
 * a delivery agent writes (RFC 5321 4.4): the envelope sender, here the
 * VERP address, which a bounce or a reader of the file can use.  It goes
 * before the DKIM-Signature and is not signed, as at any receiving MTA. */
#include "transport_impl.h"
#include "fsutil.h"
#include "ratelimit.h"
#include "strbuf.h"
#include "timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct outbox {
    char *dir;
};

static void *outbox_open(const char *uri, const struct transport_config *tc, char *err, size_t errlen)
{
    const char *dir = uri + strlen("outbox:");
    if (strncmp(uri, "outbox:", 7) != 0 || !*dir) {
        snprintf(err, errlen, "transport %s: expected outbox:<dir>", uri);
        return NULL;
    }
    /* mkdir -p: on a fresh machine (or with Kafka) var/ may not exist yet. */
    int rc = fs_mkdir_p(dir, 0755);
    if (rc < 0) {
        snprintf(err, errlen, "outbox %s: %s", dir, strerror(-rc));
        return NULL;
    }
    struct outbox *o = xcalloc(1, sizeof(*o));
    o->dir = xstrdup(dir);
    return o;
}

static void outbox_free(void *impl)
{
    struct outbox *o = impl;
    if (!o)
        return;
    free(o->dir);
    free(o);
}

static const char *outbox_peer(void *impl) { return "outbox"; }

static int outbox_write(struct outbox *o, const struct transport_job *job, char *path, size_t pathlen)
{
    struct strbuf d;
    strbuf_init(&d);
    strbuf_append(&d, o->dir);
    strbuf_append(&d, "/");
    for (const char *p = job->rcpt; *p; p++) {
        if (*p == '/' || *p == '%')
            strbuf_appendf(&d, "%%%02X", (unsigned char)*p);
        else
            strbuf_append_n(&d, p, 1);
    }
    int rc = 0, fd = -1;
    char tmp[4096];
    if (mkdir(d.data, 0755) != 0 && errno != EEXIST) {
        rc = -errno;
        goto out;
    }
    if (strchr(job->id, '/') || job->id[0] == '.') {
        rc = -EINVAL;
        goto out;
    }
    snprintf(path, pathlen, "%s/%s.eml", d.data, job->id);
    snprintf(tmp, sizeof(tmp), "%s/.%s.eml.tmp", d.data, job->id);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    /* mail_from is built by send from checked parts: no CR/LF, no '>'. */
    struct strbuf rp;
    strbuf_init(&rp);
    strbuf_appendf(&rp, "Return-Path: <%s>\r\n", job->mail_from ? job->mail_from : "");
    rc = fs_write_all(fd, rp.data, rp.len);
    strbuf_free(&rp);
    if (rc != 0 || (rc = fs_write_all(fd, job->prefix, job->prefix_len)) != 0 ||
        (rc = fs_write_all(fd, job->body, job->body_len)) != 0)
        goto out;
    if (fsync(fd) != 0) {
        rc = -errno;
        goto out;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = -errno;
        goto out;
    }
    rc = fs_fsync_dir(d.data);
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    strbuf_free(&d);
    return rc;
}

static int outbox_send(void *impl, struct transport_job *jobs, size_t n, const struct transport_run *run)
{
    struct outbox *o = impl;
    for (size_t i = 0; i < n; i++) {
        if (run->stop && *run->stop)
            break;
        int64_t w;
        while ((w = ratelimit_take(run->rl, mono_us())) > 0)
            usleep((useconds_t)(w < 100000 ? w : 100000));
        int64_t t0 = mono_us();
        char path[4096], msg[600];
        int rc = outbox_write(o, &jobs[i], path, sizeof(path));
        if (rc == 0) {
            transport_job_result(&jobs[i], TRANSPORT_OK, 250, "2.0.0", "250 2.0.0 Ok: written to outbox");
        } else {
            snprintf(msg, sizeof(msg), "451 4.3.0 outbox: %s", strerror(-rc));
            transport_job_result(&jobs[i], TRANSPORT_TEMP, 451, "4.3.0", msg);
        }
        jobs[i].elapsed_us = mono_us() - t0;
        if (run->done)
            run->done(jobs[i].opaque, &jobs[i]);
    }
    return 0;
}

const struct transport_ops transport_outbox_ops = {
    .scheme = "outbox",
    .open = outbox_open,
    .free = outbox_free,
    .peer = outbox_peer,
    .send = outbox_send,
};
