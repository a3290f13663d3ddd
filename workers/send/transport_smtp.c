/* transport_smtp — relay through an SMTP server with libcurl.
 *
 * One transfer per recipient (MAIL FROM, one RCPT, DATA): the envelope and
 * the per-recipient headers differ, and one result per recipient is what the
 * events report.  curl keeps the connections of the multi handle open, so
 * consecutive transfers reuse a session (RSET-free MAIL FROM) instead of
 * reconnecting.
 *
 * Security: the envelope addresses reach MAIL FROM / RCPT TO only after
 * address_normalize accepted them (no CR, LF, spaces or '<>'), and are checked
 * again here.  curl dot-stuffs the DATA stream (a line starting with '.' is
 * sent as '..') and adds the terminating CRLF.CRLF, so the relay receives the
 * bytes we built.  STARTTLS is required unless smtp_starttls says otherwise;
 * the password is never logged (curl's verbose mode stays off). */
#include "transport_impl.h"
#include "address.h"
#include "strbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct smtp {
    char *url;         /* smtp://host:port/<helo> */
    char *peer;        /* host:port */
    struct transport_config tc;
    long use_ssl;
    struct transport_curl *curl;
};

struct smtp_job {
    struct curl_slist *rcpt;
    const struct transport_job *job;
    size_t pos;                    /* bytes of prefix + body handed to curl */
    char last[512];                /* last 2xx reply (not 221), for success */
    char fail[512];                /* first 4xx/5xx reply, for failures */
    char mail_from[1024];
    char errbuf[CURL_ERROR_SIZE];
};

static void *smtp_open(const char *uri, const struct transport_config *tc, char *err, size_t errlen)
{
    int tls = strncmp(uri, "smtps://", 8) == 0;
    if (!tls && strncmp(uri, "smtp://", 7) != 0) {
        snprintf(err, errlen, "transport %s: expected smtp://host:port or smtps://host:port", uri);
        return NULL;
    }
    const char *hp = uri + (tls ? 8 : 7);
    size_t hl = strcspn(hp, "/?#");
    if (hl == 0 || hp[hl] != '\0' || strpbrk(hp, " \r\n@")) {
        snprintf(err, errlen, "transport %s: expected smtp://host:port with no path or user", uri);
        return NULL;
    }
    long use_ssl;
    const char *st = tc->starttls ? tc->starttls : "required";
    if (strcmp(st, "required") == 0)
        use_ssl = CURLUSESSL_ALL;
    else if (strcmp(st, "optional") == 0)
        use_ssl = CURLUSESSL_TRY;
    else if (strcmp(st, "off") == 0)
        use_ssl = CURLUSESSL_NONE;
    else {
        snprintf(err, errlen, "smtp_starttls = %s: expected required, optional or off", st);
        return NULL;
    }
    const char *helo = tc->helo && *tc->helo ? tc->helo : "localhost";
    if (strspn(helo, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != strlen(helo)) {
        snprintf(err, errlen, "smtp_helo = %s: not a host name", helo);
        return NULL;
    }
    struct smtp *s = xcalloc(1, sizeof(*s));
    struct strbuf u;
    strbuf_init(&u);
    strbuf_appendf(&u, "%s://%.*s/%s", tls ? "smtps" : "smtp", (int)hl, hp, helo);
    s->url = strbuf_detach(&u, NULL);
    s->peer = xstrndup(hp, hl);
    s->tc = *tc;
    s->use_ssl = tls ? CURLUSESSL_ALL : use_ssl;
    s->curl = transport_curl_new(tc->connections);
    return s;
}

static void smtp_free(void *impl)
{
    struct smtp *s = impl;
    if (!s)
        return;
    transport_curl_free(s->curl);
    free(s->url);
    free(s->peer);
    free(s);
}

static const char *smtp_peer(void *impl) { return ((struct smtp *)impl)->peer; }

static size_t smtp_read(char *buf, size_t size, size_t nitems, void *opaque)
{
    struct smtp_job *sj = opaque;
    const struct transport_job *j = sj->job;
    size_t max = size * nitems, out = 0;
    while (out < max && sj->pos < j->prefix_len + j->body_len) {
        const char *src;
        size_t avail;
        if (sj->pos < j->prefix_len) {
            src = j->prefix + sj->pos;
            avail = j->prefix_len - sj->pos;
        } else {
            src = j->body + (sj->pos - j->prefix_len);
            avail = j->body_len - (sj->pos - j->prefix_len);
        }
        size_t take = avail < max - out ? avail : max - out;
        memcpy(buf + out, src, take);
        out += take;
        sj->pos += take;
    }
    return out;
}

/* curl hands SMTP server replies to the header callback, one line each.
 * The reply that decided a failed transfer is the first 4xx/5xx (curl may
 * send QUIT afterwards, whose 221 decides nothing); for a success it is the
 * last 2xx, the answer to the end of DATA. */
static size_t smtp_reply(char *buf, size_t size, size_t nitems, void *opaque)
{
    struct smtp_job *sj = opaque;
    size_t n = size * nitems, l = n;
    while (l > 0 && (buf[l - 1] == '\n' || buf[l - 1] == '\r'))
        l--;
    if (l < 3)
        return n;
    char *dst = NULL;
    if ((buf[0] == '4' || buf[0] == '5') && !sj->fail[0])
        dst = sj->fail;
    else if (buf[0] == '2' && strncmp(buf, "221", 3) != 0)
        dst = sj->last;
    if (dst) {
        if (l >= sizeof(sj->last))
            l = sizeof(sj->last) - 1;
        memcpy(dst, buf, l);
        dst[l] = '\0';
    }
    return n;
}

/* The envelope sender is built by send from a validated prefix, domain and a
 * token of [a-z2-7]; checked once more here because it goes into the SMTP
 * command: atext, one '@', nothing that could end the line. */
static int envelope_sender_safe(const char *a)
{
    const char *at = strchr(a, '@');
    if (!at || at == a || strchr(at + 1, '@') || strlen(a) > 900)
        return 0;
    for (const char *p = a; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr(".-_+=@", *p)))
            return 0;
    return 1;
}

static int smtp_setup(void *impl, CURL *e, struct transport_job *job, void **state)
{
    struct smtp *s = impl;
    char check[ADDRESS_BUFSZ];
    if (address_normalize(job->rcpt, check, sizeof(check)) != 0 || !envelope_sender_safe(job->mail_from)) {
        transport_job_result(job, TRANSPORT_PERM, 553, "5.1.3", "553 5.1.3 invalid envelope address");
        return -EINVAL;
    }
    struct smtp_job *sj = xcalloc(1, sizeof(*sj));
    sj->job = job;
    char rcpt[ADDRESS_BUFSZ + 2];
    snprintf(rcpt, sizeof(rcpt), "<%s>", job->rcpt);
    snprintf(sj->mail_from, sizeof(sj->mail_from), "<%s>", job->mail_from);
    sj->rcpt = curl_slist_append(NULL, rcpt);
    curl_easy_setopt(e, CURLOPT_URL, s->url);
    curl_easy_setopt(e, CURLOPT_MAIL_FROM, sj->mail_from);
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, sj->rcpt);
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)(job->prefix_len + job->body_len));
    curl_easy_setopt(e, CURLOPT_READFUNCTION, smtp_read);
    curl_easy_setopt(e, CURLOPT_READDATA, sj);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, smtp_reply);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, sj);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, sj->errbuf);
    curl_easy_setopt(e, CURLOPT_USE_SSL, s->use_ssl);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, s->tc.tls_verify ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, s->tc.tls_verify ? 2L : 0L);
    if (s->tc.ca_file && *s->tc.ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, s->tc.ca_file);
    if (s->tc.user && *s->tc.user) {
        curl_easy_setopt(e, CURLOPT_USERNAME, s->tc.user);
        curl_easy_setopt(e, CURLOPT_PASSWORD, s->tc.password ? s->tc.password : "");
    }
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)s->tc.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)s->tc.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    *state = sj;
    return 0;
}

static void smtp_finish(void *impl, CURL *e, CURLcode rc, struct transport_job *job, void *state)
{
    struct smtp_job *sj = state;
    long code = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    int pcode = 0;
    char status[16];
    if (rc == CURLE_OK) {
        transport_parse_reply(sj->last[0] ? sj->last : "250 Ok", &pcode, status);
        transport_job_result(job, TRANSPORT_OK, pcode ? pcode : (int)code, status, sj->last[0] ? sj->last : "250 Ok");
    } else if (sj->fail[0] && (transport_parse_reply(sj->fail, &pcode, status), pcode >= 400)) {
        transport_job_result(job, pcode >= 500 ? TRANSPORT_PERM : TRANSPORT_TEMP, pcode, status, sj->fail);
    } else {
        /* No decisive reply: connection refused or lost, TLS, timeout.  The
         * message may or may not have arrived (a drop after DATA); retrying
         * is the only safe choice, a duplicate is better than a loss. */
        char msg[512];
        snprintf(msg, sizeof(msg), "451 4.4.1 %s%s%s", curl_easy_strerror(rc), sj->errbuf[0] ? ": " : "",
                 sj->errbuf);
        transport_job_result(job, TRANSPORT_TEMP, 0, rc == CURLE_OPERATION_TIMEDOUT ? "4.4.2" : "4.4.1", msg);
    }
    curl_slist_free_all(sj->rcpt);
    free(sj);
}

static const struct transport_curl_ops smtp_curl_ops = { smtp_setup, smtp_finish };

static int smtp_send(void *impl, struct transport_job *jobs, size_t n, const struct transport_run *run)
{
    struct smtp *s = impl;
    return transport_curl_run(s->curl, s->tc.per_domain, jobs, n, &smtp_curl_ops, s, run);
}

const struct transport_ops transport_smtp_ops = {
    .scheme = "smtp",
    .open = smtp_open,
    .free = smtp_free,
    .peer = smtp_peer,
    .send = smtp_send,
};
