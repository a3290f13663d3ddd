/* sns — Amazon SNS HTTP(S) deliveries of SES notifications.
 *
 * Parses the POST body, checks the topic against an allow-list, the
 * SigningCertURL against AWS's host pattern (it is never fetched: the
 * operator configures the certificate file), and the signature
 * (SignatureVersion 1 = SHA1withRSA, 2 = SHA256withRSA) over the fields SNS
 * documents for each message type.  Refusing version 1 and stale timestamps
 * is the caller's policy (feedback_http.c: sns_allow_sha1, sns_max_age). */
#ifndef MF_SNS_H
#define MF_SNS_H
#include <stddef.h>
#include <stdint.h>

struct sns_msg {
    char *type;            /* Notification, SubscriptionConfirmation, UnsubscribeConfirmation */
    char *message_id, *topic_arn, *subject, *message, *timestamp;
    char *signature_version, *signature, *signing_cert_url;
    char *subscribe_url, *token;
};

int  sns_parse(const char *body, size_t len, struct sns_msg *out, char *err, size_t errlen);
void sns_msg_clear(struct sns_msg *m);
/* 1 if url is https://sns.<region>.amazonaws.com[.cn]/<path>.pem */
int  sns_cert_url_ok(const char *url);
/* 0 if the signature verifies with the PEM certificate at cert_path. */
int  sns_verify(const struct sns_msg *m, const char *cert_path, char *err, size_t errlen);
/* 0 if m's Timestamp is at most max_age_ms before now_ms (and not more than
 * a few minutes of clock skew after it); -EPERM with err otherwise.  A
 * signature never expires, so this is what stops a captured notification
 * from being replayed once the MessageId dedupe has forgotten it. */
int  sns_check_fresh(const struct sns_msg *m, int64_t now_ms, int64_t max_age_ms, char *err, size_t errlen);
/* The string SNS signs for m (malloc'd), exposed for tests. */
char *sns_string_to_sign(const struct sns_msg *m);

/* One recipient outcome from an SES notification (Message JSON). */
struct ses_outcome {
    char kind[16];          /* Bounce, Complaint, Delivery */
    char bounce_type[32], bounce_subtype[32], feedback_type[32];
    char message_id[256];
    char addresses[16][256];
    size_t n;
};
int sns_ses_outcome(const char *message_json, struct ses_outcome *out, char *err, size_t errlen);

#endif
