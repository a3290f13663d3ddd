/* sns — SNS deliveries: the POST body parsed, the certificate URL checked,
 * the signature verified, the timestamp judged, the SES notification read.
 *
 * Input: the POST body (JSON).  A certificate and its key are made once at
 * start (the certificate in the private directory, as sns_cert_file).
 *
 * Checked: a parsed message has its required fields; the signature as
 * sent verifies or not without crashing; for SignatureVersion 1 or 2 a
 * signature made here over sns_string_to_sign() verifies, and no longer
 * verifies once one byte of the Message changes; an SES outcome names at
 * most 16 addresses. */
#include "fuzz.h"
#include "feedback/sns.h"
#include "sns_signer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    sns_signer_init();
    return 0;
}

static void check_own_signature(struct sns_msg *m)
{
    char err[256];
    char *tosign = sns_string_to_sign(m);
    char *sig = sns_signer_sign(tosign, m->signature_version);
    free(tosign);
    free(m->signature);
    m->signature = sig;
    FUZZ_CHECK(sns_verify(m, sns_signer_cert, err, sizeof(err)) == 0);
    if (m->message[0]) {
        m->message[0] ^= 1;
        FUZZ_CHECK(sns_verify(m, sns_signer_cert, err, sizeof(err)) != 0);
        m->message[0] ^= 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    struct sns_msg m;
    if (sns_parse((const char *)data, size, &m, err, sizeof(err)) != 0)
        return 0;
    FUZZ_CHECK(m.type && m.message_id && m.topic_arn && m.message && m.timestamp);
    sns_cert_url_ok(m.signing_cert_url);
    sns_verify(&m, sns_signer_cert, err, sizeof(err));
    /* 2026-11-18, 1 day of age allowed: fixed, so a run repeats */
    sns_check_fresh(&m, 1795000000000LL, 86400000, err, sizeof(err));
    if (m.signature_version && (strcmp(m.signature_version, "1") == 0 || strcmp(m.signature_version, "2") == 0))
        check_own_signature(&m);
    struct ses_outcome o;
    if (sns_ses_outcome(m.message, &o, err, sizeof(err)) == 0)
        FUZZ_CHECK(o.n <= 16);
    sns_msg_clear(&m);
    return 0;
}
