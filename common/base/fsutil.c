/* fsutil — mkdir -p, write-all and directory fsync, once for every layer. */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "strbuf.h"

int fs_mkdir_p(const char *path, mode_t mode)
{
    if (!path || !*path)
        return -EINVAL;
    char *p = xstrdup(path);
    int rc = 0;

    /* Each prefix that ends at a '/' (the root itself skipped), then the
     * whole path; "a//b" and a trailing '/' only repeat an existing one. */
    for (char *s = p + 1;; s++) {
        s = strchr(s, '/');
        if (s)
            *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST) {
            rc = -errno;
            break;
        }
        if (!s)
            break;
        *s = '/';
    }
    free(p);
    return rc;
}

int fs_mkdir_parent(const char *file, mode_t mode)
{
    const char *slash = file ? strrchr(file, '/') : NULL;
    if (!slash || slash == file)
        return 0;
    char *dir = xstrdup(file);
    dir[slash - file] = '\0';
    int rc = fs_mkdir_p(dir, mode);
    free(dir);
    return rc;
}

int fs_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int fs_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}
