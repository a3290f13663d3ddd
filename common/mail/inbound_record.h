/* inbound_record — inbound.v1 (schemas/inbound.v1.json): one accepted SMTP
 * transaction, built by ingest and read by transform.  The envelope and
 * store objects are shared with feedback.v1 (feedback_record.h), which
 * carries the same for feedback that arrived as mail. */
#ifndef MF_INBOUND_RECORD_H
#define MF_INBOUND_RECORD_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The SMTP envelope as written in a record (borrowed strings). */
struct record_envelope {
    const char *mail_from;                 /* "" for the null sender */
    const char *const *rcpt_to;            /* the recipients this record is for */
    size_t n_rcpt_to;
    const char *helo, *client_ip;
    int tls;
    const char *tls_version, *tls_cipher;  /* NULL: left out */
    const char *auth_user;                 /* NULL: JSON null */
};

/* The raw mail in the incoming store. */
struct record_store {
    const char *key;
    uint64_t size;
    const char *sha256;                    /* lower-case hex */
};

/* New JSON objects for "envelope" and "store" (used by feedback_record too). */
json_t *record_envelope_json(const struct record_envelope *e);
json_t *record_store_json(const struct record_store *s);

/* What ingest knows of one accepted transaction. */
struct inbound_fields {
    const char *id;                        /* UUIDv7, also the record key */
    int64_t received_ms;
    const char *rule;
    const struct record_envelope *envelope;
    const struct record_store *store;
    const char *message_id;                /* Message-ID header; NULL = absent */
    int spooled;                           /* waited in ingest's spool */
};

/* The record's value: malloc'd compact JSON, *len set when len is not NULL. */
char *inbound_record_build(const struct inbound_fields *f, size_t *len);

/* A parsed inbound.v1 record.  The strings borrow from root; release it
 * with json_decref(root) (root is NULL after a failed parse). */
struct inbound_record {
    json_t *root;
    const char *id, *rule, *mail_from, *key;
    int64_t received_ms;                   /* received_at, else the id's time, else now */
};

/* 0, or -EINVAL + err (a tombstone, malformed JSON, duplicate keys, a wrong
 * type or another schema): the caller dead-letters the record with err. */
int inbound_record_parse(const void *buf, size_t len, struct inbound_record *in, char *err,
                         size_t errlen);

#endif
