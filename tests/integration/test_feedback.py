"""feedback worker: one-click unsubscribe (curl), DSN/ARF reports with real
and forged VERP tokens, SNS notifications, the SES-shaped suppression API and
the CLI.  The worker runs alone (`mailfleet feedback`); feedback.v1 records
that ingest would write are produced with build/tools/mftool through the same
bus code, and raw reports are put into the incoming store the same way."""
import hashlib
import http.server
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request

import harness

DATA = os.path.join(harness.ROOT, "tests", "data", "feedback")
MFTOOL = os.path.join(harness.TOOLS, "mftool")
KEYS = "k1:" + "ab" * 32


class FeedbackTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.pub = harness.free_port()
        self.met = harness.free_port()
        self.bus = "local:" + self.path("queue")
        self.store = "file:" + self.path("incoming")
        self.cfg = self.write("mf.ini", f"""[mailfleet]
bus = {self.bus}
store_incoming = {self.store}
state_dir = {self.path("state")}
token_keys = {KEYS}
[feedback]
metrics_listen = 127.0.0.1:{self.met}
public_listen = 127.0.0.1:{self.pub}
api_token = test-api-token
sns_topic_arns = arn:aws:sns:us-east-1:123456789012:ses-feedback
sns_allow_unsigned = true
""")
        self.proc = self.start([harness.MAILFLEET, "feedback", "-c", self.cfg], "feedback")
        harness.wait_port(self.pub, proc=self.proc.p)
        harness.wait_for(lambda: self.http("GET", "http://127.0.0.1:%d/readyz" % self.met)[0] == 200,
                         what="feedback ready")

    # -- helpers --
    def http(self, method, url, body=None, headers=None):
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def api(self, method, path, body=None, token="test-api-token"):
        h = {"Authorization": "Bearer " + token} if token else {}
        if body is not None:
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        return self.http(method, "http://127.0.0.1:%d/v2/email/suppression/addresses%s" % (self.pub, path), body, h)

    def sign(self, payload, keys=KEYS):
        return subprocess.check_output([MFTOOL, "sign", keys, payload], text=True).strip()

    def verp(self, msgid, rcpt, tag="verp"):
        return subprocess.check_output([MFTOOL, "verp", tag, KEYS, msgid, rcpt], text=True).strip()

    def suppressed(self, addr):
        st, body = self.api("GET", "/" + addr)
        return json.loads(body)["SuppressedDestination"]["Reason"] if st == 200 else None

    def metric(self, name):
        _, text = self.http("GET", "http://127.0.0.1:%d/metrics" % self.met)
        m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
        return float(m.group(1)) if m else 0.0

    def put_report(self, sample, token, rcpt_token=True, n=[0]):
        n[0] += 1
        raw = open(os.path.join(DATA, sample + ".eml"), "rb").read().replace(b"{{TOKEN}}", token.encode())
        path = self.write("r%d.eml" % n[0], raw.decode())
        key = "feedback/test/r%d-%d.eml" % (os.getpid(), n[0])
        subprocess.check_call([MFTOOL, "store-put", self.store, key, path], stdout=subprocess.DEVNULL)
        rid = "0190f3a2-0000-7000-8000-%012d" % n[0]
        rec = {"schema": "mailfleet.feedback.v1", "id": rid, "kind": "dsn",
               "received_at": "2026-11-26T10:00:00.000Z",
               "envelope": {"mail_from": "", "client_ip": "127.0.0.1",
                            "rcpt_to": ["bounce+%s@iot.localhost" % (token if rcpt_token else "x.y")]},
               "store": {"key": key, "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}}
        vpath = self.write("v%d.json" % n[0], json.dumps(rec))
        subprocess.check_call([MFTOOL, "put", self.bus, "mailfleet.feedback", rid, vpath])

    # -- one-click unsubscribe (RFC 8058) --
    def test_get_never_unsubscribes_post_does(self):
        tok = self.sign("u|reader@example.com|")
        url = "http://127.0.0.1:%d/u/%s" % (self.pub, tok)
        st, page = self.http("GET", url)
        self.assertEqual(st, 200)
        self.assertIn('method="post"', page)
        self.assertIn("List-Unsubscribe", page)
        time.sleep(1.0)
        self.assertIsNone(self.suppressed("reader@example.com"))
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                            "-H", "Content-Type: application/x-www-form-urlencoded",
                            "--data", "List-Unsubscribe=One-Click", url], capture_output=True, text=True)
        self.assertEqual(r.stdout, "200")
        harness.wait_for(lambda: self.suppressed("reader@example.com") == "UNSUBSCRIBE", what="unsubscribe")
        cli = self.mailfleet("suppression", "get", "reader@example.com", "-c", self.cfg)
        rec = json.loads(cli.stdout)
        self.assertEqual(rec["reason"], "UNSUBSCRIBE")
        self.assertEqual(rec["source"], "unsubscribe")

    def test_per_list_unsubscribe(self):
        tok = self.sign("u|lister@example.com|alerts")
        st, _ = self.http("POST", "http://127.0.0.1:%d/u/%s" % (self.pub, tok), b"List-Unsubscribe=One-Click")
        self.assertEqual(st, 200)
        def listed():
            r = self.mailfleet("suppression", "get", "lister@example.com", "--list", "alerts", "-c", self.cfg, check=False)
            return r.returncode == 0 and json.loads(r.stdout)["list"] == "alerts"
        harness.wait_for(listed, what="per-list entry")
        self.assertIsNone(self.suppressed("lister@example.com"))   # not account-wide

    def test_forged_unsubscribe_tokens(self):
        good = self.sign("u|victim@example.com|")
        other = self.sign("u|victim@example.com|", keys="k1:" + "cd" * 32)
        tampered = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
        for tok in (other, tampered, "garbage", good.replace(".", "")):
            st, _ = self.http("POST", "http://127.0.0.1:%d/u/%s" % (self.pub, tok), b"List-Unsubscribe=One-Click")
            self.assertEqual(st, 403, tok)
        st, _ = self.http("POST", "http://127.0.0.1:%d/u/%s" % (self.pub, good), b"something=else")
        self.assertEqual(st, 400)
        time.sleep(1.0)
        self.assertIsNone(self.suppressed("victim@example.com"))

    def test_mailto_unsubscribe(self):
        tok = self.verp("0190f3a2-0000-7000-8000-000000000014", "mailer@example.com", tag="unsubscribe")
        for n, (sender, t) in enumerate((("intruder@example.com", tok), ("mailer@example.com", tok))):
            rid = "0190f3a2-0000-7000-8000-0000000009%02d" % n
            rec = {"schema": "mailfleet.feedback.v1", "id": rid, "kind": "unsubscribe",
                   "received_at": "2026-11-26T10:00:00.000Z",
                   "envelope": {"mail_from": sender, "client_ip": "127.0.0.1",
                                "rcpt_to": ["unsubscribe+%s@iot.localhost" % t]},
                   "unsubscribe": {"method": "mailto", "token": t}}
            subprocess.check_call([MFTOOL, "put", self.bus, "mailfleet.feedback", rid,
                                   self.write("u%d.json" % n, json.dumps(rec))])
        # the token is bound to the address it was sent to: only that one unsubscribes
        harness.wait_for(lambda: self.suppressed("mailer@example.com") == "UNSUBSCRIBE", what="mailto unsubscribe")
        self.assertIsNone(self.suppressed("intruder@example.com"))
        self.assertGreaterEqual(self.metric("mailfleet_feedback_unverified_total"), 1)

    # -- DSN / ARF --
    def test_dsn_permanent_suppresses_token_recipient(self):
        tok = self.verp("0190f3a2-0000-7000-8000-000000000001", "user@example.com")
        self.put_report("dsn-permanent-511", tok)
        harness.wait_for(lambda: self.suppressed("user@example.com") == "BOUNCE", what="bounce suppression")

    def test_forged_bounces_change_nothing(self):
        # a valid token for someone else: the DSN names user@example.com only
        tok = self.verp("0190f3a2-0000-7000-8000-000000000009", "someone-else@example.com")
        self.put_report("dsn-permanent-511", tok)
        # no valid token at all
        self.put_report("dsn-mailbox-full-522", "a" * 42, rcpt_token=True)
        harness.wait_for(lambda: self.metric("mailfleet_feedback_unverified_total") >= 2, what="both rejected")
        self.assertIsNone(self.suppressed("user@example.com"))
        self.assertIsNone(self.suppressed("someone-else@example.com"))
        self.assertIsNone(self.suppressed("full@example.com"))

    def test_transient_suppresses_after_three_and_dedupes(self):
        toks = [self.verp("0190f3a2-0000-7000-8000-00000000010%d" % i, "full@example.com") for i in range(3)]
        self.put_report("dsn-mailbox-full-522", toks[0])
        self.put_report("dsn-mailbox-full-522", toks[0])   # duplicate: counts once
        self.put_report("dsn-mailbox-full-522", toks[1])
        harness.wait_for(lambda: self.metric("mailfleet_feedback_bounces_total") >= 2, what="two bounces")
        time.sleep(0.5)
        self.assertEqual(self.metric("mailfleet_feedback_bounces_total"), 2)
        self.assertIsNone(self.suppressed("full@example.com"))
        self.put_report("dsn-mailbox-full-522", toks[2])
        harness.wait_for(lambda: self.suppressed("full@example.com") == "BOUNCE", what="third transient")

    def test_arf_abuse_and_not_spam(self):
        tok = self.verp("0190f3a2-0000-7000-8000-000000000002", "user@example.com")
        self.put_report("arf-not-spam", tok, rcpt_token=False)
        harness.wait_for(lambda: self.metric("mailfleet_feedback_complaints_total") >= 1, what="not-spam seen")
        self.assertIsNone(self.suppressed("user@example.com"))
        tok2 = self.verp("0190f3a2-0000-7000-8000-000000000003", "user@example.com")
        self.put_report("arf-abuse", tok2, rcpt_token=False)   # token from Return-Path
        harness.wait_for(lambda: self.suppressed("user@example.com") == "COMPLAINT", what="complaint")

    def test_undetermined_goes_to_review(self):
        tok = self.verp("0190f3a2-0000-7000-8000-000000000004", "odd@example.com")
        self.put_report("dsn-no-status", tok)
        harness.wait_for(lambda: self.metric("mailfleet_feedback_review_total") >= 1, what="review")
        self.assertIsNone(self.suppressed("odd@example.com"))

    # -- SNS --
    def sns(self, body):
        return self.http("POST", "http://127.0.0.1:%d/sns" % self.pub, json.dumps(body).encode(),
                         {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": body.get("Type", "")})

    def sns_bounce(self, addr, arn="arn:aws:sns:us-east-1:123456789012:ses-feedback", btype="Permanent"):
        msg = {"notificationType": "Bounce", "bounce": {"bounceType": btype, "bounceSubType": "General",
               "bouncedRecipients": [{"emailAddress": addr, "status": "5.1.1"}], "timestamp": "2026-11-26T10:00:00.000Z"},
               "mail": {"messageId": "0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000", "source": "noreply@iot.localhost"}}
        return {"Type": "Notification", "MessageId": "a1b2c3", "TopicArn": arn, "Message": json.dumps(msg),
                "Timestamp": "2026-11-26T10:00:00.000Z", "SignatureVersion": "1", "Signature": "AAAA",
                "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem"}

    def test_sns_bounce_and_wrong_topic(self):
        st, _ = self.sns(self.sns_bounce("sesbounce@example.com"))
        self.assertEqual(st, 200)
        harness.wait_for(lambda: self.suppressed("sesbounce@example.com") == "BOUNCE", what="sns bounce")
        st, _ = self.sns(self.sns_bounce("other@example.com", arn="arn:aws:sns:us-east-1:999:evil"))
        self.assertEqual(st, 403)
        st, _ = self.http("POST", "http://127.0.0.1:%d/sns" % self.pub, b"{not json")
        self.assertEqual(st, 400)
        time.sleep(0.5)
        self.assertIsNone(self.suppressed("other@example.com"))

    def test_sns_unsigned_refused_by_default(self):
        cfg = open(self.cfg).read().replace("sns_allow_unsigned = true\n", "")
        pub, met = harness.free_port(), harness.free_port()
        cfg = cfg.replace("127.0.0.1:%d" % self.pub, "127.0.0.1:%d" % pub).replace(
            "127.0.0.1:%d" % self.met, "127.0.0.1:%d" % met).replace(self.path("state"), self.path("state2"))
        self.proc.stop()
        p = self.start([harness.MAILFLEET, "feedback", "-c", self.write("strict.ini", cfg)], "strict")
        # /readyz, not the port: the public port listens before /sns is routed
        harness.wait_ready(met, proc=p.p)
        self.pub = pub
        st, _ = self.sns(self.sns_bounce("unsigned@example.com"))
        self.assertEqual(st, 403)
        self.assertIn("signatures cannot be checked", p.output())

    # Signed SNS: a certificate and key made here with the openssl CLI; the
    # worker checks signatures against sns_cert_file.
    def restart_signed(self, extra=""):
        key, cert = self.path("sns-key.pem"), self.path("sns-cert.pem")
        if not os.path.exists(cert):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out",
                            cert, "-days", "1", "-subj", "/CN=sns.test"], check=True, capture_output=True)
        cfg = open(self.cfg).read().replace("sns_allow_unsigned = true\n", "sns_cert_file = %s\n%s" % (cert, extra))
        pub, met = harness.free_port(), harness.free_port()
        cfg = re.sub(r"public_listen = \S+", "public_listen = 127.0.0.1:%d" % pub, cfg)
        cfg = re.sub(r"metrics_listen = \S+", "metrics_listen = 127.0.0.1:%d" % met, cfg)
        cfg = cfg.replace(self.path("state"), self.path("state-signed"))
        self.proc.stop()
        self.proc = self.start([harness.MAILFLEET, "feedback", "-c", self.write("signed.ini", cfg)], "signed")
        harness.wait_port(pub, proc=self.proc.p)
        harness.wait_for(lambda: self.http("GET", "http://127.0.0.1:%d/readyz" % met)[0] == 200,
                         what="feedback ready")
        self.pub, self.met = pub, met

    def signed(self, body, version="2", age=0.0):
        """body with Timestamp `age` seconds ago, signed as SNS does (string to sign per its docs)."""
        import base64
        body = dict(body, SignatureVersion=version, Timestamp=time.strftime(
            "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - age)))
        keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        tosign = "".join("%s\n%s\n" % (k, body[k]) for k in keys if k in body)
        sig = subprocess.run(["openssl", "dgst", "-sha256" if version == "2" else "-sha1", "-sign",
                              self.path("sns-key.pem")], input=tosign.encode(), check=True, capture_output=True).stdout
        body["Signature"] = base64.b64encode(sig).decode()
        return body

    def test_sns_signed_stale_timestamp_refused(self):
        self.restart_signed()
        st, _ = self.sns(self.signed(self.sns_bounce("fresh@example.com")))
        self.assertEqual(st, 200)
        harness.wait_for(lambda: self.suppressed("fresh@example.com") == "BOUNCE", what="signed sns bounce")
        # a correctly signed notification, captured and replayed two hours later
        st, _ = self.sns(self.signed(self.sns_bounce("replayed@example.com"), age=2 * 3600))
        self.assertEqual(st, 403)
        self.assertIn("stale Timestamp", self.proc.output())
        self.assertIsNone(self.suppressed("replayed@example.com"))

    def test_sns_sha1_refused_unless_allowed(self):
        self.restart_signed()
        st, _ = self.sns(self.signed(self.sns_bounce("sha1@example.com"), version="1"))
        self.assertEqual(st, 403)
        self.assertIn("SignatureVersion 1 (SHA1) is not accepted", self.proc.output())
        self.restart_signed("sns_allow_sha1 = true\n")
        st, _ = self.sns(self.signed(self.sns_bounce("sha1@example.com"), version="1"))
        self.assertEqual(st, 200)

    def test_sns_subscription_confirmation_is_not_fetched(self):
        hits = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass
        srv = http.server.HTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        url = "http://127.0.0.1:%d/confirm?Token=x" % srv.server_address[1]
        st, _ = self.sns({"Type": "SubscriptionConfirmation", "MessageId": "m", "Token": "x",
                          "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-feedback",
                          "Message": "You have chosen to subscribe", "SubscribeURL": url,
                          "Timestamp": "2026-11-26T10:00:00.000Z", "SignatureVersion": "1",
                          "Signature": "AAAA", "SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.pem"})
        self.assertEqual(st, 200)
        time.sleep(1.0)
        srv.shutdown()
        self.assertEqual(hits, [])
        self.assertIn("SubscribeURL", self.proc.output())
        self.assertIn(url.replace("?", "\\u003f") if False else "/confirm", self.proc.output())

    # -- API and CLI --
    def test_api_auth_put_get_delete(self):
        self.assertEqual(self.api("GET", "", token=None)[0], 401)
        self.assertEqual(self.api("GET", "", token="wrong-token-xx")[0], 401)
        self.assertEqual(self.api("PUT", "", {"EmailAddress": "m@example.com", "Reason": "BOUNCE"})[0], 200)
        self.assertEqual(self.api("PUT", "/n@example.com", {"Reason": "COMPLAINT"})[0], 200)
        self.assertEqual(self.api("PUT", "", {"EmailAddress": "bad\r\nx@example.com", "Reason": "BOUNCE"})[0], 400)
        self.assertEqual(self.api("PUT", "", {"EmailAddress": "p@example.com", "Reason": "SPAM"})[0], 400)
        self.assertEqual(self.suppressed("m@example.com"), "BOUNCE")
        st, body = self.api("GET", "?Reason=COMPLAINT")
        self.assertEqual([s["EmailAddress"] for s in json.loads(body)["SuppressedDestinationSummaries"]], ["n@example.com"])
        self.assertEqual(self.api("DELETE", "/m@example.com")[0], 200)
        self.assertIsNone(self.suppressed("m@example.com"))
        # the CLI sees the same list through the topic
        out = self.mailfleet("suppression", "export", "--format", "csv", "-c", self.cfg).stdout
        self.assertIn('"n@example.com","COMPLAINT"', out)
        self.assertNotIn("m@example.com", out)
        self.mailfleet("suppression", "add", "cli@example.com", "--reason", "MANUAL", "-c", self.cfg)
        harness.wait_for(lambda: self.suppressed("cli@example.com") == "MANUAL", what="cli add reaches the copy")
        self.mailfleet("suppression", "remove", "cli@example.com", "-c", self.cfg)
        harness.wait_for(lambda: self.suppressed("cli@example.com") is None, what="cli remove reaches the copy")

    def test_list_pages_through_100k(self):
        n = 100000
        lines = "\n".join("user%06d@bulk.example.com,BOUNCE" % i for i in range(n)) + "\n"
        path = self.write("bulk.csv", lines)
        r = self.mailfleet("suppression", "import", path, "-c", self.cfg, timeout=300)
        self.assertIn("imported %d" % n, r.stdout)
        def count_all():
            seen, token, pages = set(), None, 0
            while True:
                q = "?PageSize=1000" + ("&NextToken=" + token if token else "")
                st, body = self.api("GET", q)
                self.assertEqual(st, 200)
                doc = json.loads(body)
                for s in doc["SuppressedDestinationSummaries"]:
                    self.assertNotIn(s["EmailAddress"], seen)
                    seen.add(s["EmailAddress"])
                pages += 1
                token = doc.get("NextToken")
                if not token:
                    return len(seen), pages
        harness.wait_for(lambda: count_all()[0] == n, timeout=240, interval=2, what="copy holds 100k")
        total, pages = count_all()
        self.assertEqual(total, n)
        self.assertEqual(pages, 100)
