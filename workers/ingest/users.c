/* users — crypt(3) users file for SMTP AUTH, and the `users` admin verb. */
#include "users.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "admin.h"
#include "config.h"
#include "fsutil.h"
#include "log.h"
#include "strbuf.h"

struct user {
    char *name;
    char *hash;
};

struct users {
    struct user *v;
    size_t n;
    char *dummy_hash;   /* verified against for unknown names */
};

static int name_ok(const char *name)
{
    if (!*name || strlen(name) > 256)
        return 0;
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == ':' || (unsigned char)*p >= 127)
            return 0;
    return 1;
}

static char *hash_password(const char *pass)
{
    char *salt = crypt_gensalt_ra("$y$", 0, NULL, 0);
    if (!salt)
        return NULL;
    struct crypt_data *cd = xcalloc(1, sizeof(*cd));
    char *h = crypt_r(pass, salt, cd);
    char *out = (h && h[0] != '*') ? xstrdup(h) : NULL;
    OPENSSL_cleanse(cd, sizeof(*cd));
    free(cd);
    free(salt);
    return out;
}

struct users *users_load(const char *path, char *err, size_t errlen)
{
    struct users *u = xcalloc(1, sizeof(*u));
    FILE *f = fopen(path, "r");
    if (!f && errno != ENOENT) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        free(u);
        return NULL;
    }
    if (f) {
        char line[2048];
        int lineno = 0;
        while (fgets(line, sizeof(line), f)) {
            lineno++;
            line[strcspn(line, "\r\n")] = 0;
            if (!line[0] || line[0] == '#')
                continue;
            char *colon = strchr(line, ':');
            if (colon)
                *colon = 0;
            if (!colon || !name_ok(line) || colon[1] != '$') {
                snprintf(err, errlen, "%s:%d: expected name:$hash", path, lineno);
                fclose(f);
                users_free(u);
                return NULL;
            }
            u->v = xrealloc(u->v, (u->n + 1) * sizeof(*u->v));
            u->v[u->n].name = xstrdup(line);
            u->v[u->n].hash = xstrdup(colon + 1);
            u->n++;
        }
        fclose(f);
    }
    /* Random password: nobody can match it, and it costs what a real one does. */
    unsigned char rnd[16];
    char hex[33];
    FILE *r = fopen("/dev/urandom", "r");
    if (!r || fread(rnd, 1, sizeof(rnd), r) != sizeof(rnd))
        panic("%s: cannot read /dev/urandom", __func__);
    fclose(r);
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    u->dummy_hash = hash_password(hex);
    if (!u->dummy_hash)
        panic("%s: libcrypt has no yescrypt", __func__);
    return u;
}

void users_free(struct users *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->n; i++) {
        free(u->v[i].name);
        free(u->v[i].hash);
    }
    free(u->v);
    free(u->dummy_hash);
    free(u);
}

size_t users_count(const struct users *u)
{
    return u->n;
}

int users_verify(const struct users *u, const char *name, const char *pass)
{
    const char *hash = u->dummy_hash;
    int known = 0;
    for (size_t i = 0; i < u->n; i++)
        if (strcmp(u->v[i].name, name) == 0) {
            hash = u->v[i].hash;
            known = 1;
        }
    struct crypt_data *cd = xcalloc(1, sizeof(*cd));
    const char *h = crypt_r(pass, hash, cd);
    size_t hl = strlen(hash);
    int ok = h && h[0] != '*' && strlen(h) == hl && CRYPTO_memcmp(h, hash, hl) == 0;
    OPENSSL_cleanse(cd, sizeof(*cd));
    free(cd);
    return ok && known;
}

int users_set(const char *path, const char *name, const char *pass, char *err, size_t errlen)
{
    if (!name_ok(name)) {
        snprintf(err, errlen, "bad user name (no blanks, ':' or control characters)");
        return -EINVAL;
    }
    char *hash = hash_password(pass);
    if (!hash) {
        snprintf(err, errlen, "crypt: cannot hash with yescrypt");
        return -EIO;
    }
    struct strbuf out;
    strbuf_init(&out);
    FILE *f = fopen(path, "r");
    if (f) {
        char line[2048];
        while (fgets(line, sizeof(line), f)) {
            size_t nl = strlen(name);
            if (strncmp(line, name, nl) == 0 && line[nl] == ':')
                continue;   /* replaced below */
            strbuf_append(&out, line);
            if (line[strlen(line) - 1] != '\n')
                strbuf_append(&out, "\n");
        }
        fclose(f);
    }
    strbuf_appendf(&out, "%s:%s\n", name, hash);
    free(hash);

    int rc = fs_mkdir_parent(path, 0700);
    if (rc < 0) {
        snprintf(err, errlen, "%s: cannot create its directory: %s", path, strerror(-rc));
        strbuf_free(&out);
        return rc;
    }
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        rc = -errno;
    else if ((rc = fs_write_all(fd, out.data, out.len)) == 0 && fsync(fd) != 0)
        rc = -errno;
    if (rc)
        snprintf(err, errlen, "%s: %s", tmp, strerror(-rc));
    if (fd >= 0)
        close(fd);
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -errno;
        snprintf(err, errlen, "rename %s: %s", path, strerror(errno));
    }
    if (rc)
        unlink(tmp);
    strbuf_free(&out);
    return rc;
}

static int users_main(int argc, char **argv)
{
    const char *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            i++;
        } else if (strcmp(argv[i], "add") == 0 && !name && i + 1 < argc) {
            name = argv[++i];
        } else {
            name = NULL;
            break;
        }
    }
    if (!name) {
        fprintf(stderr, "usage: mailfleet users add NAME [-c FILE]   (password on stdin)\n");
        return 2;
    }
    struct config *cfg = mailfleet_load_config(argc, argv);
    if (!cfg)
        return 2;
    char pass[1024];
    if (!fgets(pass, sizeof(pass), stdin)) {
        fprintf(stderr, "mailfleet users: no password on stdin\n");
        config_free(cfg);
        return 2;
    }
    pass[strcspn(pass, "\r\n")] = 0;
    if (!pass[0]) {
        fprintf(stderr, "mailfleet users: empty password\n");
        config_free(cfg);
        return 2;
    }
    char err[512];
    const char *path = config_str(cfg, "ingest", "users_file");
    int rc = users_set(path, name, pass, err, sizeof(err));
    OPENSSL_cleanse(pass, sizeof(pass));
    if (rc) {
        fprintf(stderr, "mailfleet users: %s\n", err);
        config_free(cfg);
        return 1;
    }
    printf("user %s written to %s\n", name, path);
    config_free(cfg);
    return 0;
}

const struct admin_verb users_verb = {
    "users", "add NAME: add or replace an SMTP AUTH user (password on stdin)", NULL, users_main,
};
