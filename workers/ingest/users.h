/* users — SMTP AUTH users: a file of "name:crypt(3)-hash" lines (yescrypt
 * written by `mailfleet users add`; any libcrypt hash is read).  Lines starting
 * with '#' and blank lines are ignored.  The file is read once (and again on
 * SIGHUP); verification runs in worker threads (crypt_rn, no shared state). */
#ifndef MF_INGEST_USERS_H
#define MF_INGEST_USERS_H
#include <stddef.h>

struct users;
struct admin_verb;

/* A missing file gives an empty set (every AUTH fails); a malformed line is
 * an error naming the line. */
struct users *users_load(const char *path, char *err, size_t errlen);
void users_free(struct users *u);   /* accepts NULL */
size_t users_count(const struct users *u);

/* 1 = name and password match, 0 = not.  An unknown name costs a hash
 * computation too, so timing does not tell which names exist. */
int users_verify(const struct users *u, const char *name, const char *pass);

/* Adds or replaces name with a new yescrypt hash of pass; rewrites the file
 * atomically (mode 0600).  Returns 0 or negative errno with err. */
int users_set(const char *path, const char *name, const char *pass, char *err, size_t errlen);

/* `mailfleet users add NAME [-c FILE]`: password from stdin. */
extern const struct admin_verb users_verb;

#endif
