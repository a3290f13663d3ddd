/* queue_dump — prints every record of a topic, group-less (bus_read_at), one
 * JSON object per line: {"partition":P,"offset":O,"key":"...","headers":{...},
 * "value":<the value, inlined when it is JSON, else a string>}.  Used by
 * ingest's integration tests to check "in the queue exactly once".
 *   queue_dump URI TOPIC */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "strbuf.h"

int main(int argc, char **argv)
{
    char err[512];
    if (argc != 3) {
        fprintf(stderr, "usage: queue_dump URI TOPIC\n");
        return 2;
    }
    struct bus_options opt = { .client_id = "queue-dump" };
    struct bus *b = bus_open(argv[1], &opt, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "queue_dump: %s\n", err);
        return 1;
    }
    struct bus_partition_stats st[64];
    int np = bus_topic_stats(b, argv[2], NULL, st, 64, err, sizeof(err));
    if (np < 0) {
        fprintf(stderr, "queue_dump: %s\n", err);
        bus_close(b);
        return 1;
    }
    struct strbuf out;
    strbuf_init(&out);
    for (int p = 0; p < np; p++)
        for (int64_t off = st[p].low; off < st[p].high; off++) {
            struct bus_record *r = NULL;
            int rc = bus_read_at(b, argv[2], st[p].partition, off, &r, 1000);
            if (rc < 0) {   /* an error, never a record that is not there */
                fprintf(stderr, "queue_dump: offset %lld: read failed (%d)\n", (long long)off, rc);
                exit(1);
            }
            if (rc == 0)
                continue;
            char *key = xstrndup(r->key ? r->key : "", r->key ? r->key_len : 0);
            char *val = xstrndup(r->value ? r->value : "", r->value ? r->value_len : 0);
            strbuf_reset(&out);
            strbuf_appendf(&out, "{\"partition\":%d,\"offset\":%lld,\"key\":", r->partition, (long long)off);
            strbuf_append_json_string(&out, key);
            strbuf_append(&out, ",\"headers\":{");
            for (size_t h = 0; h < r->n_headers; h++) {
                char *hv = xstrndup(r->headers[h].value, r->headers[h].value_len);
                strbuf_appendf(&out, "%s", h ? "," : "");
                strbuf_append_json_string(&out, r->headers[h].name);
                strbuf_append(&out, ":");
                strbuf_append_json_string(&out, hv);
                free(hv);
            }
            strbuf_append(&out, "},\"value\":");
            if (val[0] == '{')
                strbuf_append(&out, val);
            else
                strbuf_append_json_string(&out, val);
            strbuf_append(&out, "}\n");
            fwrite(out.data, 1, out.len, stdout);
            free(key);
            free(val);
            bus_record_free(r);
        }
    strbuf_free(&out);
    bus_close(b);
    return 0;
}
