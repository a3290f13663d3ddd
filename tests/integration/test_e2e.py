"""End to end in local mode (DESIGN.md §1, §6, §10): `mailfleet run` (every
worker in one process) on the durable local queue and file stores, driven by
`openssl s_client -starttls smtp` with AUTH LOGIN; delivery into the outbox
dir, or into Postfix's smtp-sink through send's SMTP transport.  Scenarios in
e2e_util.Scenarios; topics read with build/tools/mftool and `mailfleet dlq`,
every record validated against schemas/."""
import harness
from e2e_util import POISON_SECTIONS, Scenarios, Sink


class E2ELocalTest(Scenarios, harness.TestCase):
    MODE = "local"

    def test_reference_scenario_outbox(self):
        self.fleet()
        self.scenario_reference()

    def test_reference_scenario_smtp_sink(self):
        self.fleet(sink=Sink(self))
        self.scenario_reference()

    def test_no_coded_list_goes_to_fallback(self):
        self.fleet()
        self.scenario_no_coded_list()

    def test_suppressed_recipient(self):
        self.fleet()
        self.scenario_suppressed()

    def test_poison_message_dlq_alarm_replay(self):
        self.fleet(sections=POISON_SECTIONS)
        self.scenario_poison_dlq_alarm_replay()
