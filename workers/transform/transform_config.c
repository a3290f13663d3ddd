/* transform_config — the [transform] keys and what is derived from them
 * (settings, link keys, the sender-is-not-a-capture-address check), apart
 * from the worker loop so tools and tests link without the bus. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "address.h"
#include "strbuf.h"
#include "tokens.h"
#include "transform.h"
#include "transform_worker.h"

const struct config_key transform_config_keys[] = {
    /* receipt rule settings transform reads (after ingest's, so the example
     * config keeps one [rule.NAME] block) */
    { "rule.*", "allowed_recipients", CONFIG_LIST, NULL,
      "coded recipients this capture rule may reach: example.com, ops@example.org, *.example.net; "
      "others -> fallback recipient_not_allowed (unset = any: set it in production, no open relay)" },
    { "rule.*", "show_sender", CONFIG_BOOL, "true",
      "name the device that sent the mail to its recipients: Reply-To and a line in the text" },
    { "transform", "metrics_listen", CONFIG_STR, "127.0.0.1:9102", "metrics/health when run alone" },
    { "transform", "marker", CONFIG_STR, ":Email_Rxers_Code:", "recipient list marker (before and after)" },
    { "transform", "max_recipients", CONFIG_INT, "50", "more coded recipients -> fallback, nothing sent" },
    { "transform", "default_recipients", CONFIG_LIST, "", "used when a mail has no marker (empty = fallback)" },
    { "transform", "max_mime_depth", CONFIG_INT, "20", "deeper MIME nesting -> fallback (unparseable)" },
    { "transform", "max_mime_parts", CONFIG_INT, "500", "more MIME parts -> fallback (unparseable)" },
    { "transform", "max_header_bytes", CONFIG_SIZE, "256K", "largest header block of one part" },
    { "transform", "max_decoded_bytes", CONFIG_SIZE, "200M", "all decoded attachments of one mail" },
    { "transform", "max_decoded_ratio", CONFIG_INT, "4", "decoded/encoded bytes of a part (bomb defence)" },
    { "transform", "max_body_bytes", CONFIG_SIZE, "1M", "body text kept for the outgoing mail" },
    { "transform", "blocked_extensions", CONFIG_LIST, "exe,scr,bat,cmd,com,pif,vbs,js,jar,msi,ps1",
      "attachments with these extensions are not linked (fallback blocked_attachment)" },
    { "transform", "sender", CONFIG_STR, "mailfleet <noreply@iot.localhost>",
      "From of the outgoing mail; must not be a capture address" },
    { "transform", "capture_addresses", CONFIG_LIST, "",
      "capture addresses the sender must differ from (rule.* capture recipients are checked too)" },
    { "transform", "link_mode", CONFIG_STR, "gateway", "gateway (links worker, revocable) or presigned (S3)" },
    { "transform", "links_url", CONFIG_STR, "",
      "gateway URL prefix before the token; empty = [mailfleet] public_base_url + /a/" },
    { "transform", "link_expiry", CONFIG_DURATION, "36h", "link lifetime, at most 7d" },
    { "transform", "tmp_dir", CONFIG_STR, "/tmp", "decoded attachments are staged here (unlinked files)" },
    { "transform", "inline_max", CONFIG_SIZE, "256K", "outgoing mails up to this size travel inline" },
    { "transform", "retries", CONFIG_INT, "3", "attempts before a failing record goes to the DLQ" },
    { "transform", "retry_backoff", CONFIG_DURATION, "500ms", "first back-off, doubled per attempt" },
    CONFIG_KEYS_END
};

void transform_settings_free(struct transform_settings_owned *o)
{
    config_list_free(o->defaults, o->n_defaults);
    config_list_free(o->blocked, o->n_blocked);
    free(o->defaults_v);
    free(o->blocked_v);
    free(o->links_url);
    for (size_t i = 0; i < o->n_rules; i++) {
        config_list_free(o->rules[i].allowed, o->rules[i].n_allowed);
        free(o->rules[i].allowed_v);
    }
    free(o->rules);
    memset(o, 0, sizeof(*o));
}

static void rule_policies_load(const struct config *cfg, struct transform_settings_owned *o);

static const char **null_terminated(char **l, size_t n)
{
    const char **v = xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        v[i] = l[i];
    return v;
}

void transform_settings_load(const struct config *cfg, struct transform_settings_owned *o)
{
    memset(o, 0, sizeof(*o));
    struct transform_settings *s = &o->s;
    s->marker = config_str(cfg, "transform", "marker");
    s->max_recipients = (size_t)config_int(cfg, "transform", "max_recipients");
    o->n_defaults = config_list(cfg, "transform", "default_recipients", &o->defaults);
    o->defaults_v = null_terminated(o->defaults, o->n_defaults);
    s->default_recipients = o->defaults_v;
    s->max_depth = (int)config_int(cfg, "transform", "max_mime_depth");
    s->max_parts = (int)config_int(cfg, "transform", "max_mime_parts");
    s->max_header_bytes = config_size(cfg, "transform", "max_header_bytes");
    s->max_decoded_bytes = config_size(cfg, "transform", "max_decoded_bytes");
    s->max_decoded_ratio = (double)config_int(cfg, "transform", "max_decoded_ratio");
    s->max_body_bytes = config_size(cfg, "transform", "max_body_bytes");
    o->n_blocked = config_list(cfg, "transform", "blocked_extensions", &o->blocked);
    o->blocked_v = null_terminated(o->blocked, o->n_blocked);
    s->blocked_extensions = o->blocked_v;
    s->sender = config_str(cfg, "transform", "sender");
    s->link_mode = config_str(cfg, "transform", "link_mode");
    const char *lu = config_str(cfg, "transform", "links_url");
    if (lu && *lu) {
        o->links_url = xstrdup(lu);
    } else {
        const char *base = config_str(cfg, "mailfleet", "public_base_url");
        size_t bl = strlen(base);
        while (bl > 0 && base[bl - 1] == '/')
            bl--;
        o->links_url = xmalloc(bl + 4);
        memcpy(o->links_url, base, bl);
        memcpy(o->links_url + bl, "/a/", 4);
    }
    s->links_url = o->links_url;
    s->link_expiry_s = config_duration_ms(cfg, "transform", "link_expiry") / 1000;
    s->tmp_dir = config_str(cfg, "transform", "tmp_dir");
    rule_policies_load(cfg, o);
}

/* Every [rule.*] section's transform settings; ingest decides which rule
 * took a mail and names it in the inbound record. */
static void rule_policies_load(const struct config *cfg, struct transform_settings_owned *o)
{
    const char **secs;
    size_t ns = config_sections(cfg, "rule", &secs);
    o->rules = ns ? xcalloc(ns, sizeof(*o->rules)) : NULL;
    o->n_rules = ns;
    for (size_t i = 0; i < ns; i++) {
        struct transform_rule_policy *p = &o->rules[i];
        p->name = secs[i] + strlen("rule.");
        p->show_sender = config_bool(cfg, secs[i], "show_sender");
        p->n_allowed = config_list(cfg, secs[i], "allowed_recipients", &p->allowed);
        if (p->n_allowed)
            p->allowed_v = null_terminated(p->allowed, p->n_allowed);
    }
    if (ns)
        free(secs);
}

const struct transform_rule_policy *transform_rule_policy(const struct transform_settings_owned *o,
                                                          const char *name)
{
    for (size_t i = 0; name && i < o->n_rules; i++)
        if (strcmp(o->rules[i].name, name) == 0)
            return &o->rules[i];
    return NULL;
}

int transform_rule_policies_check(const struct transform_settings_owned *o, char *why, size_t whylen)
{
    for (size_t i = 0; i < o->n_rules; i++)
        for (size_t j = 0; j < o->rules[i].n_allowed; j++)
            if (!address_pattern_ok(o->rules[i].allowed[j])) {
                snprintf(why, whylen, "[rule.%s] allowed_recipients: %s is not a pattern", o->rules[i].name,
                         o->rules[i].allowed[j]);
                return -EINVAL;
            }
    return 0;
}

/* 1 if addr appears in a comma-separated list value. */
static int list_has(const char *list, const char *addr)
{
    char *copy = xstrdup(list);
    int found = 0;
    for (char *save = NULL, *t = strtok_r(copy, ", \t", &save); t && !found;
         t = strtok_r(NULL, ", \t", &save))
        found = strcasecmp(t, addr) == 0;
    free(copy);
    return found;
}

int transform_sender_is_capture(const struct config *cfg, const char *sender, char *why, size_t whylen)
{
    InternetAddressList *l = internet_address_list_parse(NULL, sender);
    InternetAddress *a = l && internet_address_list_length(l) == 1
                             ? internet_address_list_get_address(l, 0) : NULL;
    if (!a || !INTERNET_ADDRESS_IS_MAILBOX(a)) {
        if (l)
            g_object_unref(l);
        snprintf(why, whylen, "sender is not one mailbox");
        return 1;
    }
    char addr[ADDRESS_BUFSZ];
    int bad = address_normalize(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a)), addr,
                                sizeof(addr)) != 0;
    g_object_unref(l);
    if (bad) {
        snprintf(why, whylen, "sender address is not valid");
        return 1;
    }
    char **caps;
    size_t n = config_list(cfg, "transform", "capture_addresses", &caps);
    int hit = 0;
    for (size_t i = 0; i < n; i++)
        hit |= strcasecmp(caps[i], addr) == 0;
    config_list_free(caps, n);
    /* Receipt rules whose action is capture: any recipient-like key. */
    const char **secs;
    size_t ns = config_sections(cfg, "rule", &secs);
    for (size_t i = 0; i < ns && !hit; i++) {
        const char **kv;
        size_t nk = config_section_keys(cfg, secs[i], &kv);
        int capture = 0;
        for (size_t k = 0; k < nk; k++)
            if (strcmp(kv[2 * k], "action") == 0 && strcmp(kv[2 * k + 1], "capture") == 0)
                capture = 1;
        for (size_t k = 0; k < nk && capture && !hit; k++)
            if (strstr(kv[2 * k], "rcpt") || strstr(kv[2 * k], "recipient") ||
                strstr(kv[2 * k], "address") || strstr(kv[2 * k], "match"))
                hit = list_has(kv[2 * k + 1], addr);
        free(kv);
    }
    if (ns)
        free(secs);
    if (hit)
        snprintf(why, whylen, "sender %s is a capture address: mail would loop", addr);
    return hit;
}

