/* config — INI via libinih, validated against the modules' key tables.
 *
 * Values are stored as text after validation; typed getters convert again,
 * which is cheap and keeps one representation.  Lookups are linear: a config
 * has at most a few hundred entries and is read at startup. */
#include "config.h"
#include "log.h"
#include "strbuf.h"
#include "timeutil.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

struct entry {
    char *section;
    char *key;        /* as declared (a *_file key is stored under its base key) */
    char *value;      /* for secrets given as _file: the file contents */
    int line;
};

struct config {
    char *path;
    const struct config_key *const *tables;
    struct entry *e;
    size_t n, cap;
    char **sections;  /* named sections in file order */
    size_t nsec;
    char *err;
    size_t errlen;
    int failed;
    int line;         /* lines read so far: Debian's inih has no line numbers */
    int mid_line;     /* the last read ended inside a long line */
    int too_long;     /* the line being parsed did not fit inih's buffer */
    int indented;     /* ... starts with blanks: inih continues the last key */
    char unknown_section[128];   /* pending "unknown section" error */
    int unknown_line;
    FILE *f;
};

static const struct config_key *find_key(const struct config_key *const *tables,
                                         const char *section, const char *key)
{
    for (size_t t = 0; tables && tables[t]; t++) {
        for (const struct config_key *k = tables[t]; k->section; k++) {
            size_t sl = strlen(k->section);
            int match;
            if (sl > 2 && strcmp(k->section + sl - 2, ".*") == 0)
                match = strncmp(section, k->section, sl - 1) == 0 && section[sl - 1] != '\0';
            else
                match = strcmp(section, k->section) == 0;
            /* key "*" accepts any key (e.g. [kafka] properties for librdkafka) */
            if (match && (strcmp(key, k->key) == 0 || strcmp(k->key, "*") == 0))
                return k;
        }
    }
    return NULL;
}

static int section_known(const struct config_key *const *tables, const char *section)
{
    for (size_t t = 0; tables && tables[t]; t++)
        for (const struct config_key *k = tables[t]; k->section; k++) {
            size_t sl = strlen(k->section);
            if (sl > 2 && strcmp(k->section + sl - 2, ".*") == 0) {
                if (strncmp(section, k->section, sl - 1) == 0 && section[sl - 1] != '\0')
                    return 1;
            } else if (strcmp(section, k->section) == 0) {
                return 1;
            }
        }
    return 0;
}

int64_t config_parse_size(const char *s)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    uint64_t mult = 1;
    if (*end == 'K' || *end == 'k')
        mult = 1024ULL, end++;
    else if (*end == 'M' || *end == 'm')
        mult = 1024ULL * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mult = 1024ULL * 1024 * 1024, end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || v > (unsigned long long)INT64_MAX / mult)
        return -1;
    return (int64_t)(v * mult);
}

int config_parse_bool(const char *s, bool *out)
{
    static const char *t[] = { "true", "yes", "on", "1" }, *f[] = { "false", "no", "off", "0" };
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, t[i]) == 0) { *out = true; return 0; }
        if (strcasecmp(s, f[i]) == 0) { *out = false; return 0; }
    }
    return -1;
}

static const char *validate(const struct config_key *k, const char *v)
{
    char *end;
    bool b;
    switch (k->type) {
    case CONFIG_INT:
        errno = 0;
        strtoll(v, &end, 10);
        if (errno || end == v || *end)
            return "not an integer";
        return NULL;
    case CONFIG_BOOL:
        return config_parse_bool(v, &b) ? "not a boolean (true/false)" : NULL;
    case CONFIG_SIZE:
        return config_parse_size(v) < 0 ? "not a size (e.g. 512K, 40M)" : NULL;
    case CONFIG_DURATION:
        return duration_parse_ms(v) < 0 ? "not a duration (e.g. 250ms, 30s, 5m, 36h, 14d)" : NULL;
    default:
        return NULL;
    }
}

static void fail(struct config *c, int line, const char *section, const char *key, const char *why)
{
    if (c->failed)
        return;
    c->failed = 1;
    if (line > 0)
        snprintf(c->err, c->errlen, "%s:%d: [%s] %s: %s", c->path ? c->path : "(none)", line,
                 section, key, why);
    else
        snprintf(c->err, c->errlen, "%s: [%s] %s: %s", line == 0 ? "environment" : c->path,
                 section, key, why);
}

static struct entry *lookup(const struct config *c, const char *section, const char *key)
{
    for (size_t i = c->n; i-- > 0;)
        if (strcmp(c->e[i].section, section) == 0 && strcmp(c->e[i].key, key) == 0)
            return &c->e[i];
    return NULL;
}

static char *read_secret_file(const char *path, const char **why)
{
    FILE *f = fopen(path, "r");
    struct strbuf b;
    char buf[4096];
    size_t n;

    if (!f) {
        *why = "cannot read the secret file";
        return NULL;
    }
    strbuf_init(&b);
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        strbuf_append_n(&b, buf, n);
    fclose(f);
    while (b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
        b.data[--b.len] = '\0';
    return strbuf_detach(&b, NULL);
}

static void set(struct config *c, const char *section, const char *name, const char *value, int line)
{
    const struct config_key *k = find_key(c->tables, section, name);
    char base[128];
    int is_file = 0;

    if (!k) {
        size_t nl = strlen(name);
        if (nl > 5 && nl - 5 < sizeof(base) && strcmp(name + nl - 5, "_file") == 0) {
            memcpy(base, name, nl - 5);
            base[nl - 5] = '\0';
            k = find_key(c->tables, section, base);
            if (k && k->type == CONFIG_SECRET)
                is_file = 1;
            else
                k = NULL;
        }
    }
    if (!k) {
        fail(c, line, section, name, section_known(c->tables, section) ? "unknown key" : "unknown section");
        return;
    }
    const char *why = validate(k, value);
    if (why) {
        fail(c, line, section, name, why);
        return;
    }
    char *v;
    if (is_file) {
        v = read_secret_file(value, &why);
        if (!v) {
            fail(c, line, section, name, why);
            return;
        }
    } else {
        v = xstrdup(value);
    }
    const char *skey = is_file ? base : name;
    struct entry *e = lookup(c, section, skey);
    if (e) {
        free(e->value);
        e->value = v;
        e->line = line;
        return;
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 32;
        c->e = xrealloc(c->e, c->cap * sizeof(*c->e));
    }
    c->e[c->n++] = (struct entry){ xstrdup(section), xstrdup(skey), v, line };
}

static void note_section(struct config *c, const char *section)
{
    if (!strchr(section, '.'))
        return;
    for (size_t i = 0; i < c->nsec; i++)
        if (strcmp(c->sections[i], section) == 0)
            return;
    c->sections = xrealloc(c->sections, (c->nsec + 1) * sizeof(char *));
    c->sections[c->nsec++] = xstrdup(section);
}

static void flush_unknown_section(struct config *c)
{
    if (c->unknown_line)
        fail(c, c->unknown_line, c->unknown_section, "", "unknown section");
    c->unknown_line = 0;
}

/* inih reads one line per call, so counting here gives the handler's line.
 * A line counts when it starts (a last line may lack its newline).  Debian's
 * inih does not call the handler for a section header, so headers are seen
 * here: an unknown section with no keys is still an error, and a named
 * section with only defaults still shows in config_sections(). */
static char *read_line(char *buf, int size, void *stream)
{
    struct config *c = stream;
    char *r = fgets(buf, size, c->f);
    if (!r)
        return r;
    if (!c->mid_line) {
        c->line++;
        const char *p = r, *end;
        while (*p == ' ' || *p == '\t')
            p++;
        c->indented = p > r;
        if (*p == '[' && (end = strchr(p, ']')) != NULL && end > p + 1) {
            char section[128];
            snprintf(section, sizeof(section), "%.*s", (int)(end - p - 1), p + 1);
            flush_unknown_section(c);
            if (!section_known(c->tables, section)) {
                /* reported at its first key if it has one (the line users
                 * look at), else at the header when the section ends */
                snprintf(c->unknown_section, sizeof(c->unknown_section), "%s", section);
                c->unknown_line = c->line;
            } else {
                note_section(c, section);
            }
        }
    }
    c->mid_line = strchr(r, '\n') == NULL;
    c->too_long = c->mid_line && !feof(c->f);
    return r;
}

/* An indented line after a key continues its value (inih's multi-line
 * values): for a list, its items are appended; nothing else may continue. */
static void append(struct config *c, const char *section, const char *name, const char *value, int line)
{
    const struct config_key *k = find_key(c->tables, section, name);
    struct entry *e = lookup(c, section, name);
    if (!k || k->type != CONFIG_LIST || !e) {
        fail(c, line, section, name, "only a list may go on over indented lines");
        return;
    }
    /* "a,\n  b" and "a\n  , b" both read as "a, b" */
    size_t keep = strlen(e->value);
    while (keep && (e->value[keep - 1] == ',' || e->value[keep - 1] == ' '))
        keep--;
    value += strspn(value, ", ");
    size_t n = keep + strlen(value) + 3;
    char *v = xmalloc(n);
    snprintf(v, n, "%.*s%s%s", (int)keep, e->value, keep && *value ? ", " : "", value);
    free(e->value);
    e->value = v;
}

static int on_ini(void *user, const char *section, const char *name, const char *value)
{
    struct config *c = user;
    int line = c->line;
    if (!name) {  /* new section (INI_CALL_HANDLER_ON_NEW_SECTION) */
        if (!section_known(c->tables, section))
            fail(c, line, section, "", "unknown section");
        else
            note_section(c, section);
        return 1;
    }
    note_section(c, section);
    if (c->too_long) {
        char why[96];
        snprintf(why, sizeof(why), "line longer than %d characters: go on over indented lines", INI_MAX_LINE - 2);
        fail(c, line, section, name, why);
    } else if (c->indented) {
        append(c, section, name, value, line);
    } else {
        set(c, section, name, value, line);
    }
    return 1;
}

/* "RULE_CAPTURE" matches "rule.capture": case-insensitive, '.' and '-' as '_'. */
static int env_name_match(const char *env, size_t n, const char *name)
{
    size_t i;
    for (i = 0; i < n && name[i]; i++) {
        char a = (char)tolower((unsigned char)env[i]);
        char b = name[i] == '.' || name[i] == '-' ? '_' : (char)tolower((unsigned char)name[i]);
        if (a != b)
            return 0;
    }
    return i == n && name[i] == '\0';
}

static void apply_env(struct config *c)
{
    for (char **ep = environ; ep && *ep && !c->failed; ep++) {
        if (strncmp(*ep, "MAILFLEET__", 11) != 0)
            continue;
        const char *s = *ep + 11, *sep = strstr(s, "__"), *eq = strchr(s, '=');
        if (!sep || !eq || sep > eq) {
            char name[160];   /* the name only: the value may be a secret */
            snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - *ep) : 64, *ep);
            fail(c, 0, "?", name, "environment override must be MAILFLEET__SECTION__KEY=value");
            return;
        }
        const char *section = NULL, *key = NULL;
        /* candidate sections: fixed ones from the tables, named ones from the file */
        for (size_t t = 0; c->tables[t] && !section; t++)
            for (const struct config_key *k = c->tables[t]; k->section; k++)
                if (!strstr(k->section, ".*") && env_name_match(s, (size_t)(sep - s), k->section)) {
                    section = k->section;
                    break;
                }
        for (size_t i = 0; i < c->nsec && !section; i++)
            if (env_name_match(s, (size_t)(sep - s), c->sections[i]))
                section = c->sections[i];
        char keybuf[128];
        size_t kl = (size_t)(eq - sep - 2);
        if (!section || kl == 0 || kl >= sizeof(keybuf)) {
            char name[160];
            snprintf(name, sizeof(name), "%.*s", (int)(eq - *ep), *ep);
            fail(c, 0, "?", name, "environment override names an unknown section");
            return;
        }
        for (size_t i = 0; i < kl; i++)
            keybuf[i] = (char)tolower((unsigned char)sep[2 + i]);
        keybuf[kl] = '\0';
        key = keybuf;
        set(c, section, key, eq + 1, 0);
    }
}

struct config *config_load(const char *path, const struct config_key *const *tables, char *err,
                           size_t errlen)
{
    struct config *c = xcalloc(1, sizeof(*c));
    c->tables = tables;
    c->path = path ? xstrdup(path) : NULL;
    c->err = err;
    c->errlen = errlen;
    if (path) {
        FILE *f = fopen(path, "r");
        if (!f) {
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
            config_free(c);
            return NULL;
        }
        c->f = f;
        int rc = ini_parse_stream(read_line, c, on_ini, c);
        fclose(f);
        flush_unknown_section(c);
        if (rc > 0 && !c->failed) {
            snprintf(err, errlen, "%s:%d: syntax error", path, rc);
            c->failed = 1;
        }
    }
    if (!c->failed)
        apply_env(c);
    if (c->failed) {
        config_free(c);
        return NULL;
    }
    c->err = NULL;
    return c;
}

void config_free(struct config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->e[i].section);
        free(c->e[i].key);
        free(c->e[i].value);
    }
    for (size_t i = 0; i < c->nsec; i++)
        free(c->sections[i]);
    free(c->sections);
    free(c->e);
    free(c->path);
    free(c);
}

const char *config_path(const struct config *c)
{
    return c->path;
}

static const char *raw(const struct config *c, const char *section, const char *key,
                       const struct config_key **kp)
{
    const struct config_key *k = find_key(c->tables, section, key);
    if (!k)
        panic("%s: [%s] %s is not declared in any config table", __func__, section, key);
    if (kp)
        *kp = k;
    struct entry *e = lookup(c, section, key);
    return e ? e->value : k->def;
}

const char *config_str(const struct config *c, const char *section, const char *key)
{
    return raw(c, section, key, NULL);
}

bool config_isset(const struct config *c, const char *section, const char *key)
{
    return raw(c, section, key, NULL) != NULL;
}

int64_t config_int(const struct config *c, const char *section, const char *key)
{
    const char *v = raw(c, section, key, NULL);
    return v ? strtoll(v, NULL, 10) : 0;
}

bool config_bool(const struct config *c, const char *section, const char *key)
{
    const char *v = raw(c, section, key, NULL);
    bool b = false;
    if (v)
        config_parse_bool(v, &b);
    return b;
}

uint64_t config_size(const struct config *c, const char *section, const char *key)
{
    const char *v = raw(c, section, key, NULL);
    int64_t n = v ? config_parse_size(v) : 0;
    return n < 0 ? 0 : (uint64_t)n;
}

int64_t config_duration_ms(const struct config *c, const char *section, const char *key)
{
    const char *v = raw(c, section, key, NULL);
    int64_t n = v ? duration_parse_ms(v) : 0;
    return n < 0 ? 0 : n;
}

char *config_secret(const struct config *c, const char *section, const char *key)
{
    const char *v = raw(c, section, key, NULL);
    return v ? xstrdup(v) : NULL;
}

size_t config_list(const struct config *c, const char *section, const char *key, char ***out)
{
    const char *v = raw(c, section, key, NULL);
    size_t n = 0;
    *out = NULL;
    if (!v)
        return 0;
    const char *p = v;
    while (*p) {
        const char *q = strchr(p, ',');
        if (!q)
            q = p + strlen(p);
        const char *a = p, *b = q;
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        if (b > a) {
            *out = xrealloc(*out, (n + 1) * sizeof(char *));
            (*out)[n++] = xstrndup(a, (size_t)(b - a));
        }
        p = *q ? q + 1 : q;
    }
    return n;
}

void config_list_free(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

size_t config_sections(const struct config *c, const char *prefix, const char ***out)
{
    size_t pl = strlen(prefix), n = 0;
    const char **v = NULL;
    for (size_t i = 0; i < c->nsec; i++)
        if (strncmp(c->sections[i], prefix, pl) == 0 && c->sections[i][pl] == '.') {
            v = xrealloc(v, (n + 1) * sizeof(char *));
            v[n++] = c->sections[i];
        }
    *out = v;   /* NULL when none: free() is always right */
    return n;
}

size_t config_section_keys(const struct config *c, const char *section, const char ***out)
{
    size_t n = 0;
    const char **v = NULL;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->e[i].section, section) == 0) {
            v = xrealloc(v, (n + 1) * 2 * sizeof(char *));
            v[2 * n] = c->e[i].key;
            v[2 * n + 1] = c->e[i].value;
            n++;
        }
    *out = v;
    return n;
}

void config_write_example(const struct config_key *const *tables, FILE *f)
{
    const char *last = NULL;
    for (size_t t = 0; tables[t]; t++)
        for (const struct config_key *k = tables[t]; k->section; k++) {
            if (!last || strcmp(last, k->section) != 0) {
                size_t sl = strlen(k->section);
                if (sl > 2 && strcmp(k->section + sl - 2, ".*") == 0)   /* named sections */
                    fprintf(f, "\n# [%.*s.NAME] (any number, in order)\n", (int)(sl - 2), k->section);
                else
                    fprintf(f, "\n[%s]\n", k->section);
                last = k->section;
            }
            int named = strstr(k->section, ".*") != NULL;
            fprintf(f, "# %s\n", k->doc ? k->doc : "");
            if (strcmp(k->key, "*") == 0)
                continue;   /* free-form section: the doc line shows the form */
            fprintf(f, "%s%s = %s\n", named || !k->def ? "# " : "", k->key, k->def ? k->def : "");
            if (k->type == CONFIG_SECRET)
                fprintf(f, "# %s_file = /run/secrets/...\n", k->key);
        }
}
