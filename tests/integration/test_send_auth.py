"""send relays through a real SMTP server that demands STARTTLS and AUTH:
mailfleet's own ingest (smtp-sink does not implement AUTH).  A right password
delivers (Delivery event; ingest records the authenticated user), a wrong one
never produces a Delivery."""
import json
import os
import subprocess

import harness
import test_send
from test_send import outbound


class SendAuthTest(harness.TestCase):
    # the plumbing of test_send.SendTest, without inheriting its tests
    def setUp(self):
        super().setUp()
        self.bus = "local:" + self.path("queue")
        self.metrics_port = harness.free_port()

    config = test_send.SendTest.config
    produce = test_send.SendTest.produce
    produce_outbound = test_send.SendTest.produce_outbound
    dump = test_send.SendTest.dump
    events = test_send.SendTest.events
    wait_events = test_send.SendTest.wait_events
    start_send = test_send.SendTest.start_send

    def start_ingest(self, password):
        self.smtp_port = harness.free_port()
        users = self.path("users")
        r = subprocess.run([harness.MAILFLEET, "users", "add", "relayuser", "-c", self.ingest_cfg(users)],
                           input="right-password\n", capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        cfg = self.config("smtp://127.0.0.1:%d" % self.smtp_port, extra=(
            "smtp_user = relayuser\nsmtp_password = %s\ntls_verify = false\n" % password)
            + self.ingest_section(users))
        cfg_text = open(cfg).read().replace("smtp_starttls = off\n", "smtp_starttls = required\n")
        cfg = self.write("mailfleet.ini", cfg_text)
        ing = self.start([harness.MAILFLEET, "ingest", "-c", cfg], "ingest")
        harness.wait_port(self.smtp_port, proc=ing.p)
        return cfg

    def ingest_section(self, users):
        return ("\n[ingest]\nlisten = 127.0.0.1:%d\nlisten_tls =\nmetrics_listen = 127.0.0.1:%d\n"
                "tls_cert = %s\ntls_key = %s\ntls_generate = true\nusers_file = %s\n"
                "\n[rule.relay]\nrecipients = example.com\naction = capture\nrequire_tls = true\n"
                "require_auth = true\n") % (self.smtp_port, harness.free_port(), self.path("cert.pem"),
                                           self.path("key.pem"), users)

    def ingest_cfg(self, users):
        return self.write("users.ini", "[ingest]\nusers_file = %s\n" % users)

    def test_starttls_and_auth_to_ingest(self):
        cfg = self.start_ingest("right-password")
        self.start_send(cfg)
        rec = outbound(["ops@example.com"])
        self.produce_outbound([rec])
        ev = self.wait_events(lambda evs: any(e["eventType"] == "Delivery" for e in evs), what="Delivery")
        d = [e for e in ev if e["eventType"] == "Delivery"][0]
        self.assertEqual(d["delivery"]["recipients"], ["ops@example.com"])
        self.assertRegex(d["delivery"]["smtpResponse"], r"^250 2\.0\.0 ")
        inbound = [json.loads(r["value"]) for r in self.dump("mailfleet.inbound")]
        self.assertEqual(len(inbound), 1)
        self.assertEqual(inbound[0]["envelope"]["auth_user"], "relayuser")
        self.assertTrue(inbound[0]["envelope"]["tls"])

    def test_wrong_password_is_never_a_delivery(self):
        cfg = self.start_ingest("wrong-password")
        p = self.start_send(cfg)
        self.produce_outbound([outbound(["ops@example.com"])])
        ev = self.wait_events(lambda evs: any(e["eventType"] in ("DeliveryDelay", "Bounce") for e in evs),
                              what="a failed attempt")
        self.assertFalse(any(e["eventType"] == "Delivery" for e in ev))
        self.assertEqual(self.dump("mailfleet.inbound"), [])
        self.assertNotIn("wrong-password", p.output())   # AUTH data never logged
