/* recipients — the coded recipient list parser (":Email_Rxers_Code:[...]").
 *
 * Input: a switches byte, then body text.  0x01 reads the text as HTML first
 * (recipients_html_to_text, as transform does for an HTML-only mail); the
 * other bits choose max (1 + bits 1..5).
 *
 * Checked: the cut range lies inside the text and the strip removes exactly
 * it; at most max valid addresses are kept, each one normalized (parsing it
 * again changes nothing), unique (case-insensitively) and no more than
 * n_valid_total; found = 0 leaves nothing cut; the allow-list check agrees
 * with address_match for a one-pattern list. */
#include "fuzz.h"

#include <strings.h>

#include "address.h"
#include "transform/recipients.h"

#define MARKER ":Email_Rxers_Code:"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

static void check_parse(const char *text, size_t len, size_t max)
{
    struct recipients r;
    recipients_parse(text, len, MARKER, max, &r);
    FUZZ_CHECK(r.cut_start <= r.cut_end && r.cut_end <= len);
    FUZZ_CHECK(r.found || (r.cut_start == r.cut_end && r.n_valid == 0 && r.n_entries == 0));
    FUZZ_CHECK(r.n_valid <= max && r.n_valid <= r.n_valid_total && r.n_valid_total <= max + 1);
    FUZZ_CHECK(r.n_invalid <= 1000 && r.n_entries <= 1000);
    for (size_t i = 0; i < r.n_valid; i++) {
        char again[ADDRESS_BUFSZ];
        FUZZ_CHECK(address_normalize(r.valid[i], again, sizeof(again)) == 0);
        FUZZ_CHECK(strcmp(again, r.valid[i]) == 0);
        for (size_t k = 0; k < i; k++)
            FUZZ_CHECK(strcasecmp(r.valid[k], r.valid[i]) != 0);
        const char *one[] = { r.valid[i], NULL };
        FUZZ_CHECK(recipients_allowed(one, r.valid[i]));
        FUZZ_CHECK(recipients_allowed(NULL, r.valid[i]));
    }
    char *stripped = recipients_strip(text, len, &r);
    size_t sl = strlen(stripped);
    /* the text up to the first NUL, less the cut */
    FUZZ_CHECK(sl <= len - (r.cut_end - r.cut_start));
    FUZZ_CHECK(r.cut_start > len || strncmp(stripped, text, r.cut_start < sl ? r.cut_start : sl) == 0);
    free(stripped);
    recipients_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned sw = fuzz_take_byte(&data, &size);
    size_t max = 1 + ((sw >> 1) & 0x1f);
    char *text = fuzz_strndup(data, size);
    if (sw & 0x01) {
        char *plain = recipients_html_to_text(text, size);
        check_parse(plain, strlen(plain), max);
        free(plain);
    } else {
        check_parse(text, size, max);
    }
    /* The text as an allow-list pattern against a fixed address. */
    const char *pat[] = { text, NULL };
    if (address_pattern_ok(text))
        FUZZ_CHECK(recipients_allowed(pat, "dev@example.com") == address_match(text, "dev@example.com"));
    free(text);
    return 0;
}
