/* config: every key type, defaults, errors naming file:line:key, *_file
 * secrets, environment overrides, named sections, "*" keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static const struct config_key test_keys[] = {
    { "main", "name", CONFIG_STR, "mailfleet", "a string" },
    { "main", "count", CONFIG_INT, "5", "an int" },
    { "main", "flag", CONFIG_BOOL, "false", "a bool" },
    { "main", "max_size", CONFIG_SIZE, "40M", "a size" },
    { "main", "timeout", CONFIG_DURATION, "30s", "a duration" },
    { "main", "password", CONFIG_SECRET, NULL, "a secret" },
    { "main", "hosts", CONFIG_LIST, "a, b", "a list" },
    { "main", "unset", CONFIG_STR, NULL, "no default" },
    { "http", "listen", CONFIG_STR, "127.0.0.1:9100", "where" },
    { "rule.*", "match", CONFIG_LIST, NULL, "recipient patterns" },
    { "rule.*", "action", CONFIG_STR, "capture", "what to do" },
    { "rule.*", "max_size", CONFIG_SIZE, "10M", "per rule" },
    { "kafka", "*", CONFIG_STR, NULL, "librdkafka properties" },
    CONFIG_KEYS_END
};
static const struct config_key *const tables[] = { test_keys, NULL };

struct fixture {
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/mf-config-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/test.ini", f->dir);
    *state = f;
    return 0;
}

static void clear_env(void)
{
    /* collect first: unsetenv while walking environ skips entries */
    extern char **environ;
    char names[32][128];
    int n = 0;
    for (char **ep = environ; *ep && n < 32; ep++)
        if (strncmp(*ep, "MAILFLEET__", 11) == 0) {
            const char *eq = strchr(*ep, '=');
            snprintf(names[n++], sizeof(names[0]), "%.*s", (int)(eq - *ep), *ep);
        }
    for (int i = 0; i < n; i++)
        unsetenv(names[i]);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    clear_env();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static struct config *load_text(struct fixture *f, const char *text, char *err, size_t errlen)
{
    write_file(f->path, text);
    err[0] = '\0';
    return config_load(f->path, tables, err, errlen);
}

static void test_defaults_without_file(void **state)
{
    char err[256] = "";
    struct config *c = config_load(NULL, tables, err, sizeof(err));
    assert_non_null(c);
    assert_null(config_path(c));
    assert_string_equal(config_str(c, "main", "name"), "mailfleet");
    assert_int_equal(config_int(c, "main", "count"), 5);
    assert_false(config_bool(c, "main", "flag"));
    assert_int_equal(config_size(c, "main", "max_size"), 40ULL << 20);
    assert_int_equal(config_duration_ms(c, "main", "timeout"), 30000);
    assert_null(config_secret(c, "main", "password"));
    assert_false(config_isset(c, "main", "password"));
    assert_null(config_str(c, "main", "unset"));
    assert_false(config_isset(c, "main", "unset"));
    assert_true(config_isset(c, "main", "name"));
    char **list;
    size_t n = config_list(c, "main", "hosts", &list);
    assert_int_equal(n, 2);
    assert_string_equal(list[0], "a");
    assert_string_equal(list[1], "b");
    config_list_free(list, n);
    const char **secs;
    assert_int_equal(config_sections(c, "rule", &secs), 0);
    config_free(c);
    config_free(NULL);
}

static void test_values_of_every_type(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct config *c = load_text(f,
        "; comment\n"
        "# another\n"
        "[main]\n"
        "name = edge-1\n"
        "count = -42\n"
        "flag = yes\n"
        "max_size = 512K\n"
        "timeout = 250ms\n"
        "password = hunter2-but-longer\n"
        "hosts =  x.example:1 ,y.example:2,, z ,\n"
        "unset = now set\n"
        "\n"
        "[http]\n"
        "listen = 0.0.0.0:1\n", err, sizeof(err));
    if (!c)
        fail_msg("load: %s", err);
    assert_string_equal(config_path(c), f->path);
    assert_string_equal(config_str(c, "main", "name"), "edge-1");
    assert_int_equal(config_int(c, "main", "count"), -42);
    assert_true(config_bool(c, "main", "flag"));
    assert_int_equal(config_size(c, "main", "max_size"), 512 * 1024);
    assert_int_equal(config_duration_ms(c, "main", "timeout"), 250);
    char *s = config_secret(c, "main", "password");
    assert_string_equal(s, "hunter2-but-longer");
    free(s);
    assert_string_equal(config_str(c, "main", "unset"), "now set");
    assert_string_equal(config_str(c, "http", "listen"), "0.0.0.0:1");
    char **list;
    size_t n = config_list(c, "main", "hosts", &list);
    assert_int_equal(n, 3);
    assert_string_equal(list[0], "x.example:1");
    assert_string_equal(list[1], "y.example:2");
    assert_string_equal(list[2], "z");
    config_list_free(list, n);
    config_free(c);
}

/* 220 characters of list: more than inih's 200-byte line */
#define LONG_LIST "a1234567890, b1234567890, c1234567890, d1234567890, e1234567890, f1234567890, " \
                  "g1234567890, h1234567890, i1234567890, j1234567890, k1234567890, l1234567890, " \
                  "m1234567890, n1234567890, o1234567890, p1234567890"

static void test_list_over_indented_lines(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct config *c = load_text(f,
        "[main]\n"
        "hosts = x.example:1,\n"
        "  y.example:2\n"
        "\t, z\n"
        "name = after\n"
        "[rule.r]\n"
        "match = a@b.example,\n"
        "    c@d.example\n", err, sizeof(err));
    if (!c)
        fail_msg("load: %s", err);
    char **list;
    size_t n = config_list(c, "main", "hosts", &list);
    assert_int_equal(n, 3);
    assert_string_equal(list[0], "x.example:1");
    assert_string_equal(list[1], "y.example:2");
    assert_string_equal(list[2], "z");
    config_list_free(list, n);
    n = config_list(c, "rule.r", "match", &list);
    assert_int_equal(n, 2);
    assert_string_equal(list[1], "c@d.example");
    config_list_free(list, n);
    assert_string_equal(config_str(c, "main", "name"), "after");
    config_free(c);
}

static void test_errors_name_file_line_key(void **state)
{
    struct fixture *f = *state;
    static const struct { const char *text; int line; const char *key, *why; } rows[] = {
        { "[main]\nname = a\n\nbogus = 1\n", 4, "bogus", "unknown key" },
        { "[main]\nname = a\n[nosuch]\nx = 1\n", 4, "[nosuch]", "unknown section" },
        { "[main]\ncount = abc\n", 2, "count", "not an integer" },
        { "[main]\ncount = 12abc\n", 2, "count", "not an integer" },
        { "[main]\ncount = 99999999999999999999\n", 2, "count", "not an integer" },
        { "[main]\nflag = maybe\n", 2, "flag", "not a boolean" },
        { "[main]\nmax_size = 12X\n", 2, "max_size", "not a size" },
        { "[main]\nmax_size = -1\n", 2, "max_size", "not a size" },
        { "[main]\ntimeout = forever\n", 2, "timeout", "not a duration" },
        { "[main]\ntimeout = 5 m\n", 2, "timeout", "not a duration" },
        { "[main]\ntimeout = -5s\n", 2, "timeout", "not a duration" },
        { "[main]\n# c\n; c\n\n\n\ntimeout = 1w\n", 7, "timeout", "not a duration" },
        { "[main]\nname_file = /nonexistent\n", 2, "name_file", "unknown key" },   /* not a secret */
        { "[main]\npassword_file = /nonexistent/secret\n", 2, "password_file", "cannot read" },
        { "[rule.capture]\nmatch = a@b.example\nbogus = 1\n", 3, "[rule.capture] bogus", "unknown key" },
        { "[rule]\nmatch = x\n", 2, "[rule]", "unknown section" },  /* "rule.*" needs a name */
        { "[main]\nname = a\nbogus = 1", 3, "bogus", "unknown key" },  /* no final newline */
        { "[main]\ncount = 1\n  2\n", 3, "count", "only a list may go on over indented lines" },
        { "[main]\nhosts = " LONG_LIST "\n", 2, "hosts", "line longer than 198 characters" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char err[512], want[256];
        struct config *c = load_text(f, rows[i].text, err, sizeof(err));
        if (c) {
            config_free(c);
            fail_msg("row %zu accepted", i);
        }
        snprintf(want, sizeof(want), "%s:%d: ", f->path, rows[i].line);
        if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, rows[i].key) || !strstr(err, rows[i].why))
            fail_msg("row %zu: error '%s', want '%s' ... '%s' ... '%s'", i, err, want, rows[i].key, rows[i].why);
    }
}

static void test_syntax_error_and_missing_file(void **state)
{
    struct fixture *f = *state;
    char err[512], want[256];
    struct config *c = load_text(f, "[main]\nname = a\n[broken\n", err, sizeof(err));
    assert_null(c);
    snprintf(want, sizeof(want), "%s:3: syntax error", f->path);
    assert_string_equal(err, want);
    assert_null(config_load("/nonexistent/mailfleet.ini", tables, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/mailfleet.ini"));
    assert_non_null(strstr(err, "cannot open"));
}

/* A section with no keys is still a section: a typo is an error, and a named
 * section that takes every default still exists. */
static void test_empty_sections(void **state)
{
    struct fixture *f = *state;
    char err[512], want[256];
    struct config *c = load_text(f, "[main]\n\n[mian]\n# name = x\n", err, sizeof(err));
    assert_null(c);
    snprintf(want, sizeof(want), "%s:3: ", f->path);
    assert_non_null(strstr(err, want));
    assert_non_null(strstr(err, "unknown section"));

    c = load_text(f, "[rule.defaults]\n[rule.other]\naction = reject\n", err, sizeof(err));
    if (!c)
        fail_msg("load: %s", err);
    const char **secs;
    size_t n = config_sections(c, "rule", &secs);
    assert_int_equal(n, 2);
    assert_string_equal(secs[0], "rule.defaults");
    assert_string_equal(config_str(c, secs[0], "action"), "capture");
    free(secs);
    config_free(c);
}

static void test_secret_file(void **state)
{
    struct fixture *f = *state;
    char secret[128], text[256], err[256];
    snprintf(secret, sizeof(secret), "%s/pw", f->dir);
    write_file(secret, "s3cret-from-file\r\n\n");
    snprintf(text, sizeof(text), "[main]\npassword_file = %s\n", secret);
    struct config *c = load_text(f, text, err, sizeof(err));
    if (!c)
        fail_msg("load: %s", err);
    char *s = config_secret(c, "main", "password");
    assert_string_equal(s, "s3cret-from-file");   /* trailing newlines stripped */
    free(s);
    assert_true(config_isset(c, "main", "password"));
    config_free(c);
    /* a later inline value replaces the file */
    snprintf(text, sizeof(text), "[main]\npassword_file = %s\npassword = inline\n", secret);
    c = load_text(f, text, err, sizeof(err));
    assert_non_null(c);
    s = config_secret(c, "main", "password");
    assert_string_equal(s, "inline");
    free(s);
    config_free(c);
}

static void test_env_overrides(void **state)
{
    struct fixture *f = *state;
    char secret[128], err[256];
    snprintf(secret, sizeof(secret), "%s/pw", f->dir);
    write_file(secret, "from-env-file\n");
    setenv("MAILFLEET__MAIN__COUNT", "9", 1);
    setenv("mailfleet__x", "ignored: prefix is case-sensitive", 1);
    setenv("MAILFLEET__Main__Flag", "on", 1);              /* section/key case-insensitive */
    setenv("MAILFLEET__RULE_CAPTURE__ACTION", "feedback", 1); /* "rule.capture" */
    setenv("MAILFLEET__RULE_NO_DEFAULTS__MAX_SIZE", "1K", 1); /* "rule.no-defaults" */
    setenv("MAILFLEET__MAIN__PASSWORD_FILE", secret, 1);
    setenv("MAILFLEET__KAFKA__SOMETHING", "x", 1);
    struct config *c = load_text(f,
        "[main]\ncount = 1\nflag = no\n"
        "[rule.capture]\naction = capture\n"
        "[rule.no-defaults]\naction = reject\n", err, sizeof(err));
    if (!c)
        fail_msg("load: %s", err);
    assert_int_equal(config_int(c, "main", "count"), 9);
    assert_true(config_bool(c, "main", "flag"));
    assert_string_equal(config_str(c, "rule.capture", "action"), "feedback");
    assert_int_equal(config_size(c, "rule.no-defaults", "max_size"), 1024);
    assert_string_equal(config_str(c, "rule.no-defaults", "action"), "reject");
    char *s = config_secret(c, "main", "password");
    assert_string_equal(s, "from-env-file");
    free(s);
    config_free(c);
    /* the environment alone works too (no file), for fixed sections: named
     * ones exist only when the file declares them */
    unsetenv("MAILFLEET__RULE_CAPTURE__ACTION");
    unsetenv("MAILFLEET__RULE_NO_DEFAULTS__MAX_SIZE");
    c = config_load(NULL, tables, err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(config_int(c, "main", "count"), 9);
    config_free(c);
    unsetenv("mailfleet__x");
}

static void test_env_errors(void **state)
{
    struct fixture *f = *state;
    static const struct { const char *name, *value, *want; } rows[] = {
        { "MAILFLEET__MAIN__COUNT", "nine", "not an integer" },
        { "MAILFLEET__MAIN__BOGUS", "1", "unknown key" },
        { "MAILFLEET__NOSUCH__KEY", "1", "unknown section" },
        { "MAILFLEET__RULE_MISSING__ACTION", "x", "unknown section" }, /* not in the file */
        { "MAILFLEET__MAIN", "secret-value", "MAILFLEET__SECTION__KEY" },
        { "MAILFLEET__MAIN__", "1", "unknown section" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char err[512];
        clear_env();
        setenv(rows[i].name, rows[i].value, 1);
        struct config *c = load_text(f, "[main]\ncount = 1\n[rule.capture]\n", err, sizeof(err));
        if (c) {
            config_free(c);
            fail_msg("row %zu (%s) accepted", i, rows[i].name);
        }
        if (!strstr(err, rows[i].want) || strncmp(err, "environment", 11) != 0)
            fail_msg("row %zu: error '%s' lacks '%s'", i, err, rows[i].want);
        /* the value of an override is never echoed (it may be a secret) */
        if (strlen(rows[i].value) > 1)
            assert_null(strstr(err, rows[i].value));
    }
}

static void test_named_sections_order(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct config *c = load_text(f,
        "[rule.zeta]\nmatch = z@example.com\n"
        "[main]\nname = x\n"
        "[rule.alpha]\nmatch = @example.com, *@iot.localhost\naction = reject\n"
        "[rule.mid]\naction = feedback\n"
        "[rule.zeta]\nmax_size = 1M\n", err, sizeof(err));
    if (!c)
        fail_msg("load: %s", err);
    const char **secs;
    size_t n = config_sections(c, "rule", &secs);
    assert_int_equal(n, 3);
    assert_string_equal(secs[0], "rule.zeta");   /* file order, each once */
    assert_string_equal(secs[1], "rule.alpha");
    assert_string_equal(secs[2], "rule.mid");
    free(secs);
    assert_int_equal(config_sections(c, "rul", &secs), 0);
    assert_string_equal(config_str(c, "rule.alpha", "action"), "reject");
    assert_string_equal(config_str(c, "rule.zeta", "action"), "capture");   /* default */
    assert_int_equal(config_size(c, "rule.zeta", "max_size"), 1 << 20);
    char **list;
    size_t ln = config_list(c, "rule.alpha", "match", &list);
    assert_int_equal(ln, 2);
    assert_string_equal(list[0], "@example.com");
    assert_string_equal(list[1], "*@iot.localhost");
    config_list_free(list, ln);
    assert_int_equal(config_list(c, "rule.mid", "match", &list), 0);
    assert_null(list);
    config_free(c);
}

static void test_star_keys(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct config *c = load_text(f,
        "[kafka]\nbootstrap.servers = 127.0.0.1:9092\nsecurity.protocol = ssl\n"
        "[main]\nname = x\n"
        "[kafka]\nlinger.ms = 5\n", err, sizeof(err));
    if (!c)
        fail_msg("load: %s", err);
    const char **kv;
    size_t n = config_section_keys(c, "kafka", &kv);
    assert_int_equal(n, 3);
    assert_string_equal(kv[0], "bootstrap.servers");
    assert_string_equal(kv[1], "127.0.0.1:9092");
    assert_string_equal(kv[2], "security.protocol");
    assert_string_equal(kv[3], "ssl");
    assert_string_equal(kv[4], "linger.ms");
    assert_string_equal(kv[5], "5");
    free(kv);
    assert_string_equal(config_str(c, "kafka", "linger.ms"), "5");
    assert_null(config_str(c, "kafka", "not.set"));
    config_free(c);
}

static void test_parse_size_table(void **state)
{
    static const struct { const char *in; int64_t want; } rows[] = {
        { "0", 0 }, { "1", 1 }, { "512K", 512 * 1024 }, { "512k", 512 * 1024 }, { "40M", 40LL << 20 },
        { "1G", 1LL << 30 }, { "1GB", 1LL << 30 }, { "2mb", 2LL << 20 }, { "10B", 10 },
        { "", -1 }, { "K", -1 }, { "-1", -1 }, { " 1", -1 }, { "1T", -1 }, { "1 M", -1 }, { "1.5M", -1 },
        { "1MM", -1 }, { "99999999999999999999", -1 }, { "9999999999999G", -1 }, { "18446744073709551615", -1 },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int64_t got = config_parse_size(rows[i].in);
        if (got != rows[i].want)
            fail_msg("row %zu (%s): %lld, want %lld", i, rows[i].in, (long long)got, (long long)rows[i].want);
    }
    assert_int_equal(config_parse_size(NULL), -1);
}

static void test_parse_bool_table(void **state)
{
    static const struct { const char *in; int rc; bool want; } rows[] = {
        { "true", 0, true }, { "TRUE", 0, true }, { "yes", 0, true }, { "on", 0, true }, { "1", 0, true },
        { "false", 0, false }, { "No", 0, false }, { "off", 0, false }, { "0", 0, false },
        { "", -1, false }, { "2", -1, false }, { "y", -1, false }, { "truee", -1, false },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        bool b = !rows[i].want;
        int rc = config_parse_bool(rows[i].in, &b);
        if (rc != rows[i].rc || (rc == 0 && b != rows[i].want))
            fail_msg("row %zu (%s): rc %d b %d", i, rows[i].in, rc, b);
    }
}

static void test_write_example(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    config_write_example(tables, fp);
    fclose(fp);
    assert_non_null(strstr(buf, "[main]\n"));
    assert_non_null(strstr(buf, "# an int\ncount = 5\n"));
    assert_non_null(strstr(buf, "# a secret\n# password = \n"));   /* no default: commented */
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults_without_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_values_of_every_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_name_file_line_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_over_indented_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_syntax_error_and_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_sections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_named_sections_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_star_keys, setup, teardown),
        cmocka_unit_test(test_parse_size_table),
        cmocka_unit_test(test_parse_bool_table),
        cmocka_unit_test_setup_teardown(test_write_example, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
