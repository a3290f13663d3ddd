/* send_admin — `mailfleet send pause|resume|status`: a flag file the worker
 * looks for before each batch.  A paused worker sends nothing and keeps its
 * place (nothing is polled, nothing committed); a file works the same for one
 * process or several sharing state_dir, and survives restarts. */
#include "fsutil.h"
#include "send.h"
#include "strbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *send_pause_file(const struct config *cfg)
{
    if (config_isset(cfg, "send", "pause_file"))
        return xstrdup(config_str(cfg, "send", "pause_file"));
    struct strbuf b;
    strbuf_init(&b);
    strbuf_appendf(&b, "%s/send.paused", config_str(cfg, "mailfleet", "state_dir"));
    return strbuf_detach(&b, NULL);
}

static int send_admin_main(int argc, char **argv)
{
    const char *sub = argc >= 2 ? argv[1] : "";
    if (strcmp(sub, "pause") != 0 && strcmp(sub, "resume") != 0 && strcmp(sub, "status") != 0) {
        fprintf(stderr, "usage: mailfleet send pause|resume|status [-c FILE]\n");
        return 2;
    }
    struct config *cfg = mailfleet_load_config(argc, argv);
    if (!cfg)
        return 2;
    char *pf = send_pause_file(cfg);
    int rc = 0;
    if (strcmp(sub, "pause") == 0) {
        /* Create parent (state_dir) as the worker would; a failure shows
         * as the open's error below. */
        (void)fs_mkdir_parent(pf, 0755);
        int fd = open(pf, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0 || fsync(fd) != 0) {
            fprintf(stderr, "mailfleet send pause: %s: %s\n", pf, strerror(errno));
            rc = 1;
        } else {
            printf("send paused (%s)\n", pf);
        }
        if (fd >= 0)
            close(fd);
    } else if (strcmp(sub, "resume") == 0) {
        if (unlink(pf) != 0 && errno != ENOENT) {
            fprintf(stderr, "mailfleet send resume: %s: %s\n", pf, strerror(errno));
            rc = 1;
        } else {
            printf("send resumed\n");
        }
    } else {
        struct stat st;
        printf("send %s\n", stat(pf, &st) == 0 ? "paused" : "running");
    }
    free(pf);
    config_free(cfg);
    return rc;
}

const struct admin_verb send_admin_verb = { "send", "pause|resume|status: stop or restart sending", NULL,
                                            send_admin_main };
