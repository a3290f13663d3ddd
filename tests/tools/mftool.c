/* mftool — small test helper over the project's own modules:
 *   mftool sign KEYS PAYLOAD [EXPIRES_S]   print a token (KEYS: kid:secret,...)
 *   mftool verp TAG KEYS ID RCPT           print a VERP token (tags verp, unsubscribe)
 *   mftool put BUS TOPIC KEY FILE|-        produce one record (value from FILE)
 *   mftool put-n BUS TOPIC N FILE          produce N records (keys k0..), one batch
 *   mftool dump BUS TOPIC                  print every value, one per line
 *   mftool commit BUS GROUP TOPIC          move GROUP to the end of TOPIC
 *   mftool store-put STORE KEY FILE        put an object
 * Used by integration tests to stand in for a producer that is not under
 * test; everything it does goes through the same common/ code as workers. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "process.h"
#include "bus.h"
#include "store.h"
#include "strbuf.h"
#include "tokens.h"
#include "verp.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    struct strbuf b;
    char buf[65536];
    size_t n;
    if (!f)
        return NULL;
    strbuf_init(&b);
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        strbuf_append_n(&b, buf, n);
    if (f != stdin)
        fclose(f);
    return strbuf_detach(&b, len);
}

static int print_value(void *opaque, const struct bus_record *r)
{
    if (r->value)
        printf("%.*s\n", (int)r->value_len, (const char *)r->value);
    return 0;
}

static int tool_main(int argc, char **argv)
{
    char err[512];
    if (argc >= 4 && strcmp(argv[1], "sign") == 0) {
        char *keys = xstrdup(argv[2]);
        const char *v[16];
        size_t n = 0;
        for (char *s = NULL, *k = strtok_r(keys, ",", &s); k && n < 16; k = strtok_r(NULL, ",", &s))
            v[n++] = k;
        struct tokens *t = tokens_new(v, n, err, sizeof(err));
        if (!t) {
            fprintf(stderr, "mftool: %s\n", err);
            return 1;
        }
        char *tok = tokens_sign(t, argv[3], strlen(argv[3]), argc > 4 ? atoll(argv[4]) : 0);
        printf("%s\n", tok);
        free(tok);
        tokens_free(t);
        free(keys);
        return 0;
    }
    if (argc == 6 && strcmp(argv[1], "verp") == 0) {
        char *keys = xstrdup(argv[3]), tok[VERP_TOKEN_LEN + 1];
        const char *v[16];
        size_t n = 0;
        for (char *s = NULL, *k = strtok_r(keys, ",", &s); k && n < 16; k = strtok_r(NULL, ",", &s))
            v[n++] = k;
        struct tokens *t = tokens_new(v, n, err, sizeof(err));
        struct verp_keys *vk = t ? verp_keys_new(t) : NULL;
        if (!vk || verp_keys_token(vk, argv[2], argv[4], argv[5], tok) != 0) {
            fprintf(stderr, "mftool: cannot make a VERP token\n");
            return 1;
        }
        printf("%s\n", tok);
        verp_keys_free(vk);
        tokens_free(t);
        free(keys);
        return 0;
    }
    if (argc == 6 && strcmp(argv[1], "put") == 0) {
        size_t len;
        char *val = slurp(argv[5], &len);
        struct bus *b = bus_open(argv[2], NULL, err, sizeof(err));
        if (!val || !b) {
            fprintf(stderr, "mftool: %s\n", val ? err : "cannot read value");
            return 1;
        }
        struct bus_record r = { .topic = argv[3], .key = argv[4], .key_len = strlen(argv[4]),
                                .value = val, .value_len = len, .partition = -1 };
        int rc = bus_produce(b, &r, 1, 30000, err, sizeof(err));
        if (rc)
            fprintf(stderr, "mftool: %s\n", err);
        bus_close(b);
        free(val);
        return rc ? 1 : 0;
    }
    if (argc == 6 && strcmp(argv[1], "put-n") == 0) {
        size_t len;
        long n = atol(argv[4]);
        char *val = slurp(argv[5], &len);
        struct bus *b = bus_open(argv[2], NULL, err, sizeof(err));
        if (!val || !b || n <= 0) {
            fprintf(stderr, "mftool: %s\n", b ? "bad value or count" : err);
            return 1;
        }
        struct bus_record *rs = xcalloc((size_t)n, sizeof(*rs));
        char (*keys)[24] = xcalloc((size_t)n, 24);
        for (long i = 0; i < n; i++) {
            snprintf(keys[i], 24, "k%ld", i);
            rs[i] = (struct bus_record){ .topic = argv[3], .key = keys[i], .key_len = strlen(keys[i]),
                                         .value = val, .value_len = len, .partition = -1 };
        }
        int rc = bus_produce(b, rs, (size_t)n, 60000, err, sizeof(err));
        if (rc)
            fprintf(stderr, "mftool: %s\n", err);
        bus_close(b);
        free(rs);
        free(keys);
        free(val);
        return rc ? 1 : 0;
    }
    if (argc == 4 && strcmp(argv[1], "dump") == 0) {
        struct bus *b = bus_open(argv[2], NULL, err, sizeof(err));
        if (!b || bus_scan(b, argv[3], print_value, NULL, err, sizeof(err)) < 0) {
            fprintf(stderr, "mftool: %s\n", err);
            return 1;
        }
        bus_close(b);
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "commit") == 0) {
        struct bus *b = bus_open(argv[2], NULL, err, sizeof(err));
        struct bus_partition_stats st[64];
        int n = b ? bus_topic_stats(b, argv[4], argv[3], st, 64, err, sizeof(err)) : -1;
        for (int p = 0; p < n; p++)
            if (bus_group_set_offset(b, argv[3], argv[4], st[p].partition, st[p].high, err, sizeof(err)))
                n = -1;
        if (n < 0)
            fprintf(stderr, "mftool: %s\n", err);
        bus_close(b);
        return n < 0;
    }
    if (argc == 5 && strcmp(argv[1], "store-put") == 0) {
        struct store *s = store_open(argv[2], NULL, err, sizeof(err));
        int fd = open(argv[4], O_RDONLY);
        struct store_object o;
        if (!s || fd < 0 || store_put_fd(s, argv[3], fd, "message/rfc822", &o, err, sizeof(err))) {
            fprintf(stderr, "mftool: %s\n", s ? err : "cannot open store");
            return 1;
        }
        printf("%s %llu\n", o.sha256, (unsigned long long)o.size);
        close(fd);
        store_close(s);
        return 0;
    }
    fprintf(stderr, "usage: mftool sign|verp|put|put-n|dump|commit|store-put ... (see the top of mftool.c)\n");
    return 2;
}

int main(int argc, char **argv)
{
    process_init(0);   /* GMime, libcurl, OpenSSL before anything uses them */
    int rc = tool_main(argc, argv);
    process_shutdown();
    return rc;
}
