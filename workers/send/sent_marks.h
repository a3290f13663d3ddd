/* sent_marks — send's sent markers: "this recipient of this message was
 * delivered", written the moment the peer says 2xx and read before any
 * recipient is sent again.
 *
 * Each lane appends its markers to a journal file of its own (one write(2)
 * each, no fsync: a killed process loses none, the page cache keeps them),
 * and sent_journal_flush moves them into the kv db in one synced transaction
 * and empties the journal: one flush to the disk per batch instead of one
 * per recipient.  send flushes before every commit of a batch (so a retry
 * record never exists before the markers of its delivered recipients) and
 * before it plans the next batch; a lane's lookups also see its own markers
 * that a failed flush left out of the db.
 * sent_marks_open replays journals a killed process left behind.  A machine
 * crash loses the markers written since the last flush, and the batch they
 * belong to was not committed: its delivered recipients are sent once more
 * (the re-send gap of DESIGN §4.3 on a machine crash is the batch each lane
 * had in flight; on a killed process, nothing more than before).  Markers
 * of one lane reach the others' lookups at its flush. */
#ifndef MF_SEND_SENT_MARKS_H
#define MF_SEND_SENT_MARKS_H
#include <stddef.h>
#include <stdint.h>

struct sent_marks;
struct sent_journal;

/* The kv db in dir (created), with the journals dir/journal.* replayed into
 * it and removed. */
struct sent_marks *sent_marks_open(const char *dir, int64_t ttl_ms, char *err, size_t errlen);
void sent_marks_close(struct sent_marks *m);   /* accepts NULL */

/* Drops expired markers; returns how many. */
long sent_marks_expire(struct sent_marks *m);

/* A lane's journal (dir/journal.<lane>); one thread uses it. */
struct sent_journal *sent_journal_open(struct sent_marks *m, int lane, char *err, size_t errlen);
void sent_journal_close(struct sent_journal *j);   /* flushes first; accepts NULL */
/* Appends one marker.  <0 when the journal refused it: it is still kept
 * in memory and reaches the db at the flush, but a killed process before
 * then loses it. */
int sent_journal_add(struct sent_journal *j, const char *id, const char *rcpt, const char *response);
/* 1 = delivered (*response malloc'd, the peer's reply), 0 = not, <0 error.
 * Sees the db and what this journal holds that is not in the db yet. */
int sent_journal_get(struct sent_journal *j, const char *id, const char *rcpt, char **response);
/* Moves what was added since the last flush into the kv db, durably.
 * 0, or <0 with err set (the markers stay in the journal and in memory,
 * and the next flush tries again). */
int sent_journal_flush(struct sent_journal *j, char *err, size_t errlen);

#endif
