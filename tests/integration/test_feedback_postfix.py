"""Feedback end to end with a real Postfix (issue 6, first "Done when" item).

The whole fleet runs as one process (`mailfleet run`): ingest -> transform ->
send, which relays to a private Postfix on 127.0.0.1.  Postfix accepts the
mail for an unknown local user at SMTP time (empty local_recipient_maps) and
its local(8) delivery then fails with "unknown user", so Postfix itself writes
an RFC 3464 DSN to the VERP return path bounce+<token>@iot.localhost and relays
it ([relayhost]) back to mailfleet ingest.  Ingest's feedback rule publishes
feedback.v1, feedback verifies the VERP token against the DSN's
Final-Recipient and suppresses the address; the next mail to it yields a
Suppressed event on mailfleet.events and never reaches Postfix."""
import json
import os
import re
import smtplib
import subprocess
import time
import urllib.error
import urllib.request

import harness

MFTOOL = os.path.join(harness.TOOLS, "mftool")
DOMAIN = "example.test"          # Postfix's mydestination (two labels, as mailfleet requires)
BOUNCE_DOMAIN = "iot.localhost"  # [send] bounce_domain, routed back to ingest
API_TOKEN = "e2e-api-token-0123456789"


class FeedbackPostfixTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        os.chmod(self.dir, 0o755)

    # ---- the private Postfix -------------------------------------------------
    def start_postfix(self, ingest_port):
        """Accepts any local user at RCPT; local(8) bounces unknown users; every
        non-local destination (the bounce domain) goes to [127.0.0.1]:ingest."""
        d, port = harness.start_private_postfix(self, f"""myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = {DOMAIN}
mydestination = {DOMAIN}
# accept every local part at SMTP time: the failure comes later, as a DSN
local_recipient_maps =
local_transport = local
relayhost = [127.0.0.1]:{ingest_port}
default_transport = smtp
smtp_tls_security_level = none
smtp_connect_timeout = 5s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
""")
        self.pf = d
        return port

    def maillog(self):
        try:
            with open(self.pf + "/maillog", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # ---- mailfleet -----------------------------------------------------------
    def config(self, pf_port):
        text = harness.fleet_config(self, extra="")
        # fleet_config's [send] is the outbox; this test relays to Postfix
        text = text.replace("[send]\ntransport = outbox:%s\n" % self.path("outbox"), "")
        text = text.replace("[ingest]\n", "[ingest]\nmetrics_listen = 127.0.0.1:%d\nhostname = mailfleet.localhost\n"
                            % harness.free_port())
        text = text.replace("[mailfleet]\n", "[mailfleet]\nlog_level = info\n", 1)
        text += f"""[rule.capture]
recipients = alerts@iot.localhost
action = capture

[rule.bounces]
recipients = bounce+*@{BOUNCE_DOMAIN}
action = feedback

[transform]
sender = mailfleet <noreply@iot.localhost>
capture_addresses = alerts@iot.localhost

[send]
transport = smtp://127.0.0.1:{pf_port}
smtp_starttls = off
bounce_domain = {BOUNCE_DOMAIN}
connect_timeout = 2s
timeout = 10s
retry_tiers = 1s,2s

[feedback]
api_token = {API_TOKEN}
"""
        return self.write("mailfleet.ini", text)

    def submit(self, smtp_port, rcpt, subject):
        body = ("From: sensor-1@sensors.example\r\nTo: alerts@iot.localhost\r\nSubject: %s\r\n"
                "Message-ID: <%s@sensors.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
                ":Email_Rxers_Code:[%s]:Email_Rxers_Code:\r\nTemperature above threshold.\r\n"
                % (subject, subject.replace(" ", "-"), rcpt))
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as s:
            s.ehlo("sensor-1.sensors.example")
            s.sendmail("sensor-1@sensors.example", ["alerts@iot.localhost"], body.encode())

    def dump(self, topic):
        r = subprocess.run([MFTOOL, "dump", "local:" + self.path("queue"), topic],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            return []
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def events(self):
        return self.dump("mailfleet.events")

    def suppression(self, addr):
        req = urllib.request.Request("http://127.0.0.1:%d/v2/email/suppression/addresses/%s"
                                     % (self.ports["public"], addr),
                                     headers={"Authorization": "Bearer " + API_TOKEN})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())["SuppressedDestination"]
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def test_postfix_dsn_suppresses_and_next_mail_is_suppressed(self):
        ingest_port = harness.free_port()
        pf_port = self.start_postfix(ingest_port)
        cfg = self.config(pf_port)
        with open(cfg) as f:
            text = f.read()
        text = re.sub(r"(?m)^listen = 127\.0\.0\.1:\d+$", "listen = 127.0.0.1:%d" % ingest_port, text)
        with open(cfg, "w") as f:
            f.write(text)
        fleet = self.start([harness.MAILFLEET, "run", "-c", cfg], "run")
        harness.wait_port(ingest_port, proc=fleet.p)
        harness.wait_port(self.ports["public"], proc=fleet.p)

        victim = "nosuchuser@" + DOMAIN
        self.assertIsNone(self.suppression(victim))
        self.submit(ingest_port, victim, "first alarm")

        # send hands it to Postfix, which answers 250: a Delivery event ...
        def delivered():
            return [e for e in self.events() if e["eventType"] == "Delivery"]
        dl = harness.wait_for(delivered, timeout=30, interval=0.2, what="the Delivery event")
        self.assertEqual(dl[0]["delivery"]["recipients"], [victim])
        self.assertRegex(dl[0]["delivery"]["smtpResponse"], r"^250 ")
        # ... then local(8) fails, Postfix's bounce daemon writes the DSN and
        # relays it to ingest; feedback suppresses the address.
        try:
            sup = harness.wait_for(lambda: self.suppression(victim), timeout=40, interval=0.3,
                                   what="the suppression from the Postfix DSN")
        except TimeoutError:
            self.fail("no suppression; Postfix log:\n%s\nmailfleet log:\n%s"
                      % (self.maillog()[-4000:], fleet.output()[-4000:]))
        self.assertEqual(sup["EmailAddress"], victim)
        self.assertEqual(sup["Reason"], "BOUNCE")
        log = self.maillog()
        self.assertRegex(log, r"to=<%s>.*status=bounced \(unknown user" % re.escape(victim))
        self.assertRegex(log, r"sender non-delivery notification")
        self.assertRegex(log, r"to=<bounce\+[^@>]+@%s>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d.*status=sent"
                         % (re.escape(BOUNCE_DOMAIN), ingest_port))
        cli = json.loads(self.mailfleet("suppression", "get", victim, "-c", cfg).stdout)
        self.assertEqual((cli["reason"], cli["source"]), ("BOUNCE", "dsn"))

        # the feedback worker also records the Bounce (from the DSN)
        def dsn_bounce():
            return [e for e in self.events() if e["eventType"] == "Bounce"]
        b = harness.wait_for(dsn_bounce, timeout=10, interval=0.2, what="the Bounce event")
        self.assertEqual(b[0]["bounce"]["bounceType"], "Permanent")
        self.assertEqual([r["emailAddress"] for r in b[0]["bounce"]["bouncedRecipients"]], [victim])

        # send's suppression copy polls mailfleet.suppression every 200 ms
        time.sleep(1.0)
        sent_before = log.count("to=<%s>" % victim)
        self.submit(ingest_port, victim, "second alarm")

        def suppressed():
            return [e for e in self.events() if e["eventType"] == "Suppressed"]
        s = harness.wait_for(suppressed, timeout=30, interval=0.2, what="the Suppressed event")
        self.assertEqual(len(s), 1)
        rec = s[0]["suppressed"]["suppressedRecipients"][0]
        self.assertEqual((rec["emailAddress"], rec["reason"]), (victim, "BOUNCE"))
        self.assertEqual(s[0]["mail"]["commonHeaders"]["subject"], "second alarm")
        # nothing more reached Postfix for that address
        time.sleep(1.0)
        self.assertEqual(self.maillog().count("to=<%s>" % victim), sent_before)
        self.assertEqual(len(delivered()), 1)
        # every record on the way validates against its schema
        import jsonschema
        for name, topic in (("event", "mailfleet.events"), ("feedback", "mailfleet.feedback"),
                            ("suppression", "mailfleet.suppression")):
            with open(os.path.join(harness.ROOT, "schemas", name + ".v1.json")) as f:
                v = jsonschema.Draft202012Validator(json.load(f))
            recs = self.dump(topic)
            self.assertTrue(recs, topic)
            for r in recs:
                v.validate(r)
        (fb,) = self.dump("mailfleet.feedback")
        self.assertEqual((fb["kind"], fb["rule"], fb["envelope"]["mail_from"]), ("dsn", "bounces", ""))
        self.assertRegex(fb["envelope"]["rcpt_to"][0], r"^bounce\+[a-z0-9]+@%s$" % re.escape(BOUNCE_DOMAIN))
        self.assertEqual(fleet.stop(10), 0)
