/* send_record — one outbound.v1 record read into a rec_ctx (fields checked,
 * recipients normalized, the message loaded from the record or the store and
 * turned into CRLF lines) and the headers each recipient's copy gets in
 * front of it (one-click List-Unsubscribe, DKIM-Signature).
 *
 * A record that can never be sent is "dead" (it goes to the DLQ with why);
 * a store that cannot be read now is transient: the loop retries the record. */
#include "send_int.h"
#include "base64.h"
#include "common_config.h"
#include "config.h"
#include "dkim_signer.h"
#include "ids.h"
#include "jsonx.h"
#include "log.h"
#include "store.h"
#include "strbuf.h"
#include "timeutil.h"
#include "tokens.h"
#include "topics.h"
#include "verp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- record parsing ---- */

static int dead(struct rec_ctx *rc, const char *cls, const char *fmt, const char *detail)
{
    rc->dead_class = cls;
    snprintf(rc->dead_msg, sizeof(rc->dead_msg), fmt, detail ? detail : "");
    return 1;
}

/* Bare LF -> CRLF (devices and some builders write LF); a bare CR is left as
 * it is (content, sent byte for byte).  Ends with CRLF. */
static char *to_crlf(const char *in, size_t n, size_t *outlen)
{
    struct strbuf b;
    strbuf_init(&b);
    strbuf_reserve(&b, n + n / 32 + 3);
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r')) {
            strbuf_append_n(&b, in + start, i - start);
            strbuf_append_n(&b, "\r\n", 2);
            start = i + 1;
        }
    }
    strbuf_append_n(&b, in + start, n - start);
    if (b.len < 2 || b.data[b.len - 2] != '\r' || b.data[b.len - 1] != '\n')
        strbuf_append_n(&b, "\r\n", 2);
    return strbuf_detach(&b, outlen);
}

static int collect_cb(void *opaque, const void *buf, size_t len)
{
    struct strbuf *b = opaque;
    strbuf_append_n(b, buf, len);
    return 0;
}

/* body {"encoding": "text"|"base64"|"store", ...} -> rc->body (CRLF).
 * 0 ok, 1 dead (rc->dead_*), -1 transient (retry the record later). */
static int load_message(struct lane *l, struct rec_ctx *rc)
{
    json_t *b = json_object_get(rc->doc, "body");
    const char *enc = json_string_value(json_object_get(b, "encoding"));
    json_t *data = json_object_get(b, "data");
    if (!enc)
        return dead(rc, "parse", "body.encoding missing%s", NULL);
    if (strcmp(enc, "text") == 0 && json_is_string(data)) {
        rc->body = to_crlf(json_string_value(data), json_string_length(data), &rc->body_len);
        return 0;
    }
    if (strcmp(enc, "base64") == 0 && json_is_string(data)) {
        size_t n;
        char *raw = (char *)base64_decode_alloc(json_string_value(data), json_string_length(data), &n);
        if (!raw)
            return dead(rc, "parse", "body.data is not base64%s", NULL);
        rc->body = to_crlf(raw, n, &rc->body_len);
        free(raw);
        return 0;
    }
    if (strcmp(enc, "store") != 0)
        return dead(rc, "parse", "body.encoding %s not understood", enc);
    const char *which = json_string_value(json_object_get(b, "store"));
    const char *key = json_string_value(json_object_get(b, "key"));
    int si = which && strcmp(which, "attachments") == 0 ? 1 : 0;
    if (!key || !which || (si == 0 && strcmp(which, "incoming") != 0))
        return dead(rc, "parse", "body.store / body.key missing or unknown%s", NULL);
    char err[256];
    if (!l->store[si]) {
        l->store[si] = common_store(l->w->cfg, si ? "store_attachments" : "store_incoming", err,
                                    sizeof(err));
        if (!l->store[si]) {
            log_kv(LOG_ERROR, "cannot open the message store", "error", err, NULL);
            return -1;
        }
    }
    struct strbuf m;
    strbuf_init(&m);
    int r = store_get_cb(l->store[si], key, 0, 0, collect_cb, &m, err, sizeof(err));
    if (r == -ENOENT || r == -EINVAL) {
        strbuf_free(&m);
        rc->dead_stage = "send.store";
        return dead(rc, "store", "message object not found: %s", key);
    }
    if (r != 0) {
        log_kv(LOG_WARN, "cannot read the message; will retry", "id", rc->id, "error", err, NULL);
        strbuf_free(&m);
        return -1;
    }
    rc->body = to_crlf(m.data ? m.data : "", m.len, &rc->body_len);
    strbuf_free(&m);
    return 0;
}

int send_record_parse(struct lane *l, struct rec_ctx *rc)
{
    struct bus_record *r = rc->r;
    if (!r->value)
        return dead(rc, "parse", "empty record%s", NULL);
    char perr[256];
    rc->doc = jsonx_record_parse(r->value, r->value_len, SCHEMA_OUTBOUND, perr, sizeof(perr));
    if (!rc->doc)
        return dead(rc, "parse", "%s", perr);
    const char *from;
    const json_t *rs;
    if (jsonx_want_str(rc->doc, "id", 1, &rc->id, perr, sizeof(perr)) != 0 ||
        jsonx_want_str(rc->doc, "inbound_id", 0, &rc->inbound_id, perr, sizeof(perr)) != 0 ||
        jsonx_want_str(rc->doc, "subject", 0, &rc->subject, perr, sizeof(perr)) != 0 ||
        jsonx_want_str(rc->doc, "list", 0, &rc->list, perr, sizeof(perr)) != 0 ||
        jsonx_want_str(rc->doc, "from", 1, &from, perr, sizeof(perr)) != 0 ||
        jsonx_want_array(rc->doc, "recipients", 1, &rs, perr, sizeof(perr)) != 0)
        return dead(rc, "parse", "%s", perr);
    if (!id_valid(rc->id))
        return dead(rc, "parse", "id is not a UUIDv7%s", NULL);
    if (rc->list && (!*rc->list || strlen(rc->list) > 64 ||
                     strspn(rc->list, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") !=
                         strlen(rc->list)))
        return dead(rc, "parse", "list is not a name%s", NULL);
    if (address_normalize(from, rc->from_addr, sizeof(rc->from_addr)) != 0)
        return dead(rc, "parse", "from is not an address%s", NULL);
    if (json_array_size(rs) == 0)
        return dead(rc, "parse", "recipients is empty%s", NULL);
    /* Transform writes normalized addresses (schema); anything else means a
     * record we must not guess about: the whole record goes to the DLQ. */
    rc->n_rcpts = json_array_size(rs);
    rc->rcpts = xcalloc(rc->n_rcpts, sizeof(char *));
    for (size_t i = 0; i < rc->n_rcpts; i++) {
        const char *a = json_string_value(json_array_get(rs, i));
        char norm[ADDRESS_BUFSZ];
        if (!a || address_normalize(a, norm, sizeof(norm)) != 0)
            return dead(rc, "parse", "recipients[] holds a value that is not an address%s", NULL);
        rc->rcpts[i] = xstrdup(norm);
    }
    int64_t attempt = 0;
    if (jsonx_path(rc->doc, "attempt") && jsonx_int(rc->doc, "attempt", &attempt) != 0)
        return dead(rc, "parse", "field attempt is not an integer%s", NULL);
    rc->attempt = attempt > 0 ? (int)attempt : 0;
    rc->created_ms = jsonx_time_ms(rc->doc, "created_at");
    if (rc->created_ms < 0)
        rc->created_ms = r->timestamp_ms > 0 ? r->timestamp_ms : now_ms();
    rc->first_ms = jsonx_time_ms(rc->doc, "first_attempt_at");
    if (rc->first_ms < 0)
        rc->first_ms = now_ms();
    rc->mail = (struct event_mail){ rc->id, rc->inbound_id, rc->from_addr, rc->subject,
                                    rc->created_ms, (const char *const *)rc->rcpts, rc->n_rcpts };
    return load_message(l, rc);
}

/* ---- per-recipient copy ---- */

/* The token in a VERP return path (use = "verp") or a mailto
 * unsubscribe address (use = the list name, "" for none).  compact: the
 * 42-character verp.h token, so <prefix>+<token> fits a 64-character local
 * part.  token: a tokens.h token of "<id>|<rcpt>" / "u|<rcpt>|<list>", which
 * feedback verifies today but which makes the local part ~150 characters.
 * malloc'd; only [A-Za-z0-9._-] either way. */
/* The compact VERP token (common/verp) of a message and recipient; use
 * "verp" for the return path, anything else for the mailto unsubscribe. */
char *send_record_verp_token(struct sender *w, const char *id, const char *rcpt, const char *use)
{
    int unsub = strcmp(use, "verp") != 0;
    char *tok = xmalloc(VERP_TOKEN_LEN + 1);
    if (verp_keys_token(w->verp_keys, unsub ? "unsubscribe" : "verp", id, rcpt, tok) != 0)
        panic("%s: verp_keys_token refused a checked id", __func__);
    return tok;
}

int send_record_prefix(struct sender *w, struct rec_ctx *rc, struct job_ctx *j, char *err, size_t errlen)
{
    struct strbuf p;
    strbuf_init(&p);
    if (w->list_unsubscribe) {
        /* "u|<rcpt>|<list>": what feedback's /u/ handler and mailto
         * unsubscribe verify (an empty list = every message to rcpt). */
        const char *list = rc->list ? rc->list : "";
        struct strbuf payload;
        strbuf_init(&payload);
        strbuf_appendf(&payload, "u|%s|%s", j->rcpt, list);
        int64_t exp = (now_ms() + w->unsub_ttl_ms) / 1000;
        char *tok = tokens_sign(w->tokens, payload.data, payload.len, exp);
        strbuf_free(&payload);
        char *vt = send_record_verp_token(w, rc->id, j->rcpt, list);
        const char *base = config_isset(w->cfg, "send", "unsubscribe_url")
                               ? config_str(w->cfg, "send", "unsubscribe_url")
                               : config_str(w->cfg, "mailfleet", "public_base_url");
        size_t bl = strlen(base);
        while (bl > 0 && base[bl - 1] == '/')
            bl--;
        strbuf_appendf(&p, "List-Unsubscribe: <%.*s/u/%s>,\r\n <mailto:unsubscribe+%s@%s>\r\n", (int)bl,
                       base, tok, vt, config_str(w->cfg, "send", "unsubscribe_domain"));
        strbuf_append(&p, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
        free(tok);
        free(vt);
    }
    if (w->dkim) {
        char *sig = dkim_signer_sign(w->dkim, rc->id, p.data ? p.data : "", p.len, rc->body, rc->body_len,
                                     err, errlen);
        if (!sig) {
            strbuf_free(&p);
            return -EINVAL;
        }
        struct strbuf all;
        strbuf_init(&all);
        strbuf_append(&all, sig);
        strbuf_append_n(&all, p.data ? p.data : "", p.len);
        free(sig);
        strbuf_free(&p);
        p = all;
    }
    j->prefix = strbuf_detach(&p, &j->prefix_len);
    if (!j->prefix) {
        j->prefix = xstrdup("");
        j->prefix_len = 0;
    }
    return 0;
}

void send_record_free(struct rec_ctx *rc)
{
    json_decref(rc->doc);
    json_decref(rc->retry);
    for (size_t i = 0; rc->rcpts && i < rc->n_rcpts; i++)
        free(rc->rcpts[i]);
    free(rc->rcpts);
    free(rc->body);
}
