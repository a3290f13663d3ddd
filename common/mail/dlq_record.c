/* dlq_record — see dlq_record.h.  Kept apart from the loop so the DLQ
 * format can be tested and read on its own. */
#include "dlq_record.h"
#include "strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dlq_header_is_ours(const char *name)
{
    return strncmp(name, "mf.error.", 9) == 0 || strncmp(name, "mf.source.", 10) == 0 ||
           strcmp(name, "mf.attempts") == 0;
}

void dlq_record_init(struct dlq_record *d, const struct bus_record *orig, const char *dlq_topic,
                     const char *stage, const char *cls, const char *message, int attempts)
{
    enum { N_OURS = 7 };
    memset(d, 0, sizeof *d);
    snprintf(d->msg, sizeof d->msg, "%s", message ? message : "");
    for (char *p = d->msg; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    snprintf(d->part, sizeof d->part, "%d", (int)(orig->partition < 0 ? 0 : orig->partition));
    snprintf(d->off, sizeof d->off, "%lld", (long long)orig->offset);
    snprintf(d->att, sizeof d->att, "%d", attempts < 1 ? 1 : attempts);

    d->headers = xcalloc(orig->n_headers + N_OURS, sizeof *d->headers);
    size_t nh = 0;
    for (size_t i = 0; i < orig->n_headers; i++)
        if (!dlq_header_is_ours(orig->headers[i].name))
            d->headers[nh++] = orig->headers[i];
    const char *ours[N_OURS][2] = {
        { "mf.error.stage", stage && *stage ? stage : "unknown" },
        { "mf.error.class", cls && *cls ? cls : "internal" },
        { "mf.error.message", d->msg },
        { "mf.source.topic", orig->topic },
        { "mf.source.partition", d->part },
        { "mf.source.offset", d->off },
        { "mf.attempts", d->att },
    };
    for (int i = 0; i < N_OURS; i++)
        d->headers[nh++] = (struct bus_header){ ours[i][0], ours[i][1], strlen(ours[i][1]) };
    d->rec = (struct bus_record){
        .topic = dlq_topic, .key = orig->key, .key_len = orig->key_len, .value = orig->value,
        .value_len = orig->value_len, .headers = d->headers, .n_headers = nh, .partition = -1,
    };
}

void dlq_record_release(struct dlq_record *d)
{
    free(d->headers);
    d->headers = NULL;
}
