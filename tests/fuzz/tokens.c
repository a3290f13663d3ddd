/* tokens — token decoding and verification (common/mail/tokens.c) and the
 * VERP tokens built on them (common/mail/verp.c).
 *
 * Input: text.  For each input:
 *   - verified as a token against two keys (rotation) at a fixed time, and
 *     checked as a VERP token for a fixed recipient;
 *   - decoded as base64url: a value that decodes encodes back to the same
 *     text (the decoder is strict: one spelling per value);
 *   - read as "kid:secret" key lines for tokens_new();
 *   - signed as a payload: the token verifies to the same bytes before its
 *     expiry, is EXPIRED after it, and is never OK with one byte changed;
 *     a VERP token for it as a recipient checks back to the same id. */
#include "fuzz.h"

#include "tokens.h"
#include "verp.h"

#define NOW_S 1795000000LL   /* 2026-11-18: fixed, so a run repeats */
#define VERP_ID "01935c5e-7a00-7000-8000-00000000f022"

static struct tokens *fuzz_tok;
static struct verp_keys *fuzz_verp;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    fuzz_init();
    const char *keys[] = { "new:fuzz-token-key-new-0123456789", "old:00112233445566778899aabbccddeeff" };
    if (!(fuzz_tok = tokens_new(keys, 2, err, sizeof(err))) || !(fuzz_verp = verp_keys_new(fuzz_tok)))
        panic("tokens fuzz set-up: %s", err);
    return 0;
}

static void verify_foreign(const char *s)
{
    char *payload = NULL;
    size_t len = 0;
    int64_t exp = 0;
    enum token_result r = tokens_verify(fuzz_tok, s, NOW_S, &payload, &len, &exp);
    FUZZ_CHECK(r == TOKEN_OK || r == TOKEN_BAD || r == TOKEN_EXPIRED || r == TOKEN_UNKNOWN_KEY);
    FUZZ_CHECK(r == TOKEN_OK || payload == NULL);
    free(payload);
    char id[VERP_ID_LEN + 1];
    if (verp_keys_check(fuzz_verp, "verp", s, "dev@example.com", id) == 0)
        FUZZ_CHECK(strlen(id) == VERP_ID_LEN);
}

static void b64url_round_trip(const char *s)
{
    unsigned char *out = NULL;
    size_t n = 0;
    if (b64url_decode(s, &out, &n) != 0)
        return;
    char *again = b64url_encode(out, n);
    FUZZ_CHECK(strcmp(again, s) == 0);
    free(again);
    free(out);
}

/* Up to four "kid:secret" lines as a key set; a good set signs and verifies. */
static void key_lines(const char *s)
{
    char *copy = strdup(s), *save = NULL, *keys[4];
    size_t n = 0;
    if (!copy)
        abort();
    for (char *l = strtok_r(copy, "\n", &save); l && n < 4; l = strtok_r(NULL, "\n", &save))
        keys[n++] = l;
    char err[256];
    struct tokens *t = n ? tokens_new((const char *const *)keys, n, err, sizeof(err)) : NULL;
    if (t) {
        FUZZ_CHECK(tokens_count(t) == n);
        char *tok = tokens_sign(t, "p", 1, 0);
        char *payload = NULL;
        size_t len;
        int64_t exp;
        FUZZ_CHECK(tokens_verify(t, tok, NOW_S, &payload, &len, &exp) == TOKEN_OK && len == 1);
        free(payload);
        free(tok);
        tokens_free(t);
    }
    free(copy);
}

static void sign_and_verify(const uint8_t *data, size_t size)
{
    char *tok = tokens_sign(fuzz_tok, data, size, NOW_S + 60);
    char *payload = NULL;
    size_t len = 0;
    int64_t exp = 0;
    FUZZ_CHECK(tokens_verify(fuzz_tok, tok, NOW_S, &payload, &len, &exp) == TOKEN_OK);
    FUZZ_CHECK(len == size && memcmp(payload, data, size) == 0 && payload[len] == '\0' && exp == NOW_S + 60);
    free(payload);
    payload = NULL;
    FUZZ_CHECK(tokens_verify(fuzz_tok, tok, NOW_S + 61, &payload, &len, &exp) == TOKEN_EXPIRED);
    FUZZ_CHECK(payload == NULL);
    /* any one byte changed: never OK */
    size_t tl = strlen(tok);
    size_t at = size ? data[0] % tl : 0;
    tok[at] = tok[at] == 'A' ? 'B' : 'A';
    FUZZ_CHECK(tokens_verify(fuzz_tok, tok, NOW_S, &payload, &len, &exp) != TOKEN_OK);
    free(payload);
    free(tok);
}

static void verp_round_trip(const char *rcpt)
{
    char token[VERP_TOKEN_LEN + 1], id[VERP_ID_LEN + 1];
    if (verp_keys_token(fuzz_verp, "verp", VERP_ID, rcpt, token) != 0)
        return;
    FUZZ_CHECK(strlen(token) == VERP_TOKEN_LEN);
    FUZZ_CHECK(verp_keys_check(fuzz_verp, "verp", token, rcpt, id) == 0 && strcmp(id, VERP_ID) == 0);
    FUZZ_CHECK(verp_keys_check(fuzz_verp, "unsub", token, rcpt, id) != 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_strndup(data, size);
    verify_foreign(s);
    b64url_round_trip(s);
    key_lines(s);
    sign_and_verify(data, size);
    verp_round_trip(s);
    free(s);
    return 0;
}
