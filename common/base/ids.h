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
/* The directory an object named after id goes to within its day: id's last
 * two characters (random in a UUIDv7; [A-Za-z0-9] kept, others '_'), so a
 * day's objects spread over at most 256 directories, each made once: not
 * a directory per mail (an inode and a directory fsync each), nor one
 * directory for a whole day (millions of entries). */
void id_shard(const char *id, char out[3]);

/* Any hyphenated UUID (either case) <-> its 16 bytes; to_bytes returns 0 or
 * -EINVAL, from_bytes writes lower-case and returns out. */
int   id_to_bytes(const char *s, unsigned char out[16]);
char *id_from_bytes(const unsigned char in[16], char out[ID_LEN + 1]);

int  hex_digit(int c);   /* 0..15, or -1 */
void hex_encode(const unsigned char *in, size_t n, char *out); /* out: 2n+1 */
int  hex_decode(const char *in, unsigned char *out, size_t outlen); /* bytes or -1 */

#endif
