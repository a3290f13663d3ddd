"""End to end in local mode (DESIGN.md §1, §6, §10): `mailfleet run` (every
worker in one process) on the durable local queue and file stores, driven by
`openssl s_client -starttls smtp` with AUTH LOGIN; delivery into the outbox
dir, or into Postfix's smtp-sink through send's SMTP transport.  Scenarios in
e2e_util.Scenarios; topics read with build/tools/mftool and `mailfleet dlq`,
every record validated against schemas/."""
import os

import harness
from e2e_util import CAPTURE, POISON_SECTIONS, SClient, Scenarios, Sink, parse, reference_message, text_of


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

    def test_delivered_mail_names_the_device_unless_the_rule_says_not(self):
        """Our From stays (the fleet's domain, for SPF/DKIM/DMARC alignment);
        Reply-To and a line in the text name the device that sent it.  A rule
        with show_sender = false names nobody."""
        quiet = "quiet@iot.localhost"
        self.fleet(sections="\n[rule.quiet]\nrecipients = %s\naction = capture\nshow_sender = false\n" % quiet)
        c = SClient(self, self.f.smtp_port)
        raw = reference_message(["shown@example.com"], os.urandom(64), subject="shown")
        self.assertRegex(c.submit("sensor7@devices.example", [CAPTURE], raw), r"^250 ")
        raw = reference_message(["hidden@example.com"], os.urandom(64), subject="hidden")
        self.assertRegex(SClient(self, self.f.smtp_port).submit("sensor7@devices.example", [quiet], raw), r"^250 ")
        self.wait_delivered(["shown@example.com"], "shown")
        self.wait_delivered(["hidden@example.com"], "hidden")

        shown = self.delivered("shown@example.com")[0]
        m = parse(shown)
        self.assertEqual(m["From"], "mailfleet <noreply@iot.localhost>")
        self.assertEqual(m["Reply-To"], "sensor7@devices.example")
        self.assertIn("Sent by sensor7@devices.example via mailfleet", text_of(shown))

        hidden = self.delivered("hidden@example.com")[0]
        m = parse(hidden)
        self.assertEqual(m["From"], "mailfleet <noreply@iot.localhost>")
        self.assertIsNone(m["Reply-To"])
        self.assertNotIn(b"sensor7@devices.example", hidden)

    def test_allowed_recipients_delivers_to_allowed_and_falls_back_for_the_rest(self):
        """A rule's allow-list: a stolen device password cannot mail anyone."""
        limited = "limited@iot.localhost"
        self.fleet(sections="\n[rule.limited]\nrecipients = %s\naction = capture\n"
                            "allowed_recipients = example.com\n" % limited)
        raw = reference_message(["ok@example.com", "victim@mail.example.net"], os.urandom(64), subject="limited")
        self.assertRegex(SClient(self, self.f.smtp_port).submit("sensor7@devices.example", [limited], raw), r"^250 ")
        self.wait_delivered(["ok@example.com"], "limited")
        fb = harness.wait_for(lambda: self.f.docs("mailfleet.fallback", "fallback"), timeout=30, what="fallback")
        self.assertEqual([f["reason"] for f in fb], ["recipient_not_allowed"])
        self.assertEqual(fb[0]["rule"], "limited")
        self.assertEqual(fb[0]["not_allowed"], ["victim@mail.example.net"])
        self.assertEqual(fb[0]["sent_to"], ["ok@example.com"])
        self.assertEqual(self.f.outbox_mail("victim@mail.example.net"), [])
