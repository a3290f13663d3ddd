/* transform — the transform core: a raw mail in, the outbound mail and the
 * fallback records out, as the transform worker makes them.
 *
 * Input: a switches byte, then the mail (written to the private directory:
 * transform_message() reads a file).  Attachments go to a file store in the
 * private directory, emptied after every input; links are gateway links
 * signed with a fixed key.
 *
 * Switches: 0x01 max_recipients 3 (else 50); 0x02 default recipients when
 * there is no marker; 0x04 the rule has an allow-list; 0x08 show the sender;
 * 0x10 small limits (parts, depth, header, decoded bytes, body).
 *
 * Checked: an outbound mail is only made for 1..max_recipients recipients,
 * none outside the allow-list, each named whole in its header, with CRLF
 * line ends only; a blocked
 * attachment has no key and no link, a linked one is in the store; every
 * fallback record the result calls for serializes and parses back as a
 * fallback.v1 record. */
#include "fuzz.h"

#include <jansson.h>

#include "fallback_record.h"
#include "jsonx.h"
#include "store.h"
#include "strbuf.h"
#include "tokens.h"
#include "topics.h"
#include "transform/recipients.h"
#include "transform/transform.h"

static struct store *fuzz_store;
static struct tokens *fuzz_tokens;
static char fuzz_attachments[512];

#define INBOUND_ID "01935c5e-7a00-7000-8000-00000000f022"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256], uri[400];
    fuzz_init();
    snprintf(uri, sizeof(uri), "file:%s/store", fuzz_dir());
    snprintf(fuzz_attachments, sizeof(fuzz_attachments), "%s/store/attachments", fuzz_dir());
    const char *keys[] = { "fuzz:fuzz-transform-key-0123456789" };
    if (!(fuzz_store = store_open(uri, NULL, err, sizeof(err))) ||
        !(fuzz_tokens = tokens_new(keys, 1, err, sizeof(err))))
        panic("transform fuzz set-up: %s", err);
    return 0;
}

static struct transform *new_transform(unsigned sw)
{
    static const char *const defaults[] = { "ops@example.com", NULL };
    static const char *const blocked[] = { "exe", "scr", "bat", "js", NULL };
    int small = (sw & 0x10) != 0;
    struct transform_settings s = {
        .marker = ":Email_Rxers_Code:",
        .max_recipients = sw & 0x01 ? 3 : 50,
        .default_recipients = sw & 0x02 ? defaults : NULL,
        .max_depth = small ? 4 : 20,
        .max_parts = small ? 8 : 200,
        .max_header_bytes = small ? 512 : 64 * 1024,
        .max_decoded_bytes = small ? 1024 : 1024 * 1024,
        .max_decoded_ratio = 4,
        .max_body_bytes = small ? 256 : 64 * 1024,
        .blocked_extensions = blocked,
        .sender = "mailfleet <noreply@iot.localhost>",
        .link_mode = "gateway",
        .links_url = "http://127.0.0.1:8025/a/",
        .link_expiry_s = 36 * 3600,
        .tmp_dir = fuzz_dir(),
    };
    char err[256];
    struct transform *t = transform_new(&s, fuzz_store, fuzz_tokens, err, sizeof(err));
    if (!t)
        panic("transform_new: %s", err);
    return t;
}

/* One transform per combination of the switches that shape it, made on
 * first use and kept (transform_new parses the sender with GMime). */
static struct transform *get_transform(unsigned sw)
{
    static struct transform *made[32];
    sw &= 0x13;
    if (!made[sw])
        made[sw] = new_transform(sw);
    return made[sw];
}

static void check_outbound(const struct transform_result *r, unsigned sw, const char *const *allowed)
{
    if (!r->mime)
        return;
    FUZZ_CHECK(r->n_recipients >= 1 && r->n_recipients <= (sw & 0x01 ? 3u : 50u));
    FUZZ_CHECK(!(r->reasons & (TR_TOO_MANY | TR_LIMITS | TR_UNPARSEABLE)));
    /* each recipient whole in the header block (a fold never splits one) */
    const char *body = memmem(r->mime, r->mime_len, "\r\n\r\n", 4);
    FUZZ_CHECK(body != NULL);
    size_t hl = (size_t)(body - r->mime);
    for (size_t i = 0; i < r->n_recipients; i++) {
        FUZZ_CHECK(recipients_allowed(allowed, r->recipients[i]));
        FUZZ_CHECK(memmem(r->mime, hl, r->recipients[i], strlen(r->recipients[i])) != NULL);
    }
    for (size_t i = 0; i < r->mime_len; i++) {
        if (r->mime[i] == '\n')
            FUZZ_CHECK(i > 0 && r->mime[i - 1] == '\r');
        if (r->mime[i] == '\r')
            FUZZ_CHECK(i + 1 < r->mime_len && r->mime[i + 1] == '\n');
    }
}

static void check_links(const struct transform_result *r)
{
    char err[256];
    for (size_t i = 0; i < r->n_links; i++) {
        const struct transform_link *l = &r->links[i];
        FUZZ_CHECK(l->name != NULL);
        if (l->blocked) {
            FUZZ_CHECK(!l->key && !l->url);
        } else if (l->url) {
            struct store_object so;
            FUZZ_CHECK(l->key && store_key_valid(l->key));
            FUZZ_CHECK(store_head(fuzz_store, l->key, &so, err, sizeof(err)) == 0 && so.size == l->size);
        }
    }
}

/* The fallback.v1 records the worker would publish (transform.c), each
 * serialized and read back as a consumer reads it. */
static void check_fallbacks(const struct transform_result *r)
{
    char err[256];
    for (unsigned bit = 1; bit <= TR_LAST; bit <<= 1) {
        if (!(r->reasons & bit))
            continue;
        const char *reason = transform_reason_name(bit, r->n_invalid);
        FUZZ_CHECK(reason != NULL);
        struct fallback_fields ff = {
            .id = INBOUND_ID, .inbound_id = INBOUND_ID, .created_ms = 1795000000000LL, .reason = reason,
            .details = r->detail, .rule = "capture", .subject = r->subject, .sender = "device@example.com",
            .found = (const char *const *)r->found, .n_found = r->n_found,
            .invalid = (const char *const *)r->invalid, .n_invalid = r->n_invalid,
            .not_allowed = (const char *const *)r->not_allowed, .n_not_allowed = r->n_not_allowed,
            .sent_to = (const char *const *)r->recipients, .n_sent_to = r->n_recipients,
        };
        json_t *o = fallback_record_new(&ff);
        size_t len;
        char *v = jsonx_dumps(o, &len);
        json_t *back = jsonx_record_parse(v, len, SCHEMA_FALLBACK, err, sizeof(err));
        FUZZ_CHECK(back != NULL);
        json_decref(back);
        free(v);
        json_decref(o);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const allowed[] = { "example.com", "*.example.org", "ops@example.net", NULL };
    unsigned sw = fuzz_take_byte(&data, &size);
    char path[512], err[256];
    fuzz_write_file("mail.eml", data, size, path, sizeof(path));
    struct transform *t = get_transform(sw);
    struct inbound_info in = { INBOUND_ID, "device@example.com", 1795000000000LL,
                               sw & 0x04 ? allowed : NULL, (sw & 0x08) != 0 };
    struct transform_result r;
    int rc = transform_message(t, path, &in, &r, err, sizeof(err));
    if (rc == 0) {
        check_outbound(&r, sw, in.allowed_recipients);
        check_links(&r);
        check_fallbacks(&r);
        struct strbuf j;
        strbuf_init(&j);
        transform_result_json(&r, &j);
        strbuf_free(&j);
    }
    transform_result_free(&r);
    fuzz_rm_tree(fuzz_attachments);
    return 0;
}
