/* http_routes — the public HTTP routes of links and feedback, called as the
 * HTTP server calls them (common/base/http.c) but without a daemon: a
 * struct http_request built here, the handler run, the response read to
 * the end (streams included) and freed.
 *
 *   GET|HEAD /a/<token>   links_serve (a gateway over a file store, an
 *                         LMDB revocation copy and a local bus)
 *   GET|POST /u/<token>   feedback_http_unsubscribe
 *   POST /sns             feedback_http_sns (allowed topic, certificate)
 *
 * Input: a request as text:
 *   METHOD SP PATH[?name=value&...] LF  (Name: value LF)*  LF  body
 * A path "/a/!<payload>" or "/u/!<payload>" has the payload signed here
 * with the token key (the fuzzer cannot forge a MAC; this lets it reach
 * what comes after one).  A body "!<json>" is an SNS message that gets a
 * current Timestamp and a signature by the test certificate.
 *
 * Checked: a token not made here is never served (403, 405 or 503); a
 * status is one the route documents; a 206 has a Content-Range; a stream
 * gives exactly its announced length. */
#include "fuzz.h"

#include <jansson.h>

#include "bus.h"
#include "common_config.h"
#include "config.h"
#include "feedback/feedback.h"
#include "feedback/feedback_int.h"
#include "feedback/sns.h"
#include "http.h"
#include "jsonx.h"
#include "kv.h"
#include "links/links.h"
#include "metrics.h"
#include "sns_signer.h"
#include "store.h"
#include "strbuf.h"
#include "timeutil.h"
#include "tokens.h"
#include "verp.h"
#include "worker.h"

/* feedback.c and links.c refer to these, which the binary's main file
 * defines; no worker is started here. */
void worker_started(struct worker_env *env)
{
    __builtin_trap();
}

struct config *mailfleet_load_config(int argc, char **argv)
{
    __builtin_trap();
}

#define ARN "arn:aws:sns:us-west-2:123456789012:ses-feedback"
#define OBJECT_KEY "attachments/2026-11-18/01935c5e-7a00-7000-8000-00000000f022/1-report.txt"

static struct tokens *fuzz_tok;
static struct links *fuzz_links;
static struct feedback fuzz_feedback;
static char *fuzz_arns[] = { ARN };

/* Gateway parts: a store holding one object, a revocation of one message
 * id, a bus whose records age out (retention) so a long run stays small. */
static void links_setup(void)
{
    char err[256], uri[600], dir[512];
    struct bus_options bo = { .client_id = "fuzz", .retention_ms = 1000, .map_size = 256ULL << 20 };
    snprintf(uri, sizeof(uri), "file:%s/store", fuzz_dir());
    struct store *st = store_open(uri, NULL, err, sizeof(err));
    snprintf(dir, sizeof(dir), "%s/kv", fuzz_dir());
    struct kv *kv = st ? kv_open_flags(dir, "revocations", 64ULL << 20, KV_VOLATILE, err, sizeof(err)) : NULL;
    snprintf(uri, sizeof(uri), "local:%s/bus", fuzz_dir());
    struct bus *bus = kv ? bus_open(uri, &bo, err, sizeof(err)) : NULL;
    struct store_object so;
    char k[66];
    links_revocation_key('m', "revoked-message", strlen("revoked-message"), k);
    if (!bus || store_put_buf(st, OBJECT_KEY, "0123456789abcdef", 16, "text/plain", &so, err, sizeof(err)) != 0 ||
        kv_put(kv, k, 65, "", 0, 0) != 0)
        panic("http_routes fuzz set-up: %s", err);
    fuzz_links = links_gateway_new(fuzz_tok, st, kv, bus, 0);
    fuzz_feedback.bus = bus;
}

static void feedback_setup(void)
{
    char err[256];
    static const struct config_key *tables[] = { common_config_keys, feedback_config_keys, NULL };
    struct feedback *f = &fuzz_feedback;
    if (!(f->cfg = config_load(NULL, tables, err, sizeof(err))) || !(f->verp_keys = verp_keys_new(fuzz_tok)))
        panic("http_routes fuzz set-up: %s", err);
    f->tokens = fuzz_tok;
    f->arns = fuzz_arns;
    f->n_arns = 1;
    f->cert_file = sns_signer_cert;
    f->m_sns_rejected = metric_counter("fuzz_sns_rejected_total", "", NULL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    const char *keys[] = { "fuzz:fuzz-links-token-key-0123456789" };
    fuzz_init();
    sns_signer_init();
    if (!(fuzz_tok = tokens_new(keys, 1, err, sizeof(err))))
        panic("tokens_new: %s", err);
    links_setup();
    feedback_setup();
    return 0;
}

/* The request the input spells, its strings pointing into the parts. */
struct fuzz_request {
    struct http_request req;
    char *text;                    /* the input, NUL-terminated, cut up */
    const char *headers[2 * 8 + 1];
    const char *query[2 * 8 + 1];
    char *path;                    /* malloc'd: the token substituted */
    char *body;                    /* malloc'd */
    int signed_here;               /* "/a/!..." or "/u/!..." */
};

static void split_query(struct fuzz_request *fr, char *q)
{
    size_t n = 0;
    for (char *save = NULL, *a = strtok_r(q, "&", &save); a && n < 16; a = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(a, '=');
        if (eq)
            *eq++ = '\0';
        fr->query[n++] = a;
        fr->query[n++] = eq ? eq : "";
    }
    fr->query[n] = NULL;
}

/* "/a/!payload" -> "/a/<token of payload>" (no expiry). */
static char *sign_path(const char *path)
{
    if ((strncmp(path, "/a/!", 4) != 0 && strncmp(path, "/u/!", 4) != 0))
        return strdup(path);
    char *tok = tokens_sign(fuzz_tok, path + 4, strlen(path + 4), 0);
    char *out = malloc(strlen(tok) + 4);
    if (!out)
        abort();
    memcpy(out, path, 3);
    strcpy(out + 3, tok);
    free(tok);
    return out;
}

/* "!{...}" -> the message with a current Timestamp and a good Signature. */
static char *sign_sns(const char *body)
{
    char err[256];
    json_t *o = json_loads(body + 1, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return strdup(body);
    }
    char ts[32];
    json_object_set_new(o, "Timestamp", json_string(rfc3339_ms(now_ms(), ts, sizeof(ts))));
    char *plain = json_dumps(o, JSON_COMPACT);
    struct sns_msg m;
    if (plain && sns_parse(plain, strlen(plain), &m, err, sizeof(err)) == 0) {
        char *tosign = sns_string_to_sign(&m);
        char *sig = sns_signer_sign(tosign, m.signature_version);
        json_object_set_new(o, "Signature", json_string(sig));
        free(sig);
        free(tosign);
        sns_msg_clear(&m);
    }
    free(plain);
    char *out = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return out ? out : strdup(body);
}

static void request_parse(struct fuzz_request *fr, const uint8_t *data, size_t size)
{
    memset(fr, 0, sizeof(*fr));
    fr->text = fuzz_strndup(data, size);
    char *line_end = strchr(fr->text, '\n');
    char *rest = line_end ? line_end + 1 : fr->text + strlen(fr->text);
    if (line_end)
        *line_end = '\0';
    char *sp = strchr(fr->text, ' ');
    char *path = sp ? sp + 1 : (char *)"/";
    if (sp)
        *sp = '\0';
    char *q = strchr(path, '?');
    if (q) {
        *q++ = '\0';
        split_query(fr, q);
    }
    size_t nh = 0;
    while (*rest && *rest != '\n') {
        char *nl = strchr(rest, '\n');
        if (nl)
            *nl = '\0';
        char *colon = strchr(rest, ':');
        if (colon && nh < 16) {
            *colon = '\0';
            fr->headers[nh++] = rest;
            fr->headers[nh++] = colon[1] == ' ' ? colon + 2 : colon + 1;
        }
        rest = nl ? nl + 1 : rest + strlen(rest);
    }
    fr->headers[nh] = NULL;
    if (*rest == '\n')
        rest++;
    fr->signed_here = strncmp(path, "/a/!", 4) == 0 || strncmp(path, "/u/!", 4) == 0;
    fr->path = sign_path(path);
    size_t off = (size_t)(rest - fr->text), body_len;
    if (off < size && data[off] == '!') {
        fr->body = sign_sns(rest);
        body_len = strlen(fr->body);
    } else {
        /* the rest of the input, NULs and all, as the server collects it */
        body_len = off < size ? size - off : 0;
        fr->body = malloc(body_len + 1);
        if (!fr->body)
            abort();
        memcpy(fr->body, data + off, body_len);
        fr->body[body_len] = '\0';
    }
    if (!fr->path || !fr->body)
        abort();
    fr->req = (struct http_request){ fr->text, fr->path, "192.0.2.7", fr->body, body_len, NULL,
                                     fr->headers, fr->query };
}

static void request_free(struct fuzz_request *fr)
{
    free(fr->text);
    free(fr->path);
    free(fr->body);
}

static const char *resp_header(const struct http_response *r, const char *name)
{
    for (size_t i = 0; i + 1 < r->n_headers; i += 2)
        if (strcmp(r->headers[i], name) == 0)
            return r->headers[i + 1];
    return NULL;
}

/* Reads a streamed body as libmicrohttpd does: never asking for more than
 * the announced size, to the end. */
static void drain_stream(struct http_response *r)
{
    char buf[4096];
    uint64_t pos = 0;
    long n = 1;
    while (n > 0 && pos < r->stream_size) {
        uint64_t left = r->stream_size - pos;
        n = r->stream(r->stream_opaque, pos, buf, left < sizeof(buf) ? (size_t)left : sizeof(buf));
        if (n > 0)
            pos += (uint64_t)n;
    }
    FUZZ_CHECK(n >= 0);
    FUZZ_CHECK(r->stream_size == UINT64_MAX || pos == r->stream_size);
    if (r->stream_free)
        r->stream_free(r->stream_opaque);
}

static void response_check_free(const struct fuzz_request *fr, struct http_response *r, char route)
{
    static const int links_ok[] = { 200, 206, 302, 304, 403, 404, 405, 416, 503, 0 };
    FUZZ_CHECK(r->status >= 200 && r->status <= 599);
    if (route == 'a') {
        int known = 0;
        for (size_t i = 0; links_ok[i]; i++)
            known |= r->status == links_ok[i];
        FUZZ_CHECK(known);
        /* what the fuzzer wrote itself cannot carry a valid MAC */
        if (!fr->signed_here)
            FUZZ_CHECK(r->status == 403 || r->status == 405 || r->status == 503);
        if (r->status == 206)
            FUZZ_CHECK(resp_header(r, "Content-Range") != NULL);
    }
    if (r->stream)
        drain_stream(r);
    free(r->body);
    for (size_t i = 0; i < r->n_headers; i++)
        free(r->headers[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_request fr;
    request_parse(&fr, data, size);
    struct http_response resp = { 0 };
    char route = 0;
    /* longest prefix, as http.c routes */
    if (strncmp(fr.path, "/a/", 3) == 0) {
        route = 'a';
        links_serve(fuzz_links, &fr.req, &resp);
    } else if (strncmp(fr.path, "/u/", 3) == 0) {
        route = 'u';
        feedback_http_unsubscribe(&fuzz_feedback, &fr.req, &resp);
    } else if (strncmp(fr.path, "/sns", 4) == 0) {
        route = 's';
        feedback_http_sns(&fuzz_feedback, &fr.req, &resp);
    }
    if (route)
        response_check_free(&fr, &resp, route);
    request_free(&fr);
    return 0;
}
