/* ids — time-ordered ids (UUIDv7, RFC 9562) and hex helpers. */
#ifndef MF_IDS_H
#define MF_IDS_H
#include <stddef.h>
#include <stdint.h>

#define ID_LEN 36   /* "0190f3a2-...": 36 chars + NUL */

/* Writes a new UUIDv7 (lower-case, hyphenated) into out[ID_LEN + 1].
 * Monotonic within a process even when the clock stalls. */
char *id_new(char out[ID_LEN + 1]);
/* ms timestamp carried in a UUIDv7; -1 if s is not one. */
int64_t id_time_ms(const char *s);
int id_valid(const char *s);

void hex_encode(const unsigned char *in, size_t n, char *out); /* out: 2n+1 */
int  hex_decode(const char *in, unsigned char *out, size_t outlen); /* bytes or -1 */

#endif
