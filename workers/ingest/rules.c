/* rules — ordered receipt rules; first match decides (see rules.h). */
#include "rules.h"
#include "verp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "config.h"
#include "strbuf.h"

struct rule {
    char *name;
    enum rule_action action;
    char **patterns;  size_t n_patterns;
    char **senders;   size_t n_senders;   /* "user:pattern" */
    int require_tls, require_auth;
    unsigned max_recipients;
    uint64_t max_size;
};

struct rules {
    struct rule *v;
    size_t n;
};

static const char *const action_names[RULE_ACTIONS] = { "capture", "feedback", "unsubscribe", "reject" };


const char *rules_action_name(enum rule_action a)
{
    return (unsigned)a < RULE_ACTIONS ? action_names[a] : "?";
}

struct rules *rules_new(void)
{
    return xcalloc(1, sizeof(struct rules));
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void rules_free(struct rules *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].name);
        strv_free(r->v[i].patterns, r->v[i].n_patterns);
        strv_free(r->v[i].senders, r->v[i].n_senders);
    }
    free(r->v);
    free(r);
}

/* Splits a comma list, trimming blanks; empty items are skipped. */
static size_t split_list(const char *s, char ***out)
{
    size_t n = 0, cap = 4;
    char **v = xcalloc(cap, sizeof(char *));
    while (s && *s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *a = s, *b = s + len;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) {
            if (n == cap)
                v = xrealloc(v, (cap *= 2) * sizeof(char *));
            v[n++] = xstrndup(a, (size_t)(b - a));
        }
        s = end ? end + 1 : NULL;
    }
    *out = v;
    return n;
}

int rules_add(struct rules *r, const struct rule_spec *spec, char *err, size_t errlen)
{
    struct rule nr = { 0 };
    int a;
    for (a = 0; a < RULE_ACTIONS; a++)
        if (spec->action && strcmp(spec->action, action_names[a]) == 0)
            break;
    if (a == RULE_ACTIONS) {
        snprintf(err, errlen, "[rule.%s] action: '%s' is not capture, feedback, unsubscribe or reject",
                 spec->name, spec->action ? spec->action : "");
        return -EINVAL;
    }
    nr.action = (enum rule_action)a;
    nr.n_patterns = split_list(spec->recipients, &nr.patterns);
    nr.n_senders = split_list(spec->allowed_senders, &nr.senders);
    if (nr.n_patterns == 0) {
        snprintf(err, errlen, "[rule.%s] recipients: at least one pattern is needed", spec->name);
        goto bad;
    }
    for (size_t i = 0; i < nr.n_patterns; i++)
        if (!address_pattern_ok(nr.patterns[i])) {
            snprintf(err, errlen, "[rule.%s] recipients: bad pattern '%s'", spec->name, nr.patterns[i]);
            goto bad;
        }
    for (size_t i = 0; i < nr.n_senders; i++) {
        char *colon = strchr(nr.senders[i], ':');
        if (!colon || colon == nr.senders[i] || !address_pattern_ok(colon + 1) || !colon[1]) {
            snprintf(err, errlen, "[rule.%s] allowed_senders: '%s' is not user:pattern", spec->name,
                     nr.senders[i]);
            goto bad;
        }
    }
    nr.name = xstrdup(spec->name);
    nr.require_tls = spec->require_tls;
    nr.require_auth = spec->require_auth;
    nr.max_recipients = spec->max_recipients;
    nr.max_size = spec->max_size;
    r->v = xrealloc(r->v, (r->n + 1) * sizeof(*r->v));
    r->v[r->n++] = nr;
    return 0;
bad:
    strv_free(nr.patterns, nr.n_patterns);
    strv_free(nr.senders, nr.n_senders);
    return -EINVAL;
}

struct rules *rules_from_config(const struct config *cfg, char *err, size_t errlen)
{
    const char **names = NULL;
    size_t n = config_sections(cfg, "rule", &names);
    struct rules *r = rules_new();
    for (size_t i = 0; i < n; i++) {
        const char *sec = names[i];
        char **l = NULL;
        size_t nl;
        struct strbuf rcpts, senders;
        strbuf_init(&rcpts);
        strbuf_init(&senders);
        nl = config_list(cfg, sec, "recipients", &l);
        for (size_t j = 0; j < nl; j++)
            strbuf_appendf(&rcpts, "%s%s", j ? "," : "", l[j]);
        config_list_free(l, nl);
        nl = config_list(cfg, sec, "allowed_senders", &l);
        for (size_t j = 0; j < nl; j++)
            strbuf_appendf(&senders, "%s%s", j ? "," : "", l[j]);
        config_list_free(l, nl);
        int64_t maxr = config_int(cfg, sec, "max_recipients");
        struct rule_spec spec = {
            .name = sec + strlen("rule."),
            .recipients = rcpts.len ? rcpts.data : "",
            .action = config_str(cfg, sec, "action"),
            .require_tls = config_bool(cfg, sec, "require_tls"),
            .require_auth = config_bool(cfg, sec, "require_auth"),
            .allowed_senders = senders.len ? senders.data : NULL,
            .max_recipients = maxr < 0 ? 0 : (unsigned)maxr,
            .max_size = config_size(cfg, sec, "max_size"),
        };
        int rc = rules_add(r, &spec, err, errlen);
        strbuf_free(&rcpts);
        strbuf_free(&senders);
        if (rc < 0) {
            free(names);
            rules_free(r);
            return NULL;
        }
    }
    free(names);
    return r;
}

size_t rules_count(const struct rules *r)
{
    return r->n;
}

const char *rules_name(const struct rules *r, int i)
{
    return r->v[i].name;
}

enum rule_action rules_action(const struct rules *r, int i)
{
    return r->v[i].action;
}

uint64_t rules_max_size(const struct rules *r, int i)
{
    return r->v[i].max_size;
}

static int sender_allowed(const struct rule *ru, const char *user, const char *from)
{
    for (size_t i = 0; i < ru->n_senders; i++) {
        const char *item = ru->senders[i];
        const char *colon = strchr(item, ':');
        size_t ul = (size_t)(colon - item);
        int user_ok = (ul == 1 && item[0] == '*') || (strlen(user) == ul && strncmp(item, user, ul) == 0);
        if (user_ok && from[0] && address_match(colon + 1, from))
            return 1;
    }
    return 0;
}

void rules_check(const struct rules *r, const char *rcpt, const struct rules_ctx *ctx,
                 struct rules_verdict *v)
{
    v->rule = -1;
    v->code = 550;
    v->text = "5.7.1 Relay access denied: recipient not accepted here";
    for (size_t i = 0; i < r->n; i++) {
        const struct rule *ru = &r->v[i];
        size_t j;
        for (j = 0; j < ru->n_patterns; j++)
            if (address_match(ru->patterns[j], rcpt))
                break;
        if (j == ru->n_patterns)
            continue;
        v->rule = (int)i;
        if (ru->action == RULE_REJECT) {
            v->code = 550;
            v->text = "5.7.1 Recipient rejected";
        } else if (ru->require_tls && !ctx->tls) {
            v->code = 530;
            v->text = "5.7.0 Must issue a STARTTLS command first";
        } else if (ru->require_auth && !ctx->auth_user) {
            v->code = 530;
            v->text = "5.7.0 Authentication required";
        } else if (ru->n_senders && ctx->auth_user && !sender_allowed(ru, ctx->auth_user, ctx->mail_from)) {
            v->code = 550;
            v->text = "5.7.1 Sender address not allowed for this user";
        } else if (ru->max_recipients && ctx->counts && ctx->counts[i] >= ru->max_recipients) {
            v->code = 452;
            v->text = "4.5.3 Too many recipients";
        } else if (ru->max_size && ctx->declared_size > ru->max_size) {
            v->code = 552;
            v->text = "5.3.4 Message size exceeds fixed limit for this recipient";
        } else {
            v->code = 250;
            v->text = "2.1.5 Ok";
        }
        return;
    }
}

int rules_unsubscribe_token(const char *addr, char *out, size_t outlen)
{
    const char *plus = strchr(addr, '+');
    const char *at = strrchr(addr, '@');
    if (!plus || !at || plus > at)
        return -EINVAL;
    size_t n = (size_t)(at - plus - 1);
    int dots = 0;
    for (size_t i = 0; i < n; i++) {
        char c = plus[1 + i];
        if (c == '.') {
            if (i == 0 || i == n - 1 || dots++)
                return -EINVAL;
        } else if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') &&
                   c != '_' && c != '-') {
            return -EINVAL;
        }
    }
    /* a tokens.h token has one dot; send's mailto tokens are compact VERP
     * tokens (common/verp: VERP_TOKEN_LEN chars of base32).  feedback
     * verifies them; this only refuses what cannot be one. */
    int compact = dots == 0 && n == VERP_TOKEN_LEN && strspn(plus + 1, "abcdefghijklmnopqrstuvwxyz234567") >= n;
    if ((dots != 1 && !compact) || n + 1 > outlen)
        return -EINVAL;
    memcpy(out, plus + 1, n);
    out[n] = 0;
    return 0;
}
