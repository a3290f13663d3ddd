/* config — one INI file (libinih) checked against tables of known keys.
 *
 * Each module owns a table of `struct config_key` rows; the binary hands all
 * tables to config_load().  Unknown sections or keys and values that do not
 * parse are errors naming file, line and key.  Environment variables
 * MAILFLEET__<SECTION>__<KEY> override the file (section dots written as '_',
 * case-insensitive).  A key of type CONFIG_SECRET may instead be given as
 * <key>_file: the value is read from that file (trailing newline stripped).
 *
 * A table's section may end in ".*" to match named sections in file order,
 * e.g. "rule.*" matches [rule.capture] and [rule.bounces].  A row whose key is
 * "*" accepts any key in its section (e.g. [kafka], passed to librdkafka);
 * config_section_keys() lists them. */
#ifndef MF_CONFIG_H
#define MF_CONFIG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum config_type {
    CONFIG_STR,
    CONFIG_INT,       /* decimal, may be negative */
    CONFIG_BOOL,      /* true/false, yes/no, on/off, 1/0 */
    CONFIG_SIZE,      /* bytes: "40M", "512K", "1G", plain number */
    CONFIG_DURATION,  /* "250ms", "30s", "5m", "36h", "14d"; plain number = seconds */
    CONFIG_SECRET,    /* string; also accepted as <key>_file */
    CONFIG_LIST,      /* comma-separated strings, kept as written */
};

struct config_key {
    const char *section;
    const char *key;
    enum config_type type;
    const char *def;      /* default as text, NULL = unset */
    const char *doc;      /* one line for the example file */
};
#define CONFIG_KEYS_END { NULL, NULL, 0, NULL, NULL }

struct config;

/* tables: NULL-terminated array of tables, each ended by CONFIG_KEYS_END.
 * path may be NULL (defaults + environment only).  On error returns NULL and
 * writes "file:line: [section] key: reason" into err. */
struct config *config_load(const char *path, const struct config_key *const *tables,
                           char *err, size_t errlen);
void config_free(struct config *c);
const char *config_path(const struct config *c);

/* Getters panic on a key that no table declares (a programming error).
 * Values were validated at load, so they cannot fail here. */
const char *config_str(const struct config *c, const char *section, const char *key);
int64_t     config_int(const struct config *c, const char *section, const char *key);
bool        config_bool(const struct config *c, const char *section, const char *key);
uint64_t    config_size(const struct config *c, const char *section, const char *key);
int64_t     config_duration_ms(const struct config *c, const char *section, const char *key);
/* Returns a malloc'd copy of the secret (inline value or file contents), or
 * NULL when unset; an unreadable file was already an error at load. */
char       *config_secret(const struct config *c, const char *section, const char *key);
/* Comma-separated list split and trimmed; returns count, *out malloc'd array of
 * malloc'd strings (free with config_list_free). */
size_t      config_list(const struct config *c, const char *section, const char *key, char ***out);
void        config_list_free(char **list, size_t n);
/* True when the key has a value: given in the file, or a default. */
bool        config_isset(const struct config *c, const char *section, const char *key);

/* Names of sections matching "prefix.*" in file order, e.g. prefix "rule"
 * gives "rule.capture", ...  Returns count; *out is a malloc'd array (NULL when
 * count is 0) the caller free()s; the names stay owned by c. */
size_t config_sections(const struct config *c, const char *prefix, const char ***out);

/* All key/value pairs set in one section, in file order: returns count and a
 * malloc'd array of 2*count borrowed strings (key, value, ...). */
size_t config_section_keys(const struct config *c, const char *section, const char ***out);

/* Writes every key of the tables as a commented example INI to f. */
struct _IO_FILE;
void config_write_example(const struct config_key *const *tables, struct _IO_FILE *f);

/* Parsers shared with the rest of the code (return -1 / false on bad input). */
int64_t config_parse_size(const char *s);
int     config_parse_bool(const char *s, bool *out);

#endif
