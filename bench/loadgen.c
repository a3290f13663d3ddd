/* bench/loadgen — SMTP load for the end-to-end bench (libuv, one thread).
 *
 *   loadgen HOST:PORT [-s SESSIONS] [-m MESSAGES] [-r RATE] [-t TAG] [-o RECORDS] [-p]
 *   loadgen aliases MESSAGES
 *
 * SESSIONS connections (default 16) share MESSAGES mails (default 5000).  Each
 * mail is ~10 KB: a multipart/mixed whose text part carries a coded list of
 * three recipients (":Email_Rxers_Code:[a, b, c]:Email_Rxers_Code:") and whose
 * second part is a 4 KB base64 attachment (unique bytes per mail).  Mail n has
 * "Subject: bench TAG n".  No pipelining: MAIL, RCPT, DATA, body, one reply each.
 * RATE > 0 paces the start of mail n at t0 + n/RATE (open loop, as far as the
 * sessions allow); 0 (default) sends as fast as the server answers.
 *
 * The envelope recipient is the capture address alerts@iot.localhost, whose
 * coded list mailfleet expands.  A relay that cannot read the list (the Postfix
 * baseline of bench/e2e.sh) gets -p instead: mail n goes to bench-n@iot.localhost,
 * and `loadgen aliases MESSAGES` prints the Postfix virtual alias map that
 * expands bench-n to mail n's three coded recipients, for n < MESSAGES.  The
 * recipients depend on n alone (not on TAG), so one map serves every run.
 *
 * RECORDS (optional) gets one line per mail accepted: "n<TAB>t_250_us", the
 * wall-clock (CLOCK_REALTIME) microsecond at which the 250 after DATA arrived.
 * stdout gets one JSON line: messages, errors, t0_us (realtime of the first
 * connect), seconds, msgs_per_s, DATA->250 p50/p90/p99/max in ms. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#define LG_MAX_SESSIONS 1000
#define LG_ATT_BYTES 4096
#define LG_TARGET_SIZE 10240

enum lg_state { LG_BANNER, LG_EHLO, LG_MAIL, LG_RCPT, LG_DATA, LG_BODY, LG_QUIT, LG_DONE };

struct lg_session {
    uv_tcp_t tcp;
    uv_timer_t pace;
    enum lg_state state;
    char in[4096];
    size_t in_len;
    long msg;              /* mail in flight, -1 none */
    char *body;            /* the mail in flight, dot-terminated */
    size_t body_len;
    uint64_t t_sent_ns;    /* monotonic, when the body was handed to the socket */
    int closed;
};

static struct {
    struct sockaddr_in addr;
    int sessions;
    long messages, next, accepted, errors;
    double rate;
    int per_mail_rcpt;     /* -p */
    const char *tag;
    FILE *records;
    uint64_t t0_ns;
    int64_t t0_realtime_us;
    double *lat_ms;
    unsigned char att[LG_ATT_BYTES];
    int open_sessions;
} lg;

static int64_t lg_realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static size_t lg_base64(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0, line = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
        if ((line += 4) == 76) {
            out[o++] = '\r';
            out[o++] = '\n';
            line = 0;
        }
    }
    if (line) {
        out[o++] = '\r';
        out[o++] = '\n';
    }
    return o;
}

/* Mail n's three coded recipients, "a, b, c": three domains of 61 in rotation. */
static void lg_recipients(long n, char *out, size_t cap)
{
    int d = (int)((n * 3) % 61);
    snprintf(out, cap, "u%ld-a@d%d.example, u%ld-b@d%d.example, u%ld-c@d%d.example",
             n, d, n, d + 1, n, d + 2);
}

/* Mail n, ending in "\r\n.\r\n"; no line starts with '.'. */
static char *lg_build(long n, size_t *len)
{
    size_t cap = LG_TARGET_SIZE + 16384;
    char *b = malloc(cap);
    if (!b) {
        perror("malloc");
        exit(1);
    }
    unsigned char att[LG_ATT_BYTES];
    memcpy(att, lg.att, sizeof att);
    memcpy(att, &n, sizeof n);  /* unique content per mail */
    char b64[LG_ATT_BYTES * 2];
    size_t b64_len = lg_base64(att, sizeof att, b64);

    char rcpts[256];
    lg_recipients(n, rcpts, sizeof rcpts);
    char head[1024], mid[1024];
    int hl = snprintf(head, sizeof head,
                      "From: Sensor %ld <sensor%ld@devices.example>\r\n"
                      "To: alerts@iot.localhost\r\n"
                      "Subject: bench %s %ld\r\n"
                      "Message-ID: <%s.%ld@loadgen.bench>\r\n"
                      "MIME-Version: 1.0\r\n"
                      "Content-Type: multipart/mixed; boundary=\"=_lg_%ld\"\r\n"
                      "\r\n"
                      "--=_lg_%ld\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\n"
                      "\r\n",
                      n % 1000, n % 1000, lg.tag, n, lg.tag, n, n, n);
    int ml = snprintf(mid, sizeof mid,
                      ":Email_Rxers_Code:[%s]:Email_Rxers_Code:\r\n"
                      "--=_lg_%ld\r\n"
                      "Content-Type: application/octet-stream; name=\"diag-%ld.bin\"\r\n"
                      "Content-Disposition: attachment; filename=\"diag-%ld.bin\"\r\n"
                      "Content-Transfer-Encoding: base64\r\n"
                      "\r\n",
                      rcpts, n, n, n);
    char tail[64];
    int tl = snprintf(tail, sizeof tail, "--=_lg_%ld--\r\n.\r\n", n);
    size_t fixed = (size_t)hl + (size_t)ml + b64_len + (size_t)tl;
    static const char pad[] = "Sensor reading over threshold; diagnostic dump attached for review.\r\n";
    size_t o = 0;
    memcpy(b + o, head, (size_t)hl);
    o += (size_t)hl;
    while (fixed + (o - (size_t)hl) + sizeof pad - 1 <= LG_TARGET_SIZE) {
        memcpy(b + o, pad, sizeof pad - 1);
        o += sizeof pad - 1;
    }
    memcpy(b + o, mid, (size_t)ml);
    o += (size_t)ml;
    memcpy(b + o, b64, b64_len);
    o += b64_len;
    memcpy(b + o, tail, (size_t)tl);
    o += (size_t)tl;
    *len = o;
    return b;
}

static void lg_close_cb(uv_handle_t *h)
{
    (void)h;
}

static void lg_finish(struct lg_session *s)
{
    if (s->closed)
        return;
    s->closed = 1;
    s->state = LG_DONE;
    free(s->body);
    s->body = NULL;
    if (s->msg >= 0) {
        lg.errors++;
        s->msg = -1;
    }
    uv_close((uv_handle_t *)&s->tcp, lg_close_cb);
    uv_close((uv_handle_t *)&s->pace, lg_close_cb);
    lg.open_sessions--;
}

struct lg_write {
    uv_write_t req;
    char *owned;
};

static void lg_write_cb(uv_write_t *req, int status)
{
    struct lg_write *w = (struct lg_write *)req;
    struct lg_session *s = req->data;
    free(w->owned);
    free(w);
    if (status < 0) {
        fprintf(stderr, "loadgen: write: %s\n", uv_strerror(status));
        lg_finish(s);
    }
}

/* owned: freed when written; else the bytes must outlive the write. */
static void lg_send(struct lg_session *s, const char *data, size_t len, char *owned)
{
    struct lg_write *w = malloc(sizeof *w);
    w->owned = owned;
    w->req.data = s;
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &buf, 1, lg_write_cb);
    if (rc < 0) {
        free(owned);
        free(w);
        fprintf(stderr, "loadgen: write: %s\n", uv_strerror(rc));
        lg_finish(s);
    }
}

static void lg_cmd(struct lg_session *s, const char *fmt, long n)
{
    char *c = malloc(256);
    int l = snprintf(c, 256, fmt, n);
    lg_send(s, c, (size_t)l, c);
}

static void lg_start_mail(struct lg_session *s)
{
    if (lg.next >= lg.messages) {
        s->state = LG_QUIT;
        lg_send(s, "QUIT\r\n", 6, NULL);
        return;
    }
    s->msg = lg.next++;
    s->state = LG_MAIL;
    lg_cmd(s, "MAIL FROM:<sensor%ld@devices.example>\r\n", s->msg % 1000);
}

static void lg_pace_cb(uv_timer_t *t)
{
    lg_start_mail(t->data);
}

/* Next mail, now or when the pace allows. */
static void lg_next(struct lg_session *s)
{
    if (lg.rate > 0 && lg.next < lg.messages) {
        uint64_t due = lg.t0_ns + (uint64_t)((double)lg.next / lg.rate * 1e9);
        uint64_t now = uv_hrtime();
        if (due > now) {
            uv_timer_start(&s->pace, lg_pace_cb, (due - now + 999999) / 1000000, 0);
            return;
        }
    }
    lg_start_mail(s);
}

static void lg_reply(struct lg_session *s, int code, const char *line)
{
    switch (s->state) {
    case LG_BANNER:
        if (code != 220)
            goto bad;
        s->state = LG_EHLO;
        lg_send(s, "EHLO loadgen.bench\r\n", 20, NULL);
        return;
    case LG_EHLO:
        if (code != 250)
            goto bad;
        lg_next(s);
        return;
    case LG_MAIL:
        if (code != 250)
            goto bad;
        s->state = LG_RCPT;
        if (lg.per_mail_rcpt)
            lg_cmd(s, "RCPT TO:<bench-%ld@iot.localhost>\r\n", s->msg);
        else
            lg_send(s, "RCPT TO:<alerts@iot.localhost>\r\n", 32, NULL);
        return;
    case LG_RCPT:
        if (code != 250)
            goto bad;
        s->state = LG_DATA;
        lg_send(s, "DATA\r\n", 6, NULL);
        return;
    case LG_DATA:
        if (code != 354)
            goto bad;
        s->state = LG_BODY;
        s->body = lg_build(s->msg, &s->body_len);
        s->t_sent_ns = uv_hrtime();
        lg_send(s, s->body, s->body_len, s->body);
        s->body = NULL;
        return;
    case LG_BODY: {
        uint64_t now = uv_hrtime();
        if (code == 250) {
            if (lg.records)
                fprintf(lg.records, "%ld\t%lld\n", s->msg, (long long)lg_realtime_us());
            lg.lat_ms[lg.accepted++] = (double)(now - s->t_sent_ns) / 1e6;
        } else {
            lg.errors++;
            fprintf(stderr, "loadgen: mail %ld: %s\n", s->msg, line);
        }
        s->msg = -1;
        if (code >= 500 && code != 554 && code != 552) {
            lg_finish(s);
            return;
        }
        lg_next(s);
        return;
    }
    case LG_QUIT:
        lg_finish(s);
        return;
    default:
        return;
    }
bad:
    fprintf(stderr, "loadgen: unexpected reply in state %d: %s\n", (int)s->state, line);
    lg_finish(s);
}

static void lg_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct lg_session *s = h->data;
    (void)hint;
    *buf = uv_buf_init(s->in + s->in_len, (unsigned)(sizeof s->in - s->in_len));
}

static void lg_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct lg_session *s = st->data;
    (void)buf;
    if (nread < 0) {
        if (s->state != LG_QUIT && s->state != LG_DONE)
            fprintf(stderr, "loadgen: read: %s\n", uv_strerror((int)nread));
        lg_finish(s);
        return;
    }
    s->in_len += (size_t)nread;
    for (;;) {
        char *eol = memchr(s->in, '\n', s->in_len);
        if (!eol) {
            if (s->in_len == sizeof s->in) {
                fprintf(stderr, "loadgen: reply line too long\n");
                lg_finish(s);
            }
            return;
        }
        size_t ll = (size_t)(eol - s->in) + 1;
        char line[512];
        size_t cl = ll < sizeof line ? ll : sizeof line - 1;
        memcpy(line, s->in, cl);
        line[cl] = '\0';
        line[strcspn(line, "\r\n")] = '\0';
        memmove(s->in, s->in + ll, s->in_len - ll);
        s->in_len -= ll;
        if (strlen(line) >= 3 && line[3] != '-') {
            lg_reply(s, atoi(line), line);
            if (s->closed)
                return;
        }
    }
}

static void lg_connect_cb(uv_connect_t *req, int status)
{
    struct lg_session *s = req->data;
    free(req);
    if (status < 0) {
        fprintf(stderr, "loadgen: connect: %s\n", uv_strerror(status));
        lg_finish(s);
        return;
    }
    uv_tcp_nodelay(&s->tcp, 1);
    uv_read_start((uv_stream_t *)&s->tcp, lg_alloc, lg_read);
}

static int lg_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double lg_pct(double p)
{
    if (!lg.accepted)
        return 0;
    long i = (long)(p * (double)lg.accepted);
    if (i >= lg.accepted)
        i = lg.accepted - 1;
    return lg.lat_ms[i];
}

static void lg_usage(void)
{
    fprintf(stderr, "usage: loadgen HOST:PORT [-s SESSIONS] [-m MESSAGES] [-r RATE] [-t TAG] [-o RECORDS] [-p]\n"
                    "       loadgen aliases MESSAGES\n");
    exit(64);
}

/* The virtual alias map (Postfix texthash/postmap source) for -p. */
static int lg_print_aliases(const char *messages)
{
    char *end;
    long m = strtol(messages, &end, 10);
    if (*messages == '\0' || *end != '\0' || m < 1)
        lg_usage();
    for (long n = 0; n < m; n++) {
        char rcpts[256];
        lg_recipients(n, rcpts, sizeof rcpts);
        printf("bench-%ld@iot.localhost %s\n", n, rcpts);
    }
    return fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
}

int main(int argc, char **argv)
{
    lg.sessions = 16;
    lg.messages = 5000;
    lg.tag = "run";
    const char *records = NULL;
    if (argc < 2)
        lg_usage();
    if (strcmp(argv[1], "aliases") == 0) {
        if (argc != 3)
            lg_usage();
        return lg_print_aliases(argv[2]);
    }
    const char *target = argv[1];
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "s:m:r:t:o:p")) != -1) {
        switch (opt) {
        case 's': lg.sessions = atoi(optarg); break;
        case 'm': lg.messages = atol(optarg); break;
        case 'r': lg.rate = atof(optarg); break;
        case 't': lg.tag = optarg; break;
        case 'o': records = optarg; break;
        case 'p': lg.per_mail_rcpt = 1; break;
        default: lg_usage();
        }
    }
    if (lg.sessions < 1 || lg.sessions > LG_MAX_SESSIONS || lg.messages < 1 || strpbrk(lg.tag, " \r\n"))
        lg_usage();
    char host[256];
    const char *colon = strrchr(target, ':');
    if (!colon || (size_t)(colon - target) >= sizeof host)
        lg_usage();
    memcpy(host, target, (size_t)(colon - target));
    host[colon - target] = '\0';
    if (uv_ip4_addr(host, atoi(colon + 1), &lg.addr) != 0)
        lg_usage();
    if (records && !(lg.records = fopen(records, "w"))) {
        perror(records);
        return 1;
    }
    lg.lat_ms = calloc((size_t)lg.messages, sizeof *lg.lat_ms);
    srand((unsigned)time(NULL));
    for (size_t i = 0; i < sizeof lg.att; i++)
        lg.att[i] = (unsigned char)(rand() >> 7);

    uv_loop_t *loop = uv_default_loop();
    struct lg_session *ss = calloc((size_t)lg.sessions, sizeof *ss);
    lg.t0_ns = uv_hrtime();
    lg.t0_realtime_us = lg_realtime_us();
    for (int i = 0; i < lg.sessions; i++) {
        struct lg_session *s = &ss[i];
        s->msg = -1;
        uv_tcp_init(loop, &s->tcp);
        uv_timer_init(loop, &s->pace);
        s->tcp.data = s;
        s->pace.data = s;
        uv_connect_t *req = malloc(sizeof *req);
        req->data = s;
        lg.open_sessions++;
        int rc = uv_tcp_connect(req, &s->tcp, (const struct sockaddr *)&lg.addr, lg_connect_cb);
        if (rc < 0) {
            fprintf(stderr, "loadgen: connect: %s\n", uv_strerror(rc));
            free(req);
            lg_finish(s);
        }
    }
    uv_run(loop, UV_RUN_DEFAULT);
    double secs = (double)(uv_hrtime() - lg.t0_ns) / 1e9;
    if (lg.records && fclose(lg.records) != 0) {
        perror(records);
        return 1;
    }
    qsort(lg.lat_ms, (size_t)lg.accepted, sizeof *lg.lat_ms, lg_cmp);
    long unsent = lg.messages - lg.next;
    printf("{\"messages\":%ld,\"errors\":%ld,\"unsent\":%ld,\"t0_us\":%lld,\"seconds\":%.3f,\"msgs_per_s\":%.1f,"
           "\"p50_ms\":%.2f,\"p90_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f}\n",
           lg.accepted, lg.errors, unsent, (long long)lg.t0_realtime_us, secs,
           secs > 0 ? (double)lg.accepted / secs : 0, lg_pct(0.50), lg_pct(0.90), lg_pct(0.99),
           lg.accepted ? lg.lat_ms[lg.accepted - 1] : 0);
    uv_loop_close(loop);
    free(ss);
    free(lg.lat_ms);
    return lg.accepted == lg.messages ? 0 : 1;
}
