/* store_tool — drives common/store and common/sigv4 from integration tests.
 *
 *   put URI KEY FILE [CONTENT_TYPE]    FILE "-" = stdin; prints "SIZE SHA256"
 *   get URI KEY [OFF LEN]              object (or range) to stdout
 *   head URI KEY                       prints "SIZE CONTENT_TYPE MTIME_MS"
 *   delete URI KEY
 *   list URI PREFIX                    prints "KEY SIZE" lines
 *   fill URI PREFIX N                  puts N small objects PREFIX00000.. (content = key)
 *   presign URI KEY EXPIRES NOW        prints the pre-signed GET URL
 *   stress URI PREFIX THREADS N        THREADS threads share one store: each puts
 *                                      (from memory and from files), reads back,
 *                                      checks N objects; then all are deleted
 *   sign METHOD HOST PATH QUERY AMZDATE REGION SERVICE PAYLOAD_HASH [NAME:VALUE...]
 *                                      prints the Authorization value
 *   presign-query METHOD HOST PATH EXPIRES AMZDATE REGION SERVICE
 *                                      prints the pre-signed query string
 * Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
 * AWS_SESSION_TOKEN.  QUERY "-" means none.  On failure the message goes to
 * stderr and the exit status is the errno (ENOENT = 2, EIO = 5, ...). */
#include "process.h"
#include "sigv4.h"
#include "store.h"
#include "log.h"
#include "strbuf.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(int rc, const char *err)
{
    fprintf(stderr, "store_tool: %s (%d)\n", err, rc);
    return rc < 0 ? (-rc & 0xff) : 1;
}

static struct store *open_or_die(const char *uri)
{
    char err[512];
    struct store *s = store_open(uri, NULL, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "store_tool: %s\n", err);
        exit(EINVAL);
    }
    return s;
}

static int print_entry(void *opaque, const char *key, const struct store_object *o)
{
    printf("%s %" PRIu64 "\n", key, o->size);
    return 0;
}

static int write_stdout(void *opaque, const void *buf, size_t len)
{
    return fwrite(buf, 1, len, stdout) != len;
}

struct stress_arg {
    struct store *s;
    const char *prefix;
    int id, n;
    int rc;
    char err[512];
};

static int collect(void *opaque, const void *buf, size_t len)
{
    strbuf_append_n(opaque, buf, len);
    return 0;
}

static void *stress_thread(void *p)
{
    struct stress_arg *a = p;

    for (int i = 0; i < a->n && a->rc == 0; i++) {
        char key[1100];
        struct strbuf want, got;
        snprintf(key, sizeof(key), "%s%d/%d", a->prefix, a->id, i);
        strbuf_init(&want);
        strbuf_init(&got);
        for (int j = 0; j < 100 + i * 37 + a->id; j++)
            strbuf_appendf(&want, "%s:%d;", key, j);
        if (i % 2 == 0) {
            a->rc = store_put_buf(a->s, key, want.data, want.len, NULL, NULL, a->err, sizeof(a->err));
        } else {
            /* odd ones from a file, starting past a header the put must skip */
            FILE *f = tmpfile();
            if (!f || fwrite("skip", 1, 4, f) != 4 || fwrite(want.data, 1, want.len, f) != want.len ||
                fflush(f) != 0 || fseek(f, 4, SEEK_SET) != 0)
                panic("tmpfile");
            a->rc = store_put_fd(a->s, key, fileno(f), NULL, NULL, a->err, sizeof(a->err));
            fclose(f);
        }
        if (a->rc == 0)
            a->rc = store_get_cb(a->s, key, 0, 0, collect, &got, a->err, sizeof(a->err));
        if (a->rc == 0 && (got.len != want.len || memcmp(got.data, want.data, want.len) != 0)) {
            snprintf(a->err, sizeof(a->err), "%.200s: read back different bytes", key);
            a->rc = -EIO;
        }
        strbuf_free(&want);
        strbuf_free(&got);
    }
    return NULL;
}

static int cmd_stress(struct store *s, const char *prefix, int threads, int n, char *err, size_t errlen)
{
    struct stress_arg *a = xcalloc((size_t)threads, sizeof(*a));
    pthread_t *t = xcalloc((size_t)threads, sizeof(*t));
    int rc = 0;

    for (int i = 0; i < threads; i++) {
        a[i] = (struct stress_arg){ .s = s, .prefix = prefix, .id = i, .n = n };
        if (pthread_create(&t[i], NULL, stress_thread, &a[i]) != 0)
            panic("pthread_create");
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        if (a[i].rc && !rc) {
            rc = a[i].rc;
            snprintf(err, errlen, "%s", a[i].err);
        }
    }
    /* Deletes run after the threads, one at a time: s3rver (the test peer)
     * races its own directory clean-up when deletes and puts overlap in one
     * folder and answers 500 (or dies): each thread also writes into its own
     * folder.  Concurrency of the store handle is exercised above. */
    for (int i = 0; i < threads && rc == 0; i++)
        for (int k = 0; k < n && rc == 0; k++) {
            char key[1100];
            snprintf(key, sizeof(key), "%s%d/%d", prefix, i, k);
            rc = store_delete(s, key, err, errlen);
        }
    free(a);
    free(t);
    return rc;
}

static int tool_main(int argc, char **argv)
{
    char err[512];
    int rc;

    if (argc < 2)
        goto usage;
    const char *cmd = argv[1];

    if (strcmp(cmd, "sign") == 0 && argc >= 10) {
        /* argv: sign METHOD HOST PATH QUERY AMZDATE REGION SERVICE PAYLOAD [H:V...] */
        struct sigv4_creds cr = { getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"),
                                  getenv("AWS_SESSION_TOKEN"), argv[7], argv[8] };
        size_t n = (size_t)(argc - 10) + 1;
        struct sigv4_header *h = xcalloc(n, sizeof(*h));
        char **names = xcalloc(n, sizeof(*names));
        h[0].name = "host";
        h[0].value = argv[3];
        for (int i = 10; i < argc; i++) {
            char *colon = strchr(argv[i], ':');
            if (!colon) {
                fprintf(stderr, "store_tool: header '%s' has no ':'\n", argv[i]);
                return EINVAL;
            }
            names[i - 9] = xstrndup(argv[i], (size_t)(colon - argv[i]));
            h[i - 9].name = names[i - 9];
            h[i - 9].value = colon + 1;
        }
        char *cr_text = NULL;
        char *auth = sigv4_sign(&cr, argv[2], argv[4], strcmp(argv[5], "-") ? argv[5] : NULL, h, n, argv[9],
                                argv[6], &cr_text, NULL);
        if (!auth) {
            fprintf(stderr, "store_tool: sigv4_sign refused the input\n");
            return EINVAL;
        }
        printf("%s\n", auth);
        if (getenv("STORE_TOOL_DEBUG"))
            fprintf(stderr, "%s\n", cr_text);
        free(auth);
        free(cr_text);
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        free(h);
        return 0;
    }
    if (strcmp(cmd, "presign-query") == 0 && argc == 9) {
        struct sigv4_creds cr = { getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"),
                                  getenv("AWS_SESSION_TOKEN"), argv[7], argv[8] };
        char *q = sigv4_presign_query(&cr, argv[2], argv[3], argv[4], atoi(argv[5]), argv[6]);
        if (!q) {
            fprintf(stderr, "store_tool: sigv4_presign_query refused the input\n");
            return EINVAL;
        }
        printf("%s\n", q);
        free(q);
        return 0;
    }
    if (argc < 4)
        goto usage;

    struct store *s = open_or_die(argv[2]);
    const char *key = argv[3];
    rc = 0;
    if (strcmp(cmd, "put") == 0 && (argc == 5 || argc == 6)) {
        struct store_object o;
        int fd = strcmp(argv[4], "-") == 0 ? 0 : open(argv[4], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = -errno;
            snprintf(err, sizeof(err), "open %s: %s", argv[4], strerror(errno));
        } else {
            rc = store_put_fd(s, key, fd, argc == 6 ? argv[5] : NULL, &o, err, sizeof(err));
            if (rc == 0)
                printf("%" PRIu64 " %s\n", o.size, o.sha256);
            if (fd > 0)
                close(fd);
        }
    } else if (strcmp(cmd, "get") == 0 && (argc == 4 || argc == 6)) {
        uint64_t off = argc == 6 ? strtoull(argv[4], NULL, 10) : 0;
        uint64_t len = argc == 6 ? strtoull(argv[5], NULL, 10) : 0;
        rc = store_get_cb(s, key, off, len, write_stdout, NULL, err, sizeof(err));
        fflush(stdout);
    } else if (strcmp(cmd, "head") == 0 && argc == 4) {
        struct store_object o;
        rc = store_head(s, key, &o, err, sizeof(err));
        if (rc == 0)
            printf("%" PRIu64 " %s %" PRId64 "\n", o.size, o.content_type, o.mtime_ms);
    } else if (strcmp(cmd, "delete") == 0 && argc == 4) {
        rc = store_delete(s, key, err, sizeof(err));
    } else if (strcmp(cmd, "list") == 0 && argc == 4) {
        rc = store_list(s, key, print_entry, NULL, err, sizeof(err));
    } else if (strcmp(cmd, "fill") == 0 && argc == 5) {
        int n = atoi(argv[4]);
        for (int i = 0; i < n && rc == 0; i++) {
            char k[1100];
            snprintf(k, sizeof(k), "%s%05d", key, i);
            rc = store_put_buf(s, k, k, strlen(k), "text/plain", NULL, err, sizeof(err));
        }
    } else if (strcmp(cmd, "stress") == 0 && argc == 6) {
        rc = cmd_stress(s, key, atoi(argv[4]), atoi(argv[5]), err, sizeof(err));
        if (rc == 0)
            printf("ok\n");
    } else if (strcmp(cmd, "presign") == 0 && argc == 6) {
        char *url = store_presign_get(s, key, atoi(argv[4]), strtoll(argv[5], NULL, 10), err, sizeof(err));
        if (url)
            printf("%s\n", url);
        else
            rc = -EINVAL;
        free(url);
    } else {
        store_close(s);
        goto usage;
    }
    store_close(s);
    return rc ? fail(rc, err) : 0;

usage:
    fprintf(stderr, "usage: store_tool put|get|head|delete|list|fill|presign URI KEY ... | sign ... | "
                    "presign-query ...\n");
    return EINVAL;
}

int main(int argc, char **argv)
{
    process_init(0);   /* GMime, libcurl, OpenSSL before anything uses them */
    int rc = tool_main(argc, argv);
    process_shutdown();
    return rc;
}
