/* topics — the one place that names the topics between workers, their
 * consumer groups and the schema of each record family.  Code uses these
 * names; a topic string literal anywhere else is a bug.
 *
 * Settings per topic (partitions, compaction, retention) live in
 * ops/k8s/base/topics.yaml; the local queue compacts bus_compacted_topics. */
#ifndef MF_TOPICS_H
#define MF_TOPICS_H

/* Topics. */
#define TOPIC_INBOUND         "mailfleet.inbound"
#define TOPIC_INBOUND_DLQ     "mailfleet.inbound.dlq"
#define TOPIC_OUTBOUND        "mailfleet.outbound"
#define TOPIC_OUTBOUND_RETRY  "mailfleet.outbound.retry."   /* + tier delay, e.g. "5m" */
#define TOPIC_OUTBOUND_DLQ    "mailfleet.outbound.dlq"
#define TOPIC_FALLBACK        "mailfleet.fallback"
#define TOPIC_EVENTS          "mailfleet.events"
#define TOPIC_FEEDBACK        "mailfleet.feedback"
#define TOPIC_SUPPRESSION     "mailfleet.suppression"
#define TOPIC_REVOCATIONS     "mailfleet.revocations"
#define TOPIC_ALARMS          "mailfleet.alarms"
/* ingest's private local queue (its spool), never on Kafka. */
#define TOPIC_INGEST_SPOOL    "ingest.spool"
#define TOPIC_INGEST_DEDUPE   "ingest.dedupe"

/* Consumer groups. */
#define GROUP_TRANSFORM       "transform"
#define GROUP_SEND            "send"              /* default; tiers add ".retry.<delay>" */
#define GROUP_FEEDBACK        "feedback"
#define GROUP_FEEDBACK_EVENTS "feedback-events"
#define GROUP_MONITOR         "monitor"
#define GROUP_INGEST_FORWARD  "ingest-forwarder"
#define GROUP_DLQ_OPERATOR    "dlq-operator"
#define GROUP_BUS_READER      "mailfleet.bus.reader"   /* group-less reads on Kafka */

/* Record schemas (schemas/<name>.json). */
#define SCHEMA_INBOUND        "mailfleet.inbound.v1"
#define SCHEMA_OUTBOUND       "mailfleet.outbound.v1"
#define SCHEMA_FALLBACK       "mailfleet.fallback.v1"
#define SCHEMA_EVENT          "mailfleet.event.v1"
#define SCHEMA_FEEDBACK       "mailfleet.feedback.v1"
#define SCHEMA_SUPPRESSION    "mailfleet.suppression.v1"
#define SCHEMA_REVOCATION     "mailfleet.revocation.v1"
#define SCHEMA_ALARM          "mailfleet.alarm.v1"

/* Not a topic: the label the VERP key is derived under (common/verp.c).  It
 * lives here so every "mailfleet.*" name is in one file; changing one byte
 * changes the key and invalidates every bounce address already sent. */
#define VERP_KEY_LABEL        "mailfleet.verp.key.v1"

#endif
