"""End to end in Kafka mode: a real 1-node Apache Kafka cluster holding every
topic of ops/k8s/base/topics.yaml (and short retry tiers), ONE PROCESS PER
WORKER (`mailfleet ingest|transform|send|links|feedback|monitor -c FILE`, each
with its own metrics port; ingest spools locally first and forwards), driven
by `openssl s_client -starttls smtp` with AUTH LOGIN, delivering into
Postfix's smtp-sink.  Topics are read back with kcat, an independent Kafka
client, and validated against schemas/."""
import harness
from e2e_util import POISON_SECTIONS, Scenarios, Sink


class E2EKafkaTest(Scenarios, harness.TestCase):
    MODE = "kafka"
    PER_WORKER = True
    DELIVERY_TIMEOUT = 90

    def test_reference_scenario(self):
        self.fleet(sink=Sink(self))
        self.scenario_reference()

    def test_no_coded_list_goes_to_fallback(self):
        self.fleet(sink=Sink(self))
        self.scenario_no_coded_list()

    def test_suppressed_recipient(self):
        self.fleet(sink=Sink(self))
        self.scenario_suppressed()

    def test_poison_message_dlq_alarm_replay(self):
        self.fleet(sink=Sink(self), sections=POISON_SECTIONS)
        self.scenario_poison_dlq_alarm_replay()
