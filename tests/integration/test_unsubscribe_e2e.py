"""Unsubscribe end to end, the way a recipient does it: the List-Unsubscribe
header send wrote, used by mail (mailto, through ingest's unsubscribe rule) and
by RFC 8058 one-click POST (curl); both land on the suppression list.  And a
message to many unsubscribe addresses yields one feedback record each."""
import email
import glob
import json
import os
import re
import smtplib
import subprocess
import urllib.request

import harness

MFTOOL = os.path.join(harness.TOOLS, "mftool")
RULES = """
[rule.capture]
recipients = alerts@iot.localhost
action = capture
[rule.bounces]
recipients = bounce+*@iot.localhost
action = feedback
[rule.unsubscribe]
recipients = unsubscribe+*@iot.localhost
action = unsubscribe
[send]
list_unsubscribe = true
unsubscribe_domain = iot.localhost
[feedback]
api_token = unsub-test-token
"""


class UnsubscribeE2ETest(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.cfg = self.write("mf.ini", harness.fleet_config(self, extra=RULES))
        self.smtp = int(re.search(r"\[ingest\]\nlisten = 127.0.0.1:(\d+)", open(self.cfg).read()).group(1))
        self.p = self.start([harness.MAILFLEET, "run", "-c", self.cfg], "run")
        harness.wait_port(self.smtp, proc=self.p.p)
        harness.wait_port(self.ports["public"], proc=self.p.p)

    def suppressed(self, addr):
        req = urllib.request.Request("http://127.0.0.1:%d/v2/email/suppression/addresses/%s" % (self.ports["public"], addr),
                                     headers={"Authorization": "Bearer unsub-test-token"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.load(r)["SuppressedDestination"]["Reason"]
        except urllib.error.HTTPError:
            return None

    def delivered(self, rcpt):
        files = glob.glob(self.path("outbox", rcpt, "*.eml"))
        return email.message_from_binary_file(open(files[0], "rb")) if files else None

    def test_mailto_and_one_click_from_the_headers_send_wrote(self):
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=10) as s:
            s.sendmail("sensor@iot.localhost", ["alerts@iot.localhost"],
                       "Subject: alarm\r\n\r\n:Email_Rxers_Code:[reader@example.com, clicker@example.org]"
                       ":Email_Rxers_Code: disk full\r\n")
        m1 = harness.wait_for(lambda: self.delivered("reader@example.com"), what="delivery 1")
        m2 = harness.wait_for(lambda: self.delivered("clicker@example.org"), what="delivery 2")
        self.assertEqual(m1["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")
        mailto = re.search(r"<mailto:(unsubscribe\+[^>@]+@iot\.localhost)>", m1["List-Unsubscribe"].replace("\n", "")).group(1)
        url = re.search(r"<(http://[^>]+/u/[^>]+)>", m2["List-Unsubscribe"].replace("\n", "")).group(1)
        # by mail, from the address that got the message
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=10) as s:
            s.sendmail("reader@example.com", [mailto], "Subject: unsubscribe\r\n\r\nplease\r\n")
        # RFC 8058 one-click
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                            "--data", "List-Unsubscribe=One-Click", url], capture_output=True, text=True)
        self.assertEqual(r.stdout, "200")
        harness.wait_for(lambda: self.suppressed("reader@example.com") == "UNSUBSCRIBE", what="mailto unsubscribe")
        harness.wait_for(lambda: self.suppressed("clicker@example.org") == "UNSUBSCRIBE", what="one-click unsubscribe")

    def test_many_unsubscribe_addresses_one_record_each(self):
        rcpts = ["unsubscribe+tok%02d.x@iot.localhost" % i for i in range(80)]
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=10) as s:
            refused = s.sendmail("reader@example.com", rcpts, "Subject: unsubscribe\r\n\r\nplease\r\n")
        self.assertEqual(refused, {})
        bus = "local:" + self.path("queue")

        def count():
            out = subprocess.run([MFTOOL, "dump", bus, "mailfleet.feedback"], capture_output=True, text=True).stdout
            return [json.loads(l) for l in out.splitlines() if l.strip()]
        recs = harness.wait_for(lambda: (lambda r: r if len(r) >= 80 else None)(count()), what="80 records")
        self.assertEqual(sorted(r["unsubscribe"]["token"] for r in recs), sorted(a[12:-14] for a in rcpts))


K1 = "k1:" + "1a" * 32
K2 = "k2:" + "2b" * 32


class KeyRotationTest(harness.TestCase):
    """token_keys rotated from [k1] to [k2,k1]: the bounce and mailto
    unsubscribe addresses of mail sent under k1 still suppress; once k1 is
    removed they are refused like forgeries."""

    def setUp(self):
        super().setUp()
        self.text = harness.fleet_config(self, extra=RULES)
        self.smtp = int(re.search(r"\[ingest\]\nlisten = 127.0.0.1:(\d+)", self.text).group(1))
        self.p = None

    def run_with(self, keys):
        if self.p:
            self.assertEqual(self.p.stop(), 0)
        text = re.sub(r"^token_keys = .*$", "token_keys = " + ",".join(keys), self.text, flags=re.M)
        cfg = self.write("mf.ini", text)
        self.p = self.start([harness.MAILFLEET, "run", "-c", cfg], "run-" + "-".join(k[:2] for k in keys))
        harness.wait_port(self.smtp, proc=self.p.p)
        harness.wait_port(self.ports["public"], proc=self.p.p)

    suppressed = UnsubscribeE2ETest.suppressed
    delivered = UnsubscribeE2ETest.delivered

    def unverified(self):
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.ports["http"], timeout=5).read().decode()
        m = re.search(r"^mailfleet_feedback_unverified_total (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def send_under_k1(self, bouncer, reader):
        """Mail to both under [k1]: the VERP token of bouncer's copy (what send
        put in its return path) and the mailto address in reader's copy."""
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=10) as s:
            s.sendmail("sensor@iot.localhost", ["alerts@iot.localhost"],
                       "Subject: alarm\r\n\r\n:Email_Rxers_Code:[%s, %s]:Email_Rxers_Code: disk full\r\n"
                       % (bouncer, reader))
        harness.wait_for(lambda: self.delivered(bouncer), what="delivery to " + bouncer)
        m = harness.wait_for(lambda: self.delivered(reader), what="delivery to " + reader)
        mailto = re.search(r"<mailto:(unsubscribe\+[^>@]+@iot\.localhost)>",
                           m["List-Unsubscribe"].replace("\n", "")).group(1)
        # The outbox keeps no envelope: the return path's token is made as send
        # makes it (mftool links the same common/mail/verp code), checked
        # against the mailto token send wrote so both come from the same key.
        msgid = os.path.basename(glob.glob(self.path("outbox", reader, "*.eml"))[0])[:-4]
        self.assertEqual(subprocess.check_output([MFTOOL, "verp", "unsubscribe", K1, msgid, reader],
                                                 text=True).strip(), mailto[len("unsubscribe+"):].split("@")[0])
        bid = os.path.basename(glob.glob(self.path("outbox", bouncer, "*.eml"))[0])[:-4]
        verp = subprocess.check_output([MFTOOL, "verp", "verp", K1, bid, bouncer], text=True).strip()
        return verp, mailto

    def feedback_mail(self, verp, bouncer, reader, mailto):
        dsn = open(os.path.join(harness.ROOT, "tests", "data", "feedback", "dsn-permanent-511.eml")).read()
        dsn = dsn.replace("{{TOKEN}}", verp).replace("user@example.com", bouncer).replace("\n", "\r\n")
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=10) as s:
            s.sendmail("", ["bounce+%s@iot.localhost" % verp], dsn)
            s.sendmail(reader, [mailto], "Subject: unsubscribe\r\n\r\nplease\r\n")

    def test_rotation_keeps_old_addresses_until_the_key_goes(self):
        self.run_with([K1])
        verp, mailto = self.send_under_k1("bouncer@example.com", "reader@example.com")
        verp2, mailto2 = self.send_under_k1("bouncer2@example.com", "reader2@example.com")
        self.run_with([K2, K1])
        self.feedback_mail(verp, "bouncer@example.com", "reader@example.com", mailto)
        harness.wait_for(lambda: self.suppressed("bouncer@example.com") == "BOUNCE", what="bounce after rotation")
        harness.wait_for(lambda: self.suppressed("reader@example.com") == "UNSUBSCRIBE",
                         what="mailto unsubscribe after rotation")
        self.run_with([K2])
        self.feedback_mail(verp2, "bouncer2@example.com", "reader2@example.com", mailto2)
        harness.wait_for(lambda: self.unverified() >= 2, what="both refused without k1")
        self.assertIsNone(self.suppressed("bouncer2@example.com"))
        self.assertIsNone(self.suppressed("reader2@example.com"))
