/* feedback_api — the SES v2-shaped suppression API on the public HTTP server:
 * GET /v2/email/suppression/addresses (PageSize, NextToken, Reason,
 * StartDate, EndDate), PUT /addresses (JSON body) and GET|PUT|DELETE
 * /addresses/<address>.
 *
 * Reads come from the worker's suppression copy; changes are published on
 * mailfleet.suppression (the copy also applies them at once, so a GET right
 * after a PUT sees it).  Security: off unless api_token is set; the bearer
 * token is compared in constant time. */
#include "feedback_int.h"

#include "strbuf.h"
#include "http.h"
#include "jsonx.h"
#include "kv.h"
#include "log.h"
#include "suppression.h"
#include "suppression_copy.h"
#include "timeutil.h"
#include "tokens.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void api_error(struct http_response *resp, int status, const char *type, const char *msg)
{
    json_t *o = json_pack("{s:s, s:s}", "__type", type, "message", msg);
    resp->status = status;
    resp->content_type = "application/json";
    resp->body = json_dumps(o, JSON_COMPACT);
    resp->body_len = strlen(resp->body);
    json_decref(o);
}

static void api_json(struct http_response *resp, json_t *o)
{
    resp->status = 200;
    resp->content_type = "application/json";
    resp->body = json_dumps(o, JSON_COMPACT);
    resp->body_len = strlen(resp->body);
    json_decref(o);
}

struct page {
    json_t *items;
    size_t want;
    const char *reason;
    int64_t start, end;
    char last[512];
    int more;
};

static int page_one(void *opaque, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct page *p = opaque;
    if (json_array_size(p->items) == p->want) {
        p->more = 1;
        return 1;
    }
    char err[128];
    json_t *o = suppression_record_parse(val, vlen, err, sizeof(err));
    if (!o)
        return 0;
    const char *reason = json_string_value(json_object_get(o, "reason"));
    const char *ts = json_string_value(json_object_get(o, "lastUpdateTime"));
    int64_t t = ts ? rfc3339_parse(ts) : 0;
    int keep = (!p->reason || (reason && strcmp(reason, p->reason) == 0)) &&
               (!p->start || t >= p->start) && (!p->end || t <= p->end);
    if (keep) {
        json_t *s = json_pack("{s:O, s:O, s:O}", "EmailAddress", json_object_get(o, "emailAddress"),
                              "Reason", json_object_get(o, "reason"), "LastUpdateTime",
                              json_object_get(o, "lastUpdateTime"));
        if (json_object_get(o, "list"))
            json_object_set(s, "List", json_object_get(o, "list"));
        json_array_append_new(p->items, s);
    }
    size_t n = klen < sizeof(p->last) - 1 ? klen : sizeof(p->last) - 1;
    memcpy(p->last, key, n);
    p->last[n] = '\0';
    json_decref(o);
    return 0;
}

static int64_t api_time(const char *s)
{
    if (!s)
        return 0;
    char *end;
    double d = strtod(s, &end);   /* SES accepts epoch seconds or ISO 8601 */
    if (*s && !*end)
        return (int64_t)(d * 1000);
    return rfc3339_parse(s);
}

static void api_list(struct feedback *f, const struct http_request *req, struct http_response *resp)
{
    const char *ps = http_query(req, "PageSize"), *nt = http_query(req, "NextToken");
    long size = ps ? strtol(ps, NULL, 10) : 100;
    if (size < 1 || size > 1000) {
        api_error(resp, 400, "BadRequestException", "PageSize must be 1..1000");
        return;
    }
    struct page p = { json_array(), (size_t)size, http_query(req, "Reason"),
                      api_time(http_query(req, "StartDate")), api_time(http_query(req, "EndDate")),
                      "", 0 };
    if (p.reason && !suppression_reason_valid(p.reason)) {
        api_error(resp, 400, "BadRequestException", "Reason must be BOUNCE, COMPLAINT, UNSUBSCRIBE or MANUAL");
        json_decref(p.items);
        return;
    }
    unsigned char *start = NULL;
    size_t slen = 0;
    if (nt && b64url_decode(nt, &start, &slen) != 0) {
        api_error(resp, 400, "BadRequestException", "bad NextToken");
        json_decref(p.items);
        return;
    }
    /* NextToken is the last key returned: resume after it.  kv_iter starts at
     * the key itself, so append a NUL, the smallest byte that sorts after. */
    if (start) {
        start = xrealloc(start, slen + 1);
        start[slen++] = '\0';
    }
    kv_iter(suppression_copy_kv(f->copy), start, slen, page_one, &p);
    free(start);
    json_t *out = json_pack("{s:o}", "SuppressedDestinationSummaries", p.items);
    if (p.more) {
        char *tok = b64url_encode(p.last, strlen(p.last));
        json_object_set_new(out, "NextToken", json_string(tok));
        free(tok);
    }
    api_json(resp, out);
}

/* 1 when the request carries the API's bearer token; otherwise the answer
 * (403: the API is off, 401: no or a wrong token) is already in resp. */
static int api_authorized(const struct feedback *f, const struct http_request *req, struct http_response *resp)
{
    const char *auth = http_header(req, "Authorization");
    if (!f->api_token) {
        api_error(resp, 403, "AccessDeniedException", "the suppression API is not enabled");
        return 0;
    }
    size_t tl = strlen(f->api_token);
    if (!auth || strncmp(auth, "Bearer ", 7) != 0 || strlen(auth + 7) != tl ||
        CRYPTO_memcmp(auth + 7, f->api_token, tl) != 0) {
        http_response_header(resp, "WWW-Authenticate", "Bearer");
        api_error(resp, 401, "UnauthorizedException", "missing or wrong bearer token");
        return 0;
    }
    return 1;
}

/* GET /addresses/<addr>: the entry as SES v2 shows a SuppressedDestination. */
static void api_get(struct feedback *f, const char *key, struct http_response *resp)
{
    void *v = NULL;
    size_t vl = 0;
    if (kv_get(suppression_copy_kv(f->copy), key, strlen(key), &v, &vl) != 1) {
        api_error(resp, 404, "NotFoundException", "not on the suppression list");
    } else {
        char perr[128];
        json_t *o = suppression_record_parse(v, vl, perr, sizeof(perr));
        if (!o) {
            log_kv(LOG_ERROR, "unreadable suppression entry", "error", perr, NULL);
            api_error(resp, 500, "InternalFailure", "unreadable suppression entry");
            free(v);
            return;
        }
        json_t *attrs = json_object();
        if (json_object_get(o, "messageId"))
            json_object_set(attrs, "MessageId", json_object_get(o, "messageId"));
        if (json_object_get(o, "feedbackId"))
            json_object_set(attrs, "FeedbackId", json_object_get(o, "feedbackId"));
        api_json(resp, json_pack("{s:{s:O, s:O, s:O, s:o}}", "SuppressedDestination",
                                 "EmailAddress", json_object_get(o, "emailAddress"), "Reason",
                                 json_object_get(o, "reason"), "LastUpdateTime",
                                 json_object_get(o, "lastUpdateTime"), "Attributes", attrs));
        json_decref(o);
    }
    free(v);
}

/* PUT: suppress addr with the body's Reason. */
static void api_put(struct feedback *f, const char *addr, const char *key, json_t *body,
                    struct http_response *resp)
{
    char err[256];
    const char *reason = json_string_value(json_object_get(body, "Reason"));
    if (!suppression_reason_valid(reason)) {
        api_error(resp, 400, "BadRequestException", "Reason must be BOUNCE, COMPLAINT, UNSUBSCRIBE or MANUAL");
    } else if (suppression_publish(f->bus, addr, NULL, reason, "api", NULL, NULL, err, sizeof(err)) != 0) {
        api_error(resp, 503, "ServiceUnavailableException", "cannot record the change");
    } else {
        char *v = suppression_record(addr, NULL, reason, now_ms(), "api", NULL, NULL);
        suppression_copy_apply(f->copy, key, strlen(key), v, strlen(v));
        free(v);
        api_json(resp, json_object());
    }
}

/* DELETE: a tombstone for addr. */
static void api_delete(struct feedback *f, const char *addr, const char *key, struct http_response *resp)
{
    char err[256];
    if (suppression_remove(f->bus, addr, NULL, err, sizeof(err)) != 0) {
        api_error(resp, 503, "ServiceUnavailableException", "cannot record the change");
    } else {
        suppression_copy_apply(f->copy, key, strlen(key), NULL, 0);
        api_json(resp, json_object());
    }
}

void feedback_api_serve(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct feedback *f = opaque;
    char key[512];
    if (!api_authorized(f, req, resp))
        return;
    const char *base = "/v2/email/suppression/addresses";
    const char *rest = req->path + strlen(base);
    if (strncmp(req->path, base, strlen(base)) != 0 || (*rest && *rest != '/')) {
        api_error(resp, 404, "NotFoundException", "no such resource");
        return;
    }
    if (*rest == '/')
        rest++;
    if (!*rest && strcmp(req->method, "GET") == 0) {
        api_list(f, req, resp);
        return;
    }
    /* PUT /addresses with a JSON body (SES v2) or PUT|GET|DELETE /addresses/<addr> */
    char jerr[160];
    json_t *body = req->body_len ? jsonx_loads(req->body, req->body_len, jerr, sizeof(jerr)) : NULL;
    const char *addr = *rest ? rest : json_string_value(json_object_get(body, "EmailAddress"));
    if (!addr || suppression_key(addr, NULL, key, sizeof(key)) != 0) {
        api_error(resp, 400, "BadRequestException", "not a valid email address");
        json_decref(body);
        return;
    }
    if (strcmp(req->method, "GET") == 0)
        api_get(f, key, resp);
    else if (strcmp(req->method, "PUT") == 0)
        api_put(f, addr, key, body, resp);
    else if (strcmp(req->method, "DELETE") == 0)
        api_delete(f, addr, key, resp);
    else
        api_error(resp, 405, "MethodNotAllowed", "GET, PUT or DELETE");
    json_decref(body);
}
