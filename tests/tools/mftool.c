/* mftool — small test helper over the project's own modules:
 *   mftool sign KEYS PAYLOAD [EXPIRES_S]   print a token (KEYS: kid:secret,...)
 *   mftool put BUS TOPIC KEY FILE|-        produce one record (value from FILE)
 *   mftool store-put STORE KEY FILE        put an object
 * Used by integration tests to stand in for a producer that is not under
 * test; everything it does goes through the same common/ code as workers. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "store.h"
#include "strbuf.h"
#include "tokens.h"

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

int main(int argc, char **argv)
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
    fprintf(stderr, "usage: mftool sign KEYS PAYLOAD [EXP] | put BUS TOPIC KEY FILE | store-put STORE KEY FILE\n");
    return 2;
}
