/* sns — parse and verify SNS deliveries; read the SES notification inside. */
#include "sns.h"
#include "base64.h"
#include "jsonx.h"
#include "strbuf.h"
#include "timeutil.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_field(json_t *o, const char *name)
{
    const char *v = json_string_value(json_object_get(o, name));
    return v ? xstrdup(v) : NULL;
}

int sns_parse(const char *body, size_t len, struct sns_msg *m, char *err, size_t errlen)
{
    char jerr[160];
    memset(m, 0, sizeof(*m));
    /* strict: a duplicate Message or Signature could make the checked value
     * and the used one differ */
    json_t *o = jsonx_loads(body, len, jerr, sizeof(jerr));
    if (!o) {
        snprintf(err, errlen, "not a JSON object: %s", jerr);
        return -EINVAL;
    }
    m->type = dup_field(o, "Type");
    m->message_id = dup_field(o, "MessageId");
    m->topic_arn = dup_field(o, "TopicArn");
    m->subject = dup_field(o, "Subject");
    m->message = dup_field(o, "Message");
    m->timestamp = dup_field(o, "Timestamp");
    m->signature_version = dup_field(o, "SignatureVersion");
    m->signature = dup_field(o, "Signature");
    m->signing_cert_url = dup_field(o, "SigningCertURL");
    m->subscribe_url = dup_field(o, "SubscribeURL");
    m->token = dup_field(o, "Token");
    json_decref(o);
    if (!m->type || !m->message_id || !m->topic_arn || !m->message || !m->timestamp) {
        snprintf(err, errlen, "missing Type, MessageId, TopicArn, Message or Timestamp");
        sns_msg_clear(m);
        return -EINVAL;
    }
    return 0;
}

void sns_msg_clear(struct sns_msg *m)
{
    char **f[] = { &m->type, &m->message_id, &m->topic_arn, &m->subject, &m->message, &m->timestamp,
                   &m->signature_version, &m->signature, &m->signing_cert_url, &m->subscribe_url,
                   &m->token };
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        free(*f[i]);
        *f[i] = NULL;
    }
}

int sns_cert_url_ok(const char *url)
{
    regex_t re;
    if (!url || regcomp(&re, "^https://sns\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?/[A-Za-z0-9._/-]+\\.pem$",
                        REG_EXTENDED | REG_NOSUB) != 0)
        return 0;
    int ok = regexec(&re, url, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

#define SNS_CLOCK_SKEW_MS (5 * 60 * 1000)   /* our clock may be behind AWS's */

int sns_check_fresh(const struct sns_msg *m, int64_t now_ms, int64_t max_age_ms, char *err, size_t errlen)
{
    int64_t ts = m->timestamp ? rfc3339_parse(m->timestamp) : -1;
    if (ts < 0) {
        snprintf(err, errlen, "Timestamp is not an RFC 3339 time");
        return -EPERM;
    }
    if (now_ms - ts > max_age_ms) {
        snprintf(err, errlen, "Timestamp is %lld s old (limit %lld s)", (long long)((now_ms - ts) / 1000),
                 (long long)(max_age_ms / 1000));
        return -EPERM;
    }
    if (ts - now_ms > SNS_CLOCK_SKEW_MS) {
        snprintf(err, errlen, "Timestamp is %lld s in the future", (long long)((ts - now_ms) / 1000));
        return -EPERM;
    }
    return 0;
}

static void kv_line(struct strbuf *b, const char *k, const char *v)
{
    strbuf_append(b, k);
    strbuf_append(b, "\n");
    strbuf_append(b, v ? v : "");
    strbuf_append(b, "\n");
}

char *sns_string_to_sign(const struct sns_msg *m)
{
    struct strbuf b;
    strbuf_init(&b);
    kv_line(&b, "Message", m->message);
    kv_line(&b, "MessageId", m->message_id);
    if (strcmp(m->type, "Notification") == 0) {
        if (m->subject)
            kv_line(&b, "Subject", m->subject);
    } else {
        kv_line(&b, "SubscribeURL", m->subscribe_url);
    }
    kv_line(&b, "Timestamp", m->timestamp);
    if (strcmp(m->type, "Notification") != 0)
        kv_line(&b, "Token", m->token);
    kv_line(&b, "TopicArn", m->topic_arn);
    kv_line(&b, "Type", m->type);
    return strbuf_detach(&b, NULL);
}

int sns_verify(const struct sns_msg *m, const char *cert_path, char *err, size_t errlen)
{
    int rc = -EPERM;
    const EVP_MD *md;
    if (m->signature_version && strcmp(m->signature_version, "1") == 0)
        md = EVP_sha1();
    else if (m->signature_version && strcmp(m->signature_version, "2") == 0)
        md = EVP_sha256();
    else {
        snprintf(err, errlen, "unsupported SignatureVersion");
        return -EPERM;
    }
    if (!m->signature) {
        snprintf(err, errlen, "no Signature");
        return -EPERM;
    }
    FILE *f = fopen(cert_path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read the SNS certificate file");
        return -EIO;
    }
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!cert) {
        snprintf(err, errlen, "the SNS certificate file is not a PEM certificate");
        return -EIO;
    }
    EVP_PKEY *key = X509_get_pubkey(cert);
    size_t n = 0;
    unsigned char *sig = base64_decode_alloc(m->signature, strlen(m->signature), &n);
    char *tosign = sns_string_to_sign(m);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (sig && n > 0 && key && EVP_DigestVerifyInit(ctx, NULL, md, NULL, key) == 1 &&
        EVP_DigestVerify(ctx, sig, n, (const unsigned char *)tosign, strlen(tosign)) == 1)
        rc = 0;
    else
        snprintf(err, errlen, "signature does not verify");
    EVP_MD_CTX_free(ctx);
    free(tosign);
    free(sig);
    EVP_PKEY_free(key);
    X509_free(cert);
    return rc;
}

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

int sns_ses_outcome(const char *message_json, struct ses_outcome *out, char *err, size_t errlen)
{
    char jerr[160];
    memset(out, 0, sizeof(*out));
    json_t *o = jsonx_loads(message_json, strlen(message_json), jerr, sizeof(jerr));
    if (!o) {
        snprintf(err, errlen, "SES notification is not a JSON object: %s", jerr);
        return -EINVAL;
    }
    /* notifications say notificationType, event publishing says eventType */
    const char *kind = json_string_value(json_object_get(o, "notificationType"));
    if (!kind)
        kind = json_string_value(json_object_get(o, "eventType"));
    copy(out->kind, sizeof(out->kind), kind);
    copy(out->message_id, sizeof(out->message_id),
         json_string_value(json_object_get(json_object_get(o, "mail"), "messageId")));
    json_t *list = NULL;
    const char *field = "emailAddress";
    if (kind && strcmp(kind, "Bounce") == 0) {
        json_t *b = json_object_get(o, "bounce");
        copy(out->bounce_type, sizeof(out->bounce_type), json_string_value(json_object_get(b, "bounceType")));
        copy(out->bounce_subtype, sizeof(out->bounce_subtype), json_string_value(json_object_get(b, "bounceSubType")));
        list = json_object_get(b, "bouncedRecipients");
    } else if (kind && strcmp(kind, "Complaint") == 0) {
        json_t *c = json_object_get(o, "complaint");
        copy(out->feedback_type, sizeof(out->feedback_type),
             json_string_value(json_object_get(c, "complaintFeedbackType")));
        list = json_object_get(c, "complainedRecipients");
    } else if (kind && strcmp(kind, "Delivery") == 0) {
        list = json_object_get(json_object_get(o, "delivery"), "recipients");
        field = NULL;
    } else {
        snprintf(err, errlen, "unknown SES notification type");
        json_decref(o);
        return -EINVAL;
    }
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        if (out->n == 16)
            break;
        const char *a = field ? json_string_value(json_object_get(v, field)) : json_string_value(v);
        if (a)
            copy(out->addresses[out->n++], sizeof(out->addresses[0]), a);
    }
    json_decref(o);
    return 0;
}
