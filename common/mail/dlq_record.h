/* dlq_record — the dead-letter copy of a consumed record, one builder for
 * every worker (schemas/README.md, "Dead-letter records").
 *
 * The copy keeps the original key, value and ALL original headers, in
 * order, except earlier mf.error.*, mf.source.* and mf.attempts ones, which
 * are replaced (a record dead-lettered, replayed and dead-lettered again
 * carries one set, the newest).  Then come mf.error.stage, mf.error.class,
 * mf.error.message (one line, at most 1024 bytes, CR/LF made spaces),
 * mf.source.topic, mf.source.partition, mf.source.offset and mf.attempts. */
#ifndef MF_DLQ_RECORD_H
#define MF_DLQ_RECORD_H
#include "bus.h"

struct dlq_record {
    struct bus_record rec;          /* what to produce; see the borrowing note */
    struct bus_header *headers;     /* owned */
    char part[16], off[24], att[16];
    char msg[1025];
};

/* Fills d->rec for dlq_topic.  Key, value and the kept header names and
 * values are borrowed from orig, which must outlive d->rec's use; the rest
 * lives in d.  Release with dlq_record_release. */
void dlq_record_init(struct dlq_record *d, const struct bus_record *orig, const char *dlq_topic,
                     const char *stage, const char *cls, const char *message, int attempts);
void dlq_record_release(struct dlq_record *d);

/* 1 if name is one of the headers dlq_record_init replaces. */
int dlq_header_is_ours(const char *name);

#endif
