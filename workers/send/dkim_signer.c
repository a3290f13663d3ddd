/* dkim_signer — a thin layer over libopendkim's signing API.  The key is
 * read once at startup (a bad key is a startup error, not a send failure);
 * the library never touches DNS when signing. */
#include "dkim_signer.h"
#include "log.h"
#include "strbuf.h"

#include <dkim.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dkim_signer {
    DKIM_LIB *lib;
    dkim_alg_t alg;
    char *selector, *domain;
    unsigned char *key;
};

static const char *sign_headers[] = {
    "from", "to", "subject", "date", "message-id", "mime-version", "content-type",
    "list-unsubscribe", "list-unsubscribe-post", NULL
};

static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "dkim_key_file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct strbuf b;
    strbuf_init(&b);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0 && b.len < (1 << 20))
        strbuf_append_n(&b, buf, n);
    fclose(f);
    if (b.len == 0) {
        snprintf(err, errlen, "dkim_key_file %s: empty", path);
        strbuf_free(&b);
        return NULL;
    }
    return strbuf_detach(&b, NULL);
}

void dkim_signer_free(struct dkim_signer *s)
{
    if (!s)
        return;
    if (s->lib)
        dkim_close(s->lib);
    free(s->selector);
    free(s->domain);
    if (s->key) {
        memset(s->key, 0, strlen((char *)s->key));
        free(s->key);
    }
    free(s);
}

struct dkim_signer *dkim_signer_new(const char *alg, const char *selector, const char *domain,
                                    const char *key_file, char *err, size_t errlen)
{
    dkim_alg_t a;
    if (!alg || strcmp(alg, "rsa-sha256") == 0)
        a = DKIM_SIGN_RSASHA256;
    else if (strcmp(alg, "ed25519-sha256") == 0)
        a = DKIM_SIGN_ED25519SHA256;
    else {
        snprintf(err, errlen, "dkim_algorithm = %s: expected rsa-sha256 or ed25519-sha256", alg);
        return NULL;
    }
    if (!selector || !*selector || !domain || !*domain || !key_file || !*key_file) {
        snprintf(err, errlen, "dkim needs dkim_selector, dkim_domain and dkim_key_file");
        return NULL;
    }
    struct dkim_signer *s = xcalloc(1, sizeof(*s));
    s->alg = a;
    s->selector = xstrdup(selector);
    s->domain = xstrdup(domain);
    s->key = (unsigned char *)read_file(key_file, err, errlen);
    if (!s->key) {
        dkim_signer_free(s);
        return NULL;
    }
    s->lib = dkim_init(NULL, NULL);
    if (!s->lib) {
        snprintf(err, errlen, "dkim_init failed");
        dkim_signer_free(s);
        return NULL;
    }
    if (a == DKIM_SIGN_ED25519SHA256 && !dkim_libfeature(s->lib, DKIM_FEATURE_ED25519)) {
        snprintf(err, errlen, "this libopendkim has no ed25519-sha256 support");
        dkim_signer_free(s);
        return NULL;
    }
    /* Seen under LeakSanitizer: libopendkim 2.11 never frees the ed25519
     * EVP_PKEY it loads for each signature (~1 KB per message).  RSA is clean. */
    if (a == DKIM_SIGN_ED25519SHA256)
        log_kv(LOG_WARN, "dkim ed25519-sha256: libopendkim 2.11 leaks about 1 KB per signature; "
               "prefer rsa-sha256 or restart periodically", NULL);
    if (dkim_options(s->lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, sign_headers, sizeof(char **)) !=
        DKIM_STAT_OK) {
        snprintf(err, errlen, "dkim_options(SIGNHDRS) failed");
        dkim_signer_free(s);
        return NULL;
    }
    /* Prove the key works now rather than on the first message. */
    static const char probe[] = "From: a@example.com\r\nSubject: probe\r\n\r\nprobe\r\n";
    char *h = dkim_signer_sign(s, "probe", "", 0, probe, sizeof(probe) - 1, err, errlen);
    if (!h) {
        dkim_signer_free(s);
        return NULL;
    }
    free(h);
    return s;
}

char *dkim_signer_sign(struct dkim_signer *s, const char *id, const char *prefix, size_t plen,
                       const char *body, size_t blen, char *err, size_t errlen)
{
    DKIM_STAT st;
    DKIM *d = dkim_sign(s->lib, (const unsigned char *)id, NULL, s->key,
                        (const unsigned char *)s->selector, (const unsigned char *)s->domain,
                        DKIM_CANON_RELAXED, DKIM_CANON_RELAXED, s->alg, -1, &st);
    if (!d) {
        snprintf(err, errlen, "dkim_sign: status %d", st);
        return NULL;
    }
    char *out = NULL;
    if ((plen && (st = dkim_chunk(d, (unsigned char *)prefix, plen)) != DKIM_STAT_OK) ||
        (st = dkim_chunk(d, (unsigned char *)body, blen)) != DKIM_STAT_OK ||
        (st = dkim_chunk(d, NULL, 0)) != DKIM_STAT_OK ||
        (st = dkim_eom(d, NULL)) != DKIM_STAT_OK) {
        const char *e = dkim_geterror(d);
        snprintf(err, errlen, "dkim: status %d%s%s", st, e ? ": " : "", e ? e : "");
        dkim_free(d);
        return NULL;
    }
    unsigned char *val = NULL;
    size_t vlen = 0;
    static const char name[] = "DKIM-Signature: ";
    if ((st = dkim_getsighdr_d(d, sizeof(name) - 1, &val, &vlen)) != DKIM_STAT_OK) {
        snprintf(err, errlen, "dkim_getsighdr: status %d", st);
        dkim_free(d);
        return NULL;
    }
    /* The library folds with bare LF; the message is CRLF throughout. */
    struct strbuf b;
    strbuf_init(&b);
    strbuf_append(&b, name);
    for (size_t i = 0; i < vlen; i++) {
        if (val[i] == '\n' && (i == 0 || val[i - 1] != '\r'))
            strbuf_append_n(&b, "\r\n", 2);
        else if (val[i] != '\r' || (i + 1 < vlen && val[i + 1] == '\n'))
            strbuf_append_n(&b, &val[i], 1);
    }
    strbuf_append(&b, "\r\n");
    out = strbuf_detach(&b, NULL);
    dkim_free(d);
    return out;
}
