/* kafka_mock — librdkafka's mock cluster in a process of its own, so tests
 * talk to it over TCP on 127.0.0.1 with real clients (the bus, kcat).
 *
 *   kafka_mock [--brokers N] [--topic NAME[:PARTITIONS]]...
 *
 * Prints the bootstrap list ("127.0.0.1:P1,127.0.0.1:P2") as the first line
 * on stdout once the topics exist, then runs until SIGTERM/SIGINT.
 *
 * The mock in librdkafka 2.0.2 binds each broker to 127.0.0.1 on a port the
 * kernel picks; there is no way to ask for a fixed one, so callers read the
 * list from stdout instead of choosing a port. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define KAFKA_MOCK_MAX_TOPICS 64

struct kafka_mock_topic {
    char name[250];
    int partitions;
};

static volatile sig_atomic_t kafka_mock_stop;

static void kafka_mock_on_signal(int sig)
{
    (void)sig;
    kafka_mock_stop = 1;
}

static void kafka_mock_usage(void)
{
    fprintf(stderr, "usage: kafka_mock [--brokers N] [--topic NAME[:PARTITIONS]]...\n");
    exit(2);
}

static int kafka_mock_parse_int(const char *s, int min, int max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "kafka_mock: bad number '%s' (want %d..%d)\n", s, min, max);
        exit(2);
    }
    return (int)v;
}

static void kafka_mock_parse_topic(const char *arg, struct kafka_mock_topic *t)
{
    const char *colon = strrchr(arg, ':');
    size_t len = colon ? (size_t)(colon - arg) : strlen(arg);
    if (len == 0 || len >= sizeof t->name) {
        fprintf(stderr, "kafka_mock: bad topic '%s'\n", arg);
        exit(2);
    }
    memcpy(t->name, arg, len);
    t->name[len] = '\0';
    t->partitions = colon ? kafka_mock_parse_int(colon + 1, 1, 1000) : 1;
}

int main(int argc, char **argv)
{
    struct kafka_mock_topic topics[KAFKA_MOCK_MAX_TOPICS];
    int ntopics = 0, brokers = 1;
    char errstr[512];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--brokers") == 0 && i + 1 < argc) {
            brokers = kafka_mock_parse_int(argv[++i], 1, 16);
        } else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc) {
            if (ntopics == KAFKA_MOCK_MAX_TOPICS) {
                fprintf(stderr, "kafka_mock: at most %d topics\n", KAFKA_MOCK_MAX_TOPICS);
                return 2;
            }
            kafka_mock_parse_topic(argv[++i], &topics[ntopics++]);
        } else {
            kafka_mock_usage();
        }
    }

    struct sigaction sa = { .sa_handler = kafka_mock_on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    /* The cluster needs a handle for its bookkeeping; a producer that never
     * produces is the cheapest one. */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* No bootstrap.servers is expected here: keep that notice out of the log. */
    if (rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka_mock: log_level: %s\n", errstr);
        return 1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "kafka_mock: rd_kafka_new: %s\n", errstr);
        return 1;
    }
    conf = NULL;

    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "kafka_mock: cannot create a mock cluster of %d brokers\n", brokers);
        rd_kafka_destroy(rk);
        return 1;
    }

    /* Replicate on every broker (up to Kafka's usual 3) so acks=all means
     * what it says on a multi-broker mock. */
    int replication = brokers < 3 ? brokers : 3;
    for (int i = 0; i < ntopics; i++) {
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, topics[i].name, topics[i].partitions,
                                                           replication);
        if (e) {
            fprintf(stderr, "kafka_mock: topic %s: %s\n", topics[i].name, rd_kafka_err2str(e));
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return 1;
        }
    }

    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);

    while (!kafka_mock_stop)
        pause();

    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
