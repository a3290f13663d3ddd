/* transport_ses — Amazon SES v2 SendEmail with Raw content:
 *
 *   POST /v2/email/outbound-emails
 *   {"FromEmailAddress": from, "Destination": {"ToAddresses": [rcpt]},
 *    "FeedbackForwardingEmailAddress": verp,
 *    "Content": {"Raw": {"Data": base64(message)}}}
 *
 * signed with SigV4 (service "ses").  Answers map onto SMTP-like outcomes
 * (ses_errors.h): 2xx delivered; 408, 5xx and transport errors retried; an
 * error that is ours rather than the recipient's (sending paused, quota,
 * sender not verified, credentials) holds the transport; a malformed
 * recipient address that SES names is permanent; other 4xx (sandbox,
 * content, size, bad request) are undetermined.  Credentials come from the
 * config or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN
 * and are never logged; nor is the message SES sends with a credentials
 * error, which can quote the signed request (an AccessDenied message names
 * the principal and the action, and is kept: an operator needs it to find
 * the policy that refused). */
#include "transport_impl.h"
#include "address.h"
#include "jsonx.h"
#include "digest.h"
#include "log.h"
#include "ses_errors.h"
#include "sigv4.h"
#include "strbuf.h"
#include "timeutil.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct ses {
    char *region;
    char *endpoint;    /* scheme://host[:port] */
    char *host;        /* host[:port], as signed */
    char *url;
    char *access_key, *secret_key, *session_token;
    struct transport_config tc;
    struct transport_curl *curl;
};

struct ses_job {
    struct curl_slist *headers;
    char *body;
    struct strbuf resp;
    char error_type[96];          /* x-amzn-ErrorType, as sent */
    char errbuf[CURL_ERROR_SIZE];
};

static char *env_or(const char *v, const char *env)
{
    if (v && *v)
        return xstrdup(v);
    const char *e = getenv(env);
    return e && *e ? xstrdup(e) : NULL;
}

static void ses_free(void *impl)
{
    struct ses *s = impl;
    if (!s)
        return;
    transport_curl_free(s->curl);
    free(s->region);
    free(s->endpoint);
    free(s->host);
    free(s->url);
    free(s->access_key);
    free(s->secret_key);
    free(s->session_token);
    free(s);
}

static void *ses_open(const char *uri, const struct transport_config *tc, char *err, size_t errlen)
{
    const char *region = uri + 4;
    if (strncmp(uri, "ses:", 4) != 0 || !*region ||
        strspn(region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(region)) {
        snprintf(err, errlen, "transport %s: expected ses:<region>, e.g. ses:eu-west-1", uri);
        return NULL;
    }
    struct ses *s = xcalloc(1, sizeof(*s));
    s->region = xstrdup(region);
    if (tc->ses_endpoint && *tc->ses_endpoint) {
        s->endpoint = xstrdup(tc->ses_endpoint);
        size_t l = strlen(s->endpoint);
        while (l > 0 && s->endpoint[l - 1] == '/')
            s->endpoint[--l] = '\0';
    } else {
        struct strbuf b;
        strbuf_init(&b);
        strbuf_appendf(&b, "https://email.%s.amazonaws.com", region);
        s->endpoint = strbuf_detach(&b, NULL);
    }
    const char *h = strstr(s->endpoint, "://");
    if (!h || !h[3] || strchr(h + 3, '/') || strpbrk(s->endpoint, " \r\n")) {
        snprintf(err, errlen, "ses_endpoint %s: expected scheme://host[:port]", s->endpoint);
        ses_free(s);
        return NULL;
    }
    s->host = xstrdup(h + 3);
    struct strbuf u;
    strbuf_init(&u);
    strbuf_appendf(&u, "%s/v2/email/outbound-emails", s->endpoint);
    s->url = strbuf_detach(&u, NULL);
    s->access_key = env_or(tc->access_key, "AWS_ACCESS_KEY_ID");
    s->secret_key = env_or(tc->secret_key, "AWS_SECRET_ACCESS_KEY");
    s->session_token = env_or(tc->session_token, "AWS_SESSION_TOKEN");
    if (!s->access_key || !s->secret_key) {
        snprintf(err, errlen, "transport ses: no credentials (ses_access_key/ses_secret_key or "
                 "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)");
        ses_free(s);
        return NULL;
    }
    s->tc = *tc;
    s->curl = transport_curl_new(tc->connections);
    return s;
}

static const char *ses_peer(void *impl) { return ((struct ses *)impl)->host; }

static size_t ses_write(char *buf, size_t size, size_t nitems, void *opaque)
{
    struct ses_job *sj = opaque;
    size_t n = size * nitems;
    if (sj->resp.len < 4096)
        strbuf_append_n(&sj->resp, buf, n < 4096 - sj->resp.len ? n : 4096 - sj->resp.len);
    return n;
}

/* Keeps the x-amzn-ErrorType header (the exception name of an error). */
static size_t ses_header(char *buf, size_t size, size_t nitems, void *opaque)
{
    struct ses_job *sj = opaque;
    size_t n = size * nitems;
    static const char name[] = "x-amzn-errortype:";
    if (n > sizeof(name) - 1 && strncasecmp(buf, name, sizeof(name) - 1) == 0) {
        const char *v = buf + sizeof(name) - 1;
        size_t vlen = n - (sizeof(name) - 1);
        while (vlen > 0 && (*v == ' ' || *v == '\t'))
            v++, vlen--;
        while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
            vlen--;
        snprintf(sj->error_type, sizeof(sj->error_type), "%.*s", (int)vlen, v);
    }
    return n;
}

static char *base64_message(const struct transport_job *job)
{
    size_t n = job->prefix_len + job->body_len;
    unsigned char *raw = xmalloc(n ? n : 1);
    memcpy(raw, job->prefix, job->prefix_len);
    memcpy(raw + job->prefix_len, job->body, job->body_len);
    char *out = xmalloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, raw, (int)n);
    free(raw);
    return out;
}

/* The SendEmail request (see the top of this file) as compact JSON. */
static char *ses_request_body(const struct transport_job *job)
{
    char *data = base64_message(job);
    json_t *req = json_object();
    json_object_set_new(req, "FromEmailAddress", json_string(job->from_addr));
    json_t *dest = json_object(), *to = json_array();
    json_array_append_new(to, json_string(job->rcpt));
    json_object_set_new(dest, "ToAddresses", to);
    json_object_set_new(req, "Destination", dest);
    if (job->mail_from && *job->mail_from)
        json_object_set_new(req, "FeedbackForwardingEmailAddress", json_string(job->mail_from));
    json_t *content = json_object(), *raw = json_object();
    json_object_set_new(raw, "Data", json_string(data));
    json_object_set_new(content, "Raw", raw);
    json_object_set_new(req, "Content", content);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    free(data);
    if (!body)
        panic("%s: json_dumps failed", __func__);
    return body;
}

/* The SigV4-signed request headers for body (a new list). */
static struct curl_slist *ses_signed_headers(const struct ses *s, const char *body, size_t blen)
{
    char amz_date[20], hash[65];
    sigv4_amz_date(now_ms() / 1000, amz_date, sizeof(amz_date));
    sha256_hex(body, blen, hash);
    struct sigv4_header hs[4] = {
        { "content-type", "application/json" },
        { "host", s->host },
        { "x-amz-date", amz_date },
        { "x-amz-security-token", s->session_token },
    };
    size_t nh = s->session_token ? 4 : 3;
    struct sigv4_creds cr = { s->access_key, s->secret_key, s->session_token, s->region, "ses" };
    char *auth = sigv4_sign(&cr, "POST", "/v2/email/outbound-emails", NULL, hs, nh, hash, amz_date,
                            NULL, NULL);
    if (!auth)
        panic("%s: sigv4_sign failed", __func__);
    struct curl_slist *headers = NULL;
    struct strbuf h;
    strbuf_init(&h);
    strbuf_appendf(&h, "Authorization: %s", auth);
    headers = curl_slist_append(headers, h.data);
    strbuf_reset(&h);
    strbuf_appendf(&h, "Host: %s", s->host);
    headers = curl_slist_append(headers, h.data);
    strbuf_reset(&h);
    strbuf_appendf(&h, "X-Amz-Date: %s", amz_date);
    headers = curl_slist_append(headers, h.data);
    headers = curl_slist_append(headers, "Content-Type: application/json");
    if (s->session_token) {
        strbuf_reset(&h);
        strbuf_appendf(&h, "X-Amz-Security-Token: %s", s->session_token);
        headers = curl_slist_append(headers, h.data);
    }
    headers = curl_slist_append(headers, "Expect:");
    strbuf_free(&h);
    free(auth);
    return headers;
}

static int ses_setup(void *impl, CURL *e, struct transport_job *job, void **state)
{
    struct ses *s = impl;
    char check[ADDRESS_BUFSZ];
    if (address_normalize(job->rcpt, check, sizeof(check)) != 0) {
        transport_job_result(job, TRANSPORT_PERM, 553, "5.1.3", "553 5.1.3 invalid recipient address");
        return -EINVAL;
    }
    struct ses_job *sj = xcalloc(1, sizeof(*sj));
    strbuf_init(&sj->resp);
    sj->body = ses_request_body(job);
    size_t blen = strlen(sj->body);
    sj->headers = ses_signed_headers(s, sj->body, blen);

    curl_easy_setopt(e, CURLOPT_URL, s->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, sj->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, sj->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, ses_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, sj);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, ses_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, sj);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, sj->errbuf);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, s->tc.tls_verify ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, s->tc.tls_verify ? 2L : 0L);
    if (s->tc.ca_file && *s->tc.ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, s->tc.ca_file);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)s->tc.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)s->tc.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    *state = sj;
    return 0;
}

/* The exception name: the header, else the body's __type or code. */
static void ses_error_name(const struct ses_job *sj, json_t *j, char *out, size_t outlen)
{
    const char *raw = sj->error_type[0] ? sj->error_type : NULL;
    if (!raw && j)
        raw = json_string_value(json_object_get(j, "__type"));
    if (!raw && j)
        raw = json_string_value(json_object_get(j, "code"));
    ses_errors_name(raw, out, outlen);
}

/* Fills job's result from an HTTP answer.  SES answers {"MessageId": "..."}
 * or {"message": "..."} with the exception name; both are short, untrusted
 * text, and go into events and logs as one line. */
static void ses_answered(struct ses_job *sj, long code, struct transport_job *job)
{
    char jerr[160], name[96], msg[512];
    json_t *j = sj->resp.len ? jsonx_loads(sj->resp.data, sj->resp.len, jerr, sizeof(jerr)) : NULL;
    const char *mid = j ? json_string_value(json_object_get(j, "MessageId")) : NULL;
    const char *m = j ? json_string_value(json_object_get(j, "message")) : NULL;
    if (!m && j)
        m = json_string_value(json_object_get(j, "Message"));
    ses_error_name(sj, j, name, sizeof(name));
    const char *reason = NULL;
    struct ses_answer a = { code, name, m, job->from_addr, job->mail_from, job->rcpt };
    enum transport_result r = ses_errors_classify(&a, &reason);
    if (reason && strcmp(reason, "credentials") == 0)
        m = "(message not kept: it may quote the signed request)";
    const char *sep = *name ? ": " : "", *text = m ? m : "";
    if (r == TRANSPORT_OK) {
        snprintf(msg, sizeof(msg), "250 2.0.0 Ok %s", mid ? mid : "");
        transport_job_result(job, r, (int)code, "2.0.0", msg);
    } else if (r == TRANSPORT_PERM) {   /* SES calls the recipient's address malformed */
        snprintf(msg, sizeof(msg), "553 5.1.3 ses: HTTP %ld %s%s%s", code, name, sep, text);
        transport_job_result(job, r, (int)code, "5.1.3", msg);
    } else if (r == TRANSPORT_UNDETERMINED) {
        snprintf(msg, sizeof(msg), "554 5.3.0 ses: HTTP %ld %s%s%s", code, name, sep, text);
        transport_job_result(job, r, (int)code, "5.3.0", msg);
    } else {
        snprintf(msg, sizeof(msg), "451 4.3.0 ses: HTTP %ld %s%s%s", code, name, sep, text);
        transport_job_result(job, r, (int)code, "4.3.0", msg);
        job->hold_reason = reason;
    }
    json_decref(j);
}

static void ses_finish(void *impl, CURL *e, CURLcode rc, struct transport_job *job, void *state)
{
    struct ses_job *sj = state;
    long code = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    if (rc != CURLE_OK || code == 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "451 4.4.1 ses: %s%s%s", curl_easy_strerror(rc),
                 sj->errbuf[0] ? ": " : "", sj->errbuf);
        transport_job_result(job, TRANSPORT_TEMP, 0, rc == CURLE_OPERATION_TIMEDOUT ? "4.4.2" : "4.4.1", msg);
    } else {
        ses_answered(sj, code, job);
    }
    curl_slist_free_all(sj->headers);
    free(sj->body);
    strbuf_free(&sj->resp);
    free(sj);
}

static const struct transport_curl_ops ses_curl_ops = { ses_setup, ses_finish };

static int ses_send(void *impl, struct transport_job *jobs, size_t n, const struct transport_run *run)
{
    struct ses *s = impl;
    return transport_curl_run(s->curl, s->tc.per_domain, jobs, n, &ses_curl_ops, s, run);
}

const struct transport_ops transport_ses_ops = {
    .scheme = "ses",
    .open = ses_open,
    .free = ses_free,
    .peer = ses_peer,
    .send = ses_send,
};
