/* transform — the core of the transform worker, usable without the bus.
 *
 * transform_message() turns one raw mail (a file, parsed seekably so
 * attachment bytes are never held in memory whole) into: the coded
 * recipients, the attachments put to store:attachments with their links,
 * the outgoing MIME mail, and the fallback reasons.  The worker loop
 * (transform.c) wraps it with the bus; tests/tools/transform_tool.c prints
 * its result as JSON for the golden tests and the bench. */
#ifndef MF_TRANSFORM_H
#define MF_TRANSFORM_H
#include <stddef.h>
#include <stdint.h>
#include "config.h"

struct store;
struct tokens;
struct strbuf;

extern const struct config_key transform_config_keys[];

/* Why a mail (also) goes to mailfleet.fallback; several may apply. */
enum transform_reason {
    TR_NO_RECIPIENT = 1 << 0,   /* no marker pair, or no valid address in it */
    TR_SOME_INVALID = 1 << 1,   /* sent to the valid ones; invalid ones named */
    TR_TOO_MANY     = 1 << 2,   /* more than max_recipients: nothing sent */
    TR_BLOCKED      = 1 << 3,   /* a blocked attachment was not linked */
    TR_UNPARSEABLE  = 1 << 4,   /* not a mail GMime can read */
    TR_LIMITS       = 1 << 5,   /* MIME depth / parts / header / size limits */
    TR_NOT_ALLOWED  = 1 << 6,   /* outside the rule's allowed_recipients; the
                                   allowed ones are still sent to */
};
#define TR_LAST TR_NOT_ALLOWED
/* fallback.v1 reason of one bit ("no_recipients", ...); a list that was
 * found but held no valid address is "invalid_recipients". */
const char *transform_reason_name(unsigned bit, size_t n_invalid);

#define TRANSFORM_MAX_RECIPIENTS 10000   /* max_recipients' upper bound */

struct transform_settings {
    const char *marker;              /* ":Email_Rxers_Code:" */
    size_t max_recipients;           /* 50; 1..TRANSFORM_MAX_RECIPIENTS */
    const char *const *default_recipients;  /* used when no marker; NULL-terminated or NULL */
    int max_depth;                   /* 20 */
    int max_parts;                   /* 500 */
    size_t max_header_bytes;         /* per part header block */
    uint64_t max_decoded_bytes;      /* all attachments of one mail */
    double max_decoded_ratio;        /* decoded / encoded bytes of a part */
    size_t max_body_bytes;           /* text kept from the body */
    const char *const *blocked_extensions;  /* "exe", ...; NULL-terminated or NULL */
    const char *sender;              /* "mailfleet <noreply@iot.localhost>" */
    const char *link_mode;           /* "gateway" or "presigned" */
    const char *links_url;           /* "http://127.0.0.1:8025/a/" */
    int64_t link_expiry_s;           /* 36 h, at most 7 d */
    const char *tmp_dir;             /* decoded attachments are staged here */
};

struct transform;

/* store and tokens are borrowed and must outlive t (tokens may be NULL in
 * presigned mode).  Returns NULL + err on a bad setting. */
struct transform *transform_new(const struct transform_settings *s, struct store *attachments,
                                struct tokens *tok, char *err, size_t errlen);
void transform_free(struct transform *t);

struct inbound_info {
    const char *id;          /* inbound id: names the attachment folder and the outbound */
    const char *mail_from;   /* envelope sender, for the fallback notice */
    int64_t received_ms;     /* dates the attachment keys */
    /* The receipt rule's policy: the address.h patterns coded recipients
     * must match (NULL-terminated; NULL = any), so a device whose password
     * leaked cannot make the fleet an open relay. */
    const char *const *allowed_recipients;
    /* Name the device to the recipients: Reply-To and a "Sent by" line
     * (the envelope sender, else the From address).  0 = neither. */
    int show_sender;
};

struct transform_link {
    char *name;              /* original name, decoded and sanitized (UTF-8) */
    char *key;               /* attachments/<date>/<shard>/<id>-<n>-<safe-name>, NULL if blocked */
    char *content_type;
    uint64_t size;
    char sha256[65];
    char *url;               /* NULL if blocked */
    int64_t expires_s;
    int blocked;
};

struct transform_result {
    unsigned reasons;                 /* enum transform_reason bits */
    char *detail;                     /* human-readable why (limits, unparseable), or NULL */
    char **recipients;  size_t n_recipients;
    char **invalid;     size_t n_invalid;   /* as written (sanitized) */
    char **found;       size_t n_found;     /* every entry between the markers */
    char **not_allowed; size_t n_not_allowed; /* valid, refused by allowed_recipients */
    int marker_found;
    char *from;                       /* original From (display), or NULL */
    char *subject;                    /* original Subject, UTF-8, CR/LF stripped */
    char *body_text;                  /* UTF-8, marker and list removed */
    struct transform_link *links; size_t n_links;
    char message_id[384];             /* outbound Message-ID, no brackets */
    char *mime; size_t mime_len;      /* the outbound mail (CRLF), NULL when nothing is sent */
};

/* Returns 0 when the mail was handled (the result says whether something is
 * sent and which fallback reasons apply), or a negative errno-style code for
 * a failure worth retrying (store or disk), with err filled. */
int transform_message(struct transform *t, const char *eml_path, const struct inbound_info *in,
                      struct transform_result *out, char *err, size_t errlen);
void transform_result_free(struct transform_result *r);

/* The result as one JSON object (tools, golden tests). */
void transform_result_json(const struct transform_result *r, struct strbuf *out);

#endif
