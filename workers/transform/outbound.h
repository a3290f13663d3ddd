/* outbound — the mail transform sends: the original text (marker removed)
 * and a table of links, as multipart/alternative text + HTML; headers are
 * encoded and folded with GMime's RFC 2047 / folding helpers. */
#ifndef MF_OUTBOUND_H
#define MF_OUTBOUND_H
#include <stddef.h>
#include <stdint.h>

struct transform_link;
struct strbuf;

struct outbound_params {
    const char *sender;               /* "mailfleet <noreply@iot.localhost>" */
    const char *const *recipients;  size_t n_recipients;
    const char *subject;              /* UTF-8; CR/LF are removed here */
    const char *message_id;           /* without brackets */
    int64_t date_ms;
    const char *body_text;            /* UTF-8 */
    const struct transform_link *links; size_t n_links;
    const char *original_sender;      /* normalized address: Reply-To and a
                                         "Sent by" line; NULL = neither */
};

/* Builds the mail (CRLF line ends) into *mime (malloc'd).  0 or -EINVAL. */
int outbound_build(const struct outbound_params *p, char **mime, size_t *len, char *err,
                   size_t errlen);

/* The text and HTML alternatives alone (tests, fallback notices). */
void outbound_text(const struct outbound_params *p, struct strbuf *out);
void outbound_html(const struct outbound_params *p, struct strbuf *out);

/* "1.2 MB" style size; buf >= 32 bytes. */
const char *outbound_size(uint64_t n, char *buf, size_t len);

#endif
