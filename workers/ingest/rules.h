/* rules — receipt rules, like a cloud receipt rule set.
 *
 * Rules are tried in file order ([rule.<name>] sections); the first whose
 * recipient patterns match an RCPT decides.  A recipient no rule matches is
 * refused (550 5.7.1: no open relay).  Each rule has an action and optional
 * conditions checked at RCPT time:
 *   require_tls      the session must be under TLS
 *   require_auth     the session must be authenticated
 *   allowed_senders  "user:pattern" items; an authenticated session may only
 *                    use a MAIL FROM matching one of its user's patterns
 *                    ("*:pattern" applies to every user).  Unauthenticated
 *                    sessions are not restricted by it (combine with
 *                    require_auth to force authentication).
 *   max_recipients   recipients of one message accepted by this rule
 *   max_size         message size (declared SIZE= at RCPT, actual at DATA end)
 * Patterns are common/mail/address.h patterns. */
#ifndef MF_INGEST_RULES_H
#define MF_INGEST_RULES_H
#include <stddef.h>
#include <stdint.h>
#include "config.h"

struct config;
struct rules;

enum rule_action { RULE_CAPTURE, RULE_FEEDBACK, RULE_UNSUBSCRIBE, RULE_REJECT };
#define RULE_ACTIONS 4

struct rule_spec {
    const char *name;
    const char *recipients;        /* comma list of patterns */
    const char *action;            /* capture|feedback|unsubscribe|reject */
    int require_tls, require_auth;
    const char *allowed_senders;   /* comma list of user:pattern, or NULL */
    unsigned max_recipients;       /* 0 = no rule limit */
    uint64_t max_size;             /* 0 = no rule limit */
};

/* What a session knows when it checks one RCPT. */
struct rules_ctx {
    int tls;
    const char *auth_user;         /* NULL when not authenticated */
    const char *mail_from;         /* normalized, "" for the null sender */
    uint64_t declared_size;        /* MAIL SIZE=, 0 if none */
    const unsigned *counts;        /* recipients already accepted per rule */
};

struct rules_verdict {
    int rule;                      /* index of the rule that decided, -1 none */
    int code;                      /* 250 accepted, else the SMTP reply code */
    const char *text;              /* reply text with enhanced status code */
};

struct rules *rules_new(void);
void rules_free(struct rules *r);   /* accepts NULL */
/* Returns 0 or -EINVAL with a message (bad action, bad pattern list). */
int rules_add(struct rules *r, const struct rule_spec *spec, char *err, size_t errlen);
/* Reads every [rule.*] section of cfg in file order (keys declared in ingest.c). */
struct rules *rules_from_config(const struct config *cfg, char *err, size_t errlen);

size_t rules_count(const struct rules *r);
const char *rules_name(const struct rules *r, int i);
enum rule_action rules_action(const struct rules *r, int i);
uint64_t rules_max_size(const struct rules *r, int i);
const char *rules_action_name(enum rule_action a);

/* The token of an unsubscribe address "<anything>+<token>@domain": the part
 * after the first '+' of the local part, which must look like a
 * common/tokens token ([A-Za-z0-9_-]+ '.' [A-Za-z0-9_-]+).  0 or -EINVAL. */
int rules_unsubscribe_token(const char *addr, char *out, size_t outlen);

/* Decides one recipient (normalized address).  Always fills v. */
void rules_check(const struct rules *r, const char *rcpt, const struct rules_ctx *ctx,
                 struct rules_verdict *v);

#endif
