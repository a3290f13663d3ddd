/* fsutil — small file-system helpers every layer needs: mkdir -p, a write
 * that survives short writes and EINTR, fsync of a directory. */
#ifndef MF_FSUTIL_H
#define MF_FSUTIL_H
#include <stddef.h>
#include <sys/types.h>

/* mkdir -p: creates path and every missing directory above it with mode
 * (before the umask).  A component that already exists is fine, as it is
 * for mkdir -p.  0, or -errno of the first mkdir that failed. */
int fs_mkdir_p(const char *path, mode_t mode);

/* fs_mkdir_p of the directory that holds file ("a/b/c" -> "a/b"); 0 when
 * file names no directory. */
int fs_mkdir_parent(const char *file, mode_t mode);

/* Writes all len bytes, retrying short writes and EINTR.  0 or -errno. */
int fs_write_all(int fd, const void *buf, size_t len);

/* fsync of a directory, so that entries created or renamed in it are
 * durable.  0 or -errno. */
int fs_fsync_dir(const char *dir);

#endif
