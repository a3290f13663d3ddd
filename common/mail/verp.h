/* verp — compact per-recipient tokens for VERP return paths and mailto
 * unsubscribe addresses.  In common/ because send makes them and feedback
 * checks them (a DSN's Final-Recipient / an ARF Original-Rcpt-To / the
 * unsubscribe mail's envelope sender supplies the recipient).
 *
 * A tokens.h token of message id + recipient is ~150 characters, far over the
 * 64-character limit of an SMTP local part (RFC 5321 4.5.3.1.1).  This token
 * carries the message id in binary and a truncated HMAC binding it to the
 * recipient; the recipient itself comes back in the bounce (DSN
 * Final-Recipient / the unsubscribe mail's sender), so it need not be carried:
 *
 *   token = base32lower( id[16] || HMAC-SHA256(key, tag "|" id[16] "|" rcpt)[0..9] )
 *
 * 42 characters of [a-z2-7]: case-insensitive-safe, valid atext, and
 * "bounce+" + token is 49 characters.  An 80-bit MAC is ample against forged
 * bounces (an attacker must guess it per message and recipient). */
#ifndef MF_VERP_H
#define MF_VERP_H
#include <stddef.h>

struct tokens;

#define VERP_TOKEN_LEN 42
#define VERP_ID_LEN 36

/* tag separates uses ("verp", "unsub") so one token cannot be replayed as the
 * other.  id: a hyphenated UUID.  Returns 0, or -EINVAL when id is not a UUID
 * or rcpt is too long to be an address (none is made for one). */
int verp_token(const void *key, size_t keylen, const char *tag, const char *id, const char *rcpt,
               char out[VERP_TOKEN_LEN + 1]);

/* Checks token against rcpt (constant-time MAC compare) and writes the message
 * id (hyphenated, lower-case).  Returns 0 or -EINVAL (always for an rcpt too
 * long to be an address). */
int verp_check(const void *key, size_t keylen, const char *tag, const char *token, const char *rcpt,
               char id_out[VERP_ID_LEN + 1]);

/* The MAC keys, one derived from each key of [mailfleet] token_keys: the
 * tokens_sign_key() of a fixed label with expiry 0, which is deterministic, so
 * every process holding token_keys (send, feedback) derives the same keys and
 * there is no second secret to manage.  Tokens are made with the key derived
 * from the sign key (the first) and checked against every key, so rotating
 * token_keys (new key first, old one kept) leaves the VERP and mailto
 * unsubscribe addresses of mail sent before the rotation valid until the old
 * key is removed. */
struct verp_keys;
struct verp_keys *verp_keys_new(struct tokens *t);
void verp_keys_free(struct verp_keys *k);   /* accepts NULL */
/* verp_token() with the sign key's MAC key. */
int verp_keys_token(const struct verp_keys *k, const char *tag, const char *id, const char *rcpt,
                    char out[VERP_TOKEN_LEN + 1]);
/* verp_check() against each MAC key in turn: 0 when one verifies. */
int verp_keys_check(const struct verp_keys *k, const char *tag, const char *token, const char *rcpt,
                    char id_out[VERP_ID_LEN + 1]);

#endif
