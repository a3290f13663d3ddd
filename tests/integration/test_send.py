"""send worker: real peers where they can run here.  Postfix's smtp-sink
(with its fault options) and a private Postfix instance as relays,
python3-dkim for DKIM, the bus through tests/tools/send_tool.  SES cannot run
here: FakeSes, a local HTTP endpoint that re-signs each request with botocore
and answers as SES documents, is the accepted stand-in.  Each test runs
`mailfleet send` as its own process."""
import base64
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid

import harness

SEND_TOOL = os.path.join(harness.TOOLS, "send_tool")
TOKEN_KEYS = "t1:" + "5a" * 24
SCHEMAS = os.path.join(harness.ROOT, "schemas")


def uuid7():
    ms = int(time.time() * 1000)
    b = bytearray(os.urandom(16))
    b[0:6] = ms.to_bytes(6, "big")
    b[6] = (b[6] & 0x0F) | 0x70
    b[8] = (b[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(b)))


def now3339():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


def message_text(subject="alert", body="hello\r\n"):
    return ("From: mailfleet <noreply@iot.localhost>\r\nTo: ops@example.com\r\nSubject: %s\r\n"
            "Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <%s@iot.localhost>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s") % (subject, uuid7(), body)


def outbound(recipients, text=None, **kw):
    oid = uuid7()
    rec = {
        "schema": "mailfleet.outbound.v1", "id": oid, "inbound_id": uuid7(), "created_at": now3339(),
        "from": "noreply@iot.localhost", "from_name": "mailfleet", "recipients": list(recipients),
        "subject": "alert", "body": {"encoding": "text", "data": text or message_text()}, "links": [],
        "attempt": 0,
    }
    rec.update(kw)
    return rec


class SinkDir:
    """smtp-sink -d output: one file per transaction."""

    def __init__(self, path):
        self.path = path

    def messages(self):
        out = []
        for name in sorted(os.listdir(self.path)):
            with open(os.path.join(self.path, name), "rb") as f:
                data = f.read()
            head, _, _ = data.partition(b"\nReceived: ")
            rcpts = re.findall(rb"^X-Rcpt-Args: <([^>]*)>", head, re.M)
            mail = re.findall(rb"^X-Mail-Args: <([^>]*)>", head, re.M)
            # the message follows the three-line Received: header
            body = data.split(b"\n", 1)[1] if False else data
            m = re.search(rb"\nReceived: [^\n]*\n\t[^\n]*\n\t[^\n]*\n", data)
            out.append({"rcpts": [r.decode() for r in rcpts], "mail_from": mail[0].decode() if mail else "",
                        "message": data[m.end():] if m else b""})
        return out


NOT_VERIFIED = "Email address is not verified. The following identities failed the check in region EU-WEST-1: "


class FakeSes:
    """Stands in for Amazon SES v2 SendEmail: no real SES can run here, so
    this local HTTP server is the peer.  It checks each request's SigV4
    signature with botocore (the AWS SDK's own signer) and the request's
    shape, and answers as SES documents it: 200 {"MessageId"}, or an error
    status with the exception name in x-amzn-ErrorType and {"message"}.
    answer(rcpt, n) picks the answer for the n-th request to rcpt: None for
    200, else (status, exception name or None, message)."""
    ak, sk, region = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "eu-west-1"

    def __init__(self, answer):
        self.requests, self.problems = [], []   # (rcpt, status) in order; what was wrong
        lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = fake.signature_ok(self.headers, self.path, body)
                to = fake.shape_ok(self.path, body)
                with lock:
                    n = 1 + sum(1 for r, _ in fake.requests if r == to)
                    if not ok:
                        code, etype, resp = 403, "SignatureDoesNotMatch", {"message": "SignatureDoesNotMatch"}
                    else:
                        a = answer(to, n)
                        code, etype, resp = (200, None, {"MessageId": "ses-%d" % len(fake.requests)}) if a is None \
                            else (a[0], a[1], {"message": a[2]})
                    fake.requests.append((to, code))
                out = json.dumps(resp).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                if etype:
                    self.send_header("x-amzn-ErrorType", etype + ":http://internal.amazon.com/coral/com.amazon.ses/")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()

    def answers(self, rcpt):
        return [code for r, code in self.requests if r == rcpt]

    def signature_ok(self, headers, path, body):
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        auth = headers.get("Authorization", "")
        m = re.match(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/ses/aws4_request, "
                     r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$", auth)
        ok = m is not None and m.group(1) == self.ak and m.group(3) == self.region
        if ok:
            signed = m.group(4).split(";")
            for must in ("host", "x-amz-date", "content-type"):
                ok = ok and must in signed
            req = AWSRequest(method="POST", url="http://%s%s" % (headers["Host"], path), data=body,
                             headers={h: headers[h] for h in signed})
            req.context["timestamp"] = headers["X-Amz-Date"]
            signer = SigV4Auth(Credentials(self.ak, self.sk), "ses", self.region)
            want = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
            ok = ok and want == m.group(5)
        if not ok:
            self.problems.append("bad signature: " + auth)
        return ok

    def shape_ok(self, path, body):
        """The one recipient of a well-shaped SendEmail request, else "?"."""
        try:
            doc = json.loads(body)
            assert path == "/v2/email/outbound-emails"
            assert set(doc) <= {"FromEmailAddress", "Destination", "Content", "FeedbackForwardingEmailAddress"}
            assert doc["FromEmailAddress"] == "noreply@iot.localhost"
            to = doc["Destination"]["ToAddresses"]
            assert len(to) == 1
            raw = base64.b64decode(doc["Content"]["Raw"]["Data"], validate=True)
            assert b"Subject: alert\r\n" in raw
            assert re.match(r"^bounce\+[a-z2-7]{42}@iot\.localhost$", doc["FeedbackForwardingEmailAddress"])
            return to[0]
        except Exception as e:   # noqa: BLE001 — reported to the test
            self.problems.append("bad body: %r" % e)
            return "?"


class RecordedConnections(list):
    port = 0


class SendTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.bus = "local:" + self.path("queue")
        self.metrics_port = harness.free_port()
        # smtp-sink (as nobody) and Postfix (as postfix) write below here
        os.chmod(self.dir, 0o755)

    # ---- plumbing ----
    def config(self, transport, extra=""):
        text = """[mailfleet]
bus = %s
state_dir = %s
store_incoming = file:%s
store_attachments = file:%s
token_keys = %s
log_level = info

[send]
metrics_listen = 127.0.0.1:%d
transport = %s
smtp_starttls = off
retry_tiers = 1s,2s
connect_timeout = 2s
timeout = 10s
%s
""" % (self.bus, self.path("state"), self.path("store", "incoming"), self.path("store", "attachments"),
            TOKEN_KEYS, self.metrics_port, transport, extra)
        return self.write("mailfleet.ini", text)

    def produce(self, topic, records):
        lines = []
        for key, value in records:
            lines.append("%s\t%s" % (key, "-" if value is None else json.dumps(value, separators=(",", ":"))))
        r = subprocess.run([SEND_TOOL, "produce", self.bus, topic], input="\n".join(lines) + "\n", text=True,
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)

    def produce_outbound(self, recs):
        self.produce("mailfleet.outbound", [(r["inbound_id"], r) for r in recs])

    def dump(self, topic):
        r = subprocess.run([SEND_TOOL, "dump", self.bus, topic], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            return []
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def events(self):
        return [json.loads(r["value"]) for r in self.dump("mailfleet.events")]

    def wait_events(self, pred, timeout=30, what="events"):
        return harness.wait_for(lambda: (lambda ev: ev if pred(ev) else None)(self.events()), timeout=timeout,
                                interval=0.2, what=what)

    def start_send(self, cfg, name="send"):
        p = self.start([harness.MAILFLEET, "send", "-c", cfg], name)
        harness.wait_port(self.metrics_port, proc=p.p)
        return p

    def start_sink(self, *opts, name="sink"):
        port = harness.free_port()
        d = self.path(name + "-dir")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)
        p = self.start(["smtp-sink", "-u", "nobody"] + list(opts) + ["-d", d + "/m.", "127.0.0.1:%d" % port, "100"],
                       name)
        harness.wait_port(port, proc=p.p)
        return p, port, SinkDir(d)

    def recording_proxy(self, port):
        """A TCP relay in front of 127.0.0.1:port that records what the
        client sends, one list of chunks per connection (wire.port)."""
        wire = RecordedConnections()
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", 0))
        ls.listen(16)
        wire.port = ls.getsockname()[1]

        def pump(src, dst, rec):
            try:
                while True:
                    b = src.recv(65536)
                    if not b:
                        break
                    if rec is not None:
                        rec.append(b)
                    dst.sendall(b)
            except OSError:
                pass
            finally:
                for x in (src, dst):
                    try:
                        x.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        def accept():
            while True:
                try:
                    c, _ = ls.accept()
                except OSError:
                    return
                u = socket.create_connection(("127.0.0.1", port))
                rec = []
                wire.append(rec)
                threading.Thread(target=pump, args=(c, u, rec), daemon=True).start()
                threading.Thread(target=pump, args=(u, c, None), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        self.addCleanup(ls.close)
        return wire

    def check_schema(self, events, name="event"):
        path = os.path.join(SCHEMAS, name + ".v1.json")
        if not os.path.exists(path):
            return   # schemas/ arrives with the small branch; shapes are asserted field by field below
        import jsonschema
        with open(path) as f:
            schema = json.load(f)
        v = jsonschema.Draft202012Validator(schema)
        for e in events:
            v.validate(e)

    @staticmethod
    def by_type(events, t):
        return [e for e in events if e["eventType"] == t]

    # ---- tests ----
    def test_outbox_default_atomic_files_and_delivery_events(self):
        cfg = self.config("outbox:" + self.path("outbox"))
        recs = [outbound(["a@x.com", "b@y.org"]), outbound(["c@x.com"])]
        # the three body forms of outbound.v1: text (above), base64, store
        b64 = outbound(["d@x.com"])
        raw = b64["body"]["data"].encode()
        b64["body"] = {"encoding": "base64", "data": base64.b64encode(raw).decode()}
        stored = outbound(["e@x.com"])
        key = "outbound/2026-11-26/%s.eml" % stored["id"]
        data = stored["body"]["data"].encode()
        self.write(os.path.join("store", "incoming", key), stored["body"]["data"])
        import hashlib
        stored["body"] = {"encoding": "store", "store": "incoming", "key": key, "size": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()}
        self.produce_outbound(recs + [b64, stored])
        b64["body"]["data"] = raw.decode()
        stored["body"]["data"] = data.decode()
        recs += [b64, stored]
        self.start_send(cfg)
        ev = self.wait_events(lambda ev: len(ev) >= 5)
        self.check_schema(ev)
        deliveries = self.by_type(ev, "Delivery")
        self.assertEqual(sorted(d["delivery"]["recipients"][0] for d in deliveries),
                         ["a@x.com", "b@y.org", "c@x.com", "d@x.com", "e@x.com"])
        for d in deliveries:
            self.assertTrue(d["delivery"]["smtpResponse"].startswith("250"))
            self.assertIn(d["mail"]["messageId"], {r["id"] for r in recs})
        for r in recs:
            for rcpt in r["recipients"]:
                path = self.path("outbox", rcpt, r["id"] + ".eml")
                with open(path, "rb") as f:
                    data = f.read()
                self.assertTrue(data.endswith(r["body"]["data"].encode()))
                # A final delivery: the delivery agent's Return-Path first,
                # holding the envelope sender (the VERP address).
                self.assertRegex(data.split(b"\r\n", 1)[0],
                                 rb"^Return-Path: <bounce\+[a-z2-7]{42}@iot\.localhost>$")
                self.assertEqual(data.count(b"Return-Path:"), 1)
        leftovers = [n for _, _, fs in os.walk(self.path("outbox")) for n in fs if n.endswith(".tmp")]
        self.assertEqual(leftovers, [])

    def test_smtp_sink_receives_built_bytes_dot_stuffing_and_bare_cr(self):
        sink, port, sd = self.start_sink()
        wire = self.recording_proxy(port)
        proxy_port = wire.port
        body = ".leading dot\r\nplain\r\n..two dots\r\n.\r\nbare\rcr inside\r\n. space\r\nlast line"
        text = message_text(body=body)
        cfg = self.config("smtp://127.0.0.1:%d" % proxy_port)
        rec = outbound(["dots@example.com"], text)
        self.produce_outbound([rec])
        self.start_send(cfg)
        self.wait_events(lambda ev: len(self.by_type(ev, "Delivery")) == 1)
        raw = b"".join(b"".join(r) for r in wire)
        start = raw.index(b"\r\n", raw.index(b"DATA\r\n")) if False else raw.index(b"From: mailfleet")
        end = raw.index(b"\r\n.\r\n", start)
        sent = raw[start:end + 2]
        expected = (text + "\r\n").encode()   # the worker ends the message with CRLF
        # Every line that starts with '.' goes out with one more '.'.
        stuffed = b"\r\n".join((b"." + l if l.startswith(b".") else l) for l in expected.split(b"\r\n"))
        self.assertEqual(sent, stuffed)
        self.assertIn(b"bare\rcr inside", sent)
        # smtp-sink undid the stuffing: every dotted line arrived as built.
        msgs = sd.messages()
        self.assertEqual(len(msgs), 1)
        got = msgs[0]["message"]
        for line in (b".leading dot\n", b"\n..two dots\n", b"\n.\n", b"\n. space\n"):
            self.assertIn(line, got)
        self.assertRegex(msgs[0]["mail_from"], r"^bounce\+[a-z2-7]{42}@iot\.localhost$")
        self.assertLessEqual(len(msgs[0]["mail_from"].split("@")[0]), 64)

    def test_verp_return_paths_verify_independently_in_both_formats(self):
        """Recomputes both VERP formats from token_keys alone, as feedback would."""
        import hashlib
        import hmac
        secret = bytes.fromhex(TOKEN_KEYS.split(":", 1)[1])

        def b64u(b):
            return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

        def tokens_sign(payload, exp=0):
            first = b64u(b"t1.%d." % exp + payload)
            return first + "." + b64u(hmac.new(secret, first.encode(), hashlib.sha256).digest())

        sink, port, sd = self.start_sink()
        for fmt in ("compact",):
            for f in os.listdir(sd.path):
                os.unlink(os.path.join(sd.path, f))
            cfg = self.config("smtp://127.0.0.1:%d" % port)
            rec = outbound(["v@example.com"])
            self.produce_outbound([rec])
            p = self.start_send(cfg, name="send-" + fmt)
            harness.wait_for(lambda: sd.messages(), what="delivery")
            p.stop()
            local = sd.messages()[0]["mail_from"].split("@")[0]
            self.assertTrue(local.startswith("bounce+"))
            tok = local[len("bounce+"):]
            key = tokens_sign(b"mailfleet.verp.key.v1").encode()
            idb = uuid.UUID(rec["id"]).bytes
            mac = hmac.new(key, b"verp|" + idb + b"|v@example.com", hashlib.sha256).digest()[:10]
            want = base64.b32encode(idb + mac).decode().rstrip("=").lower()
            self.assertEqual(tok, want)
            self.assertLessEqual(len(local), 64)

    def test_rcpt_5xx_is_bounce_permanent(self):
        sink, port, sd = self.start_sink("-f", "rcpt")
        cfg = self.config("smtp://127.0.0.1:%d" % port)
        rec = outbound(["nobody@example.com"])
        self.produce_outbound([rec])
        self.start_send(cfg)
        ev = self.wait_events(lambda ev: len(self.by_type(ev, "Bounce")) == 1)
        self.check_schema(ev)
        b = self.by_type(ev, "Bounce")[0]["bounce"]
        self.assertEqual(b["bounceType"], "Permanent")
        br = b["bouncedRecipients"][0]
        self.assertEqual(br["emailAddress"], "nobody@example.com")
        self.assertRegex(br["status"], r"^5\.\d+\.\d+$")
        self.assertRegex(br["diagnosticCode"], r"^smtp; 5\d\d ")
        self.assertEqual(self.dump("mailfleet.outbound.retry.1s"), [])
        self.assertEqual(sd.messages(), [])

    def test_rcpt_4xx_retries_on_schedule_then_bounce_transient(self):
        sink, port, sd = self.start_sink("-r", "rcpt")
        cfg = self.config("smtp://127.0.0.1:%d" % port, "max_retry_age = 5s\n")
        rec = outbound(["later@example.com"])
        self.produce_outbound([rec])
        t0 = time.time()
        self.start_send(cfg)
        ev = self.wait_events(lambda ev: len(self.by_type(ev, "Bounce")) == 1, timeout=40)
        self.check_schema(ev)
        delays = self.by_type(ev, "DeliveryDelay")
        # attempt 0 -> tier 1s, attempt 1 -> tier 2s, attempt 2 -> tier 2s ... until 5 s are used up
        self.assertGreaterEqual(len(delays), 2)
        ts = [harness_ts(e["deliveryDelay"]["timestamp"]) for e in delays]
        self.assertGreaterEqual(ts[1] - ts[0], 0.95)
        if len(ts) > 2:
            self.assertGreaterEqual(ts[2] - ts[1], 1.95)
        d0 = delays[0]["deliveryDelay"]
        self.assertEqual(d0["delayedRecipients"][0]["emailAddress"], "later@example.com")
        self.assertRegex(d0["delayedRecipients"][0]["status"], r"^4\.\d+\.\d+$")
        b = self.by_type(ev, "Bounce")[0]["bounce"]
        self.assertEqual(b["bounceType"], "Transient")
        self.assertGreaterEqual(harness_ts(b["timestamp"]) - harness_ts(d0["timestamp"]), 2.5)
        # the retry tiers hold the re-published records, with attempt and not_before
        r1 = [json.loads(r["value"]) for r in self.dump("mailfleet.outbound.retry.1s")]
        r2 = [json.loads(r["value"]) for r in self.dump("mailfleet.outbound.retry.2s")]
        self.assertEqual([r["attempt"] for r in r1], [1])
        self.assertTrue(all(r["attempt"] >= 2 for r in r2))
        self.assertEqual(r1[0]["id"], rec["id"])
        self.check_schema(r1 + r2, "outbound")
        self.assertIn("not_before", r1[0])
        self.assertIn("first_attempt_at", r1[0])
        self.assertEqual(sd.messages(), [])
        self.assertLess(time.time() - t0, 40)

    def test_disconnect_after_data_is_retried_and_then_delivered(self):
        sink, port, sd = self.start_sink("-q", ".")
        cfg = self.config("smtp://127.0.0.1:%d" % port)
        rec = outbound(["flaky@example.com"])
        self.produce_outbound([rec])
        self.start_send(cfg)
        ev = self.wait_events(lambda ev: len(self.by_type(ev, "DeliveryDelay")) >= 1)
        d = self.by_type(ev, "DeliveryDelay")[0]["deliveryDelay"]["delayedRecipients"][0]
        self.assertRegex(d["status"], r"^4\.")
        # the relay recovers on the same port: the retry tier delivers
        sink.stop()
        self.procs.remove(sink)
        d2 = self.path("sink2-dir")
        os.makedirs(d2)
        os.chmod(d2, 0o777)
        self.start(["smtp-sink", "-u", "nobody", "-d", d2 + "/m.", "127.0.0.1:%d" % port, "100"], "sink2")
        ev = self.wait_events(lambda ev: len(self.by_type(ev, "Delivery")) == 1, timeout=30)
        self.assertEqual(self.by_type(ev, "Delivery")[0]["delivery"]["recipients"], ["flaky@example.com"])
        self.assertEqual(sum(len(m["rcpts"]) for m in SinkDir(d2).messages()), 1)

    def start_postfix(self, extra_main=""):
        """A private Postfix that knows one local user (alice) and discards
        what it accepts.  Returns (dir, port)."""
        users = self.write("pf-users", "alice x\n")
        return harness.start_private_postfix(self, """myhostname = pf.localhost
mydomain = localhost
mydestination = known.localhost
local_recipient_maps = texthash:%s
local_transport = discard
default_transport = discard
""" % users + extra_main)

    def test_postfix_unknown_user_is_bounce_permanent_known_user_delivered(self):
        d, port = self.start_postfix()
        cfg = self.config("smtp://127.0.0.1:%d" % port)
        rec = outbound(["bob@known.localhost", "alice@known.localhost"])
        self.produce_outbound([rec])
        self.start_send(cfg)
        ev = self.wait_events(lambda ev: len(ev) >= 2)
        self.check_schema(ev)
        b = self.by_type(ev, "Bounce")
        self.assertEqual(len(b), 1)
        self.assertEqual(b[0]["bounce"]["bounceType"], "Permanent")
        self.assertEqual(b[0]["bounce"]["bounceSubType"], "NoEmail")
        br = b[0]["bounce"]["bouncedRecipients"][0]
        self.assertEqual(br["emailAddress"], "bob@known.localhost")
        self.assertEqual(br["status"], "5.1.1")
        self.assertIn("User unknown", br["diagnosticCode"])
        dl = self.by_type(ev, "Delivery")
        self.assertEqual(dl[0]["delivery"]["recipients"], ["alice@known.localhost"])
        self.assertRegex(dl[0]["delivery"]["smtpResponse"], r"^250 2\.0\.0 Ok: queued as ")

    def test_starttls_to_postfix_with_a_verified_certificate(self):
        cert, key = self.path("relay.crt"), self.path("relay.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert], check=True,
                       capture_output=True)
        os.chmod(key, 0o644)
        d, port = self.start_postfix("smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n"
                                     "smtpd_tls_security_level = may\nsmtpd_tls_loglevel = 1\n" % (cert, key))
        # required (the default) and verified against the relay's certificate
        cfg = self.config("smtp://127.0.0.1:%d" % port, "tls_ca_file = %s\n" % cert)
        with open(cfg) as f:
            text = f.read().replace("smtp_starttls = off\n", "")
        with open(cfg, "w") as f:
            f.write(text)
        self.produce_outbound([outbound(["alice@known.localhost"])])
        self.start_send(cfg)
        ev = self.wait_events(lambda ev: len(self.by_type(ev, "Delivery")) == 1)
        self.assertTrue(self.by_type(ev, "Delivery")[0]["delivery"]["smtpResponse"].startswith("250"))
        def maillog():
            with open(d + "/maillog") as f:
                t = f.read()
            return t if "TLS connection established" in t else None

        log = harness.wait_for(maillog, what="TLS in the Postfix log")
        self.assertIn("from localhost[127.0.0.1]", log)

    def test_duplicate_record_in_one_batch_is_sent_once(self):
        """At-least-once redelivery can put one outbound record twice into a
        batch: each recipient still gets one copy."""
        _, port, sink = self.start_sink()
        cfg = self.config("smtp://127.0.0.1:%d" % port)
        rec = outbound(["twice@example.com", "other@example.com"])
        self.produce_outbound([rec, rec])
        self.start_send(cfg)
        self.wait_events(lambda ev: len([e for e in ev if e["eventType"] == "Delivery"]) >= 2)
        time.sleep(1.0)
        rcpts = sorted(r for m in sink.messages() for r in m["rcpts"])
        self.assertEqual(rcpts, ["other@example.com", "twice@example.com"])

    def test_kill9_mid_batch_then_restart_delivers_each_recipient_once(self):
        # -w 1: every transfer waits a second before DATA is answered, so the
        # kill lands while transfers are in flight (not inside the tiny window
        # between the relay's 250 and the sent marker, the one documented gap).
        sink, port, sd = self.start_sink("-w", "1")
        cfg = self.config("smtp://127.0.0.1:%d" % port, "connections = 6\nper_domain = 6\n")
        recs = [outbound(["r%d-%d@example.com" % (i, k) for k in range(3)]) for i in range(10)]
        self.produce_outbound(recs)
        p = self.start_send(cfg)
        harness.wait_for(lambda: len(sd.messages()) >= 1, timeout=20, what="first deliveries")
        time.sleep(0.5)   # the next wave is now waiting on DATA
        p.kill9()
        before = len(sd.messages())
        self.assertGreater(before, 0)
        self.assertLess(before, 30)
        self.start_send(cfg, name="send2")
        harness.wait_for(lambda: len(sd.messages()) >= 30, timeout=60, what="all 30 deliveries")
        time.sleep(1.5)
        counts = {}
        for m in sd.messages():
            for r in m["rcpts"]:
                counts[r] = counts.get(r, 0) + 1
        want = {r for rec in recs for r in rec["recipients"]}
        self.assertEqual(set(counts), want)
        self.assertEqual([r for r, n in counts.items() if n != 1], [])
        ev = self.wait_events(lambda ev: {e["delivery"]["recipients"][0] for e in self.by_type(ev, "Delivery")} == want)
        # the outbound topic is fully committed: nothing is redelivered later
        self.assertEqual(self.by_type(ev, "Bounce"), [])

    def fake_ses(self, answer, extra=""):
        """Starts FakeSes with answer(rcpt, n) and returns it and a config."""
        ses = FakeSes(answer)
        self.addCleanup(ses.close)
        cfg = self.config("ses:" + ses.region, "ses_endpoint = http://127.0.0.1:%d\nses_access_key = %s\n"
                          "ses_secret_key = %s\nmax_retry_age = 1h\nhold_backoff = 1s\nhold_backoff_max = 2s\n%s"
                          % (ses.port, ses.ak, ses.sk, extra))
        return ses, cfg

    def test_ses_requests_are_sigv4_signed_and_shaped(self):
        def answer(rcpt, n):
            if rcpt.startswith("throttle") and n == 1:   # SES's per-second rate, met once
                return 429, "TooManyRequestsException", "Maximum sending rate exceeded."
            if rcpt.startswith("reject"):
                return 400, None, "Email address is not verified."
            return None

        ses, cfg = self.fake_ses(answer)
        rec = outbound(["ok@example.com", "throttle@example.com", "reject@example.com"])
        self.produce_outbound([rec])
        self.start_send(cfg)
        ev = self.wait_events(lambda ev: len(ev) >= 3)
        self.assertEqual(ses.problems, [])
        self.check_schema(ev)
        self.assertEqual(self.by_type(ev, "Delivery")[0]["delivery"]["recipients"], ["ok@example.com"])
        self.assertIn("ses-", self.by_type(ev, "Delivery")[0]["delivery"]["smtpResponse"])
        # a throttled answer is SES's rate, not the recipient's fault: the
        # transport holds a second and the recipient gets the mail after it
        self.assertEqual(sorted(e["delivery"]["recipients"][0] for e in self.by_type(ev, "Delivery")),
                         ["ok@example.com", "throttle@example.com"])
        self.assertEqual(self.by_type(ev, "DeliveryDelay"), [])
        self.assertEqual(ses.answers("throttle@example.com"), [429, 200])
        self.assertEqual(ses.answers("ok@example.com"), [200])   # sent once, before and after the hold
        # a 400 SES names no cause for says nothing against the address:
        # undetermined, which feedback sends to review without suppressing
        (b,) = [e["bounce"] for e in self.by_type(ev, "Bounce")]
        self.assertEqual((b["bounceType"], b["bouncedRecipients"][0]["emailAddress"]),
                         ("Undetermined", "reject@example.com"))
        metrics = urlget("http://127.0.0.1:%d/metrics" % self.metrics_port)
        self.assertRegex(metrics, r'mailfleet_send_transport_refusals_total\{transport="ses",reason="throttled"\} 1\b')

    # ---- SES errors: the recipient's (bounce) or our account's (hold) ----
    def start_feedback(self):
        """feedback on the same bus, turning send's Bounce events into
        suppressions as in production."""
        met, pub = harness.free_port(), harness.free_port()
        cfg = self.write("feedback.ini", """[mailfleet]
bus = %s
state_dir = %s
store_incoming = file:%s
token_keys = %s
[feedback]
metrics_listen = 127.0.0.1:%d
public_listen = 127.0.0.1:%d
""" % (self.bus, self.path("feedback-state"), self.path("store", "incoming"), TOKEN_KEYS, met, pub))
        p = self.start([harness.MAILFLEET, "feedback", "-c", cfg], "feedback")
        harness.wait_port(met, proc=p.p)

    def suppressed(self):
        return {r["key"] for r in self.dump("mailfleet.suppression") if r["value"] is not None}

    def readyz(self):
        import urllib.error
        try:
            return 200, urlget("http://127.0.0.1:%d/readyz" % self.metrics_port)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def fallback(self):
        return [json.loads(r["value"]) for r in self.dump("mailfleet.fallback")]

    def paused_gauge(self, reason):
        """The gauge's value; None while send is still starting (not exported yet)."""
        m = re.search(r'mailfleet_send_transport_paused\{transport="ses",reason="%s"\} (\d)' % reason,
                      urlget("http://127.0.0.1:%d/metrics" % self.metrics_port))
        return int(m.group(1)) if m else None

    def check_account_refusal(self, status, etype, message, reason):
        """SES refuses our account with (status, etype, message) for the
        first two requests.  Nobody bounces and nobody is suppressed; the
        transport holds (metric, /readyz, one log line) and SES sees one try
        per back-off, not one per queued recipient; the mail is delivered
        once SES accepts again.  A sandbox rejection of a recipient
        afterwards bounces Undetermined: feedback sends it to review (the
        barrier that feedback has read every event before it) and
        suppresses nobody."""
        refused = [0]

        def answer(rcpt, n):   # FakeSes calls this under its lock
            if rcpt == "reject@example.com":
                return 400, "MessageRejected", NOT_VERIFIED + rcpt   # the sandbox: the account's state
            if refused[0] < 2:
                refused[0] += 1
                return status, etype, message
            return None

        # one transfer at a time: each try of the transport is one request
        ses, cfg = self.fake_ses(answer, "connections = 1\n")
        self.start_feedback()
        rcpts = ["r%d@example.com" % i for i in range(6)]
        recs = [outbound(rcpts[i:i + 2], text=message_text(body="secret body line\r\n")) for i in range(0, 6, 2)]
        self.produce_outbound(recs)
        send = self.start_send(cfg)
        # refused at once, then after the 1 s wait: paused for 3 s in all
        harness.wait_for(lambda: self.paused_gauge(reason) == 1, timeout=20, what="the transport paused for " + reason)
        code, why = self.readyz()
        self.assertEqual(code, 503)
        self.assertIn("refuses our account (%s)" % reason, why)
        ev = self.wait_events(lambda ev: len(self.by_type(ev, "Delivery")) == 6, timeout=20, what="every delivery")
        # tried again after each back-off, not once per queued recipient
        self.assertEqual([code for _, code in ses.requests[:3]], [status, status, 200])
        self.assertEqual(sorted(e["delivery"]["recipients"][0] for e in self.by_type(ev, "Delivery")), rcpts)
        for r in rcpts:
            self.assertEqual(ses.answers(r).count(200), 1, r)
        self.assertEqual(self.paused_gauge(reason), 0)   # ended by the delivery, before its event
        harness.wait_for(lambda: self.readyz()[0] == 200, timeout=5, what="ready again")
        # the sandbox: bounced, sent to review, nobody suppressed
        self.produce_outbound([outbound(["reject@example.com"])])
        (fb,) = harness.wait_for(self.fallback, timeout=20, what="the sandbox rejection in review")
        self.assertEqual(fb["reason"], "undetermined_bounce")
        self.assertIn("reject@example.com", fb["details"])
        self.assertIn("not verified", fb["details"])
        self.assertEqual(self.suppressed(), set())
        ev = self.events()
        self.assertEqual([(e["bounce"]["bounceType"], e["bounce"]["bouncedRecipients"][0]["emailAddress"])
                          for e in self.by_type(ev, "Bounce")], [("Undetermined", "reject@example.com")])
        self.assertEqual(self.by_type(ev, "DeliveryDelay"), [])
        self.assertEqual(ses.problems, [])
        self.assertEqual(self.paused_gauge(reason), 0)
        metrics = urlget("http://127.0.0.1:%d/metrics" % self.metrics_port)
        m = re.search(r'mailfleet_send_transport_refusals_total\{transport="ses",reason="%s"\} (\d+)' % reason,
                      metrics)
        self.assertEqual(int(m.group(1)), 2)
        log = send.output()
        held = [json.loads(line) for line in log.splitlines() if "sending held" in line]
        self.assertEqual(len(held), 2)   # one line per wait
        self.assertEqual(held[0]["reason"], reason)
        self.assertIn(etype, held[0]["reply"])
        self.assertIn("hold ended", log)
        self.assertNotIn("secret body line", log)
        self.assertNotIn(ses.sk, log)

    def test_ses_sending_paused_holds_without_bouncing(self):
        self.check_account_refusal(400, "SendingPausedException", "Sending paused for this account.",
                                   "sending_paused")

    def test_ses_account_suspended_holds_without_bouncing(self):
        self.check_account_refusal(400, "AccountSuspendedException", "Sending suspended for this account.",
                                   "account_suspended")

    def test_ses_daily_quota_holds_without_bouncing(self):
        self.check_account_refusal(400, "LimitExceededException", "Daily message quota exceeded.", "quota")

    def test_ses_unverified_sender_holds_without_bouncing(self):
        self.check_account_refusal(400, "MessageRejected", NOT_VERIFIED + "noreply@iot.localhost",
                                   "sender_not_verified")

    def test_ses_mail_from_domain_not_verified_holds_without_bouncing(self):
        self.check_account_refusal(400, "MailFromDomainNotVerifiedException",
                                   "MAIL FROM domain bounce.iot.localhost is not verified.", "mail_from_not_verified")

    def test_ses_hold_ends_on_an_answer_that_is_no_refusal(self):
        """A hold ends at any answer that is not a refusal, not only at a
        delivery: after a pause SES rejects the retried message as a bad
        request.  Nothing is delivered, yet the gauge is 0 and send ready."""
        def answer(rcpt, n):
            if n == 1:
                return 400, "SendingPausedException", "Sending paused for this account."
            return 400, "BadRequestException", "Invalid content."

        ses, cfg = self.fake_ses(answer, "connections = 1\n")
        self.produce_outbound([outbound(["x@example.com"])])
        self.start_send(cfg)
        ev = self.wait_events(lambda ev: self.by_type(ev, "Bounce"), what="the bounce after the hold")
        self.assertEqual(self.paused_gauge("sending_paused"), 0)   # ended before the event was produced
        harness.wait_for(lambda: self.readyz()[0] == 200, timeout=5, what="ready after the hold")
        self.assertEqual(ses.answers("x@example.com"), [400, 400])
        self.assertEqual([e["bounce"]["bounceType"] for e in self.by_type(ev, "Bounce")], ["Undetermined"])
        self.assertEqual(self.by_type(ev, "Delivery"), [])
        metrics = urlget("http://127.0.0.1:%d/metrics" % self.metrics_port)
        self.assertRegex(metrics, r'mailfleet_send_transport_refusals_total\{transport="ses",reason="sending_paused"\} 1\b')

    def test_ses_hold_ends_when_the_retried_record_needs_no_transfer(self):
        """SES stays paused, but the held record's only recipient is
        suppressed meanwhile: the retry makes no transfer, commits without a
        refusal, and that ends the hold (no delivery ever comes)."""
        ses, cfg = self.fake_ses(lambda rcpt, n: (400, "SendingPausedException", "Sending paused for this account."),
                                 "connections = 1\n")
        self.produce_outbound([outbound(["x@example.com"])])
        self.start_send(cfg)
        harness.wait_for(lambda: self.paused_gauge("sending_paused") == 1, timeout=20, what="the hold")
        self.produce("mailfleet.suppression", [
            ("x@example.com", {"schema": "mailfleet.suppression.v1", "emailAddress": "x@example.com",
                               "reason": "MANUAL", "lastUpdateTime": now3339()})])
        ev = self.wait_events(lambda ev: self.by_type(ev, "Suppressed"), timeout=30, what="the Suppressed event")
        self.assertEqual(self.by_type(ev, "Bounce"), [])
        self.assertEqual(self.paused_gauge("sending_paused"), 0)   # ended before the commit
        harness.wait_for(lambda: self.readyz()[0] == 200, timeout=5, what="ready after the hold")
        self.assertGreaterEqual(len(ses.requests), 1)
        self.assertEqual(set(ses.answers("x@example.com")), {400})

    def test_ses_message_level_rejections_go_to_review_without_suppressing(self):
        """Rejections that do not show the address is bad (the sandbox, a bad
        request, a too large message, a 400 with no cause) bounce
        Undetermined: feedback puts each in mailfleet.fallback with SES's
        reason and suppresses nobody, and nothing holds.  An address SES
        calls malformed and names is the recipient's: Permanent, suppressed."""
        answers = {
            "sandbox@example.com": (400, "MessageRejected", NOT_VERIFIED + "sandbox@example.com"),
            "badreq@example.com": (400, "BadRequestException", "Missing final '@domain'"),
            "big@example.com": (400, "MessageRejected", "Message length is more than 10485760 bytes long: '10485761'."),
            "odd@example.com": (400, None, "?"),
            "malformed@example.com": (400, "BadRequestException", "Illegal address: malformed@example.com"),
        }
        ses, cfg = self.fake_ses(lambda rcpt, n: answers.get(rcpt))
        self.start_feedback()
        self.produce_outbound([outbound(sorted(answers))])
        self.start_send(cfg)
        fb = harness.wait_for(lambda: (lambda f: f if len(f) == 4 else None)(self.fallback()), timeout=30,
                              what="four bounces in review")
        harness.wait_for(lambda: "malformed@example.com" in self.suppressed(), timeout=20, what="the malformed address")
        self.check_schema(fb, "fallback")
        self.assertEqual({f["reason"] for f in fb}, {"undetermined_bounce"})
        details = " | ".join(f["details"] for f in fb)
        for rcpt, (_, etype, message) in answers.items():
            if rcpt != "malformed@example.com":
                self.assertIn(rcpt, details)
                self.assertIn(message, details)
        self.assertIn("BadRequestException", details)
        self.assertEqual(self.suppressed(), {"malformed@example.com"})
        ev = self.events()
        self.check_schema(ev)
        got = {e["bounce"]["bouncedRecipients"][0]["emailAddress"]: e["bounce"]["bounceType"]
               for e in self.by_type(ev, "Bounce")}
        self.assertEqual(got, {r: "Permanent" if r == "malformed@example.com" else "Undetermined" for r in answers})
        metrics = urlget("http://127.0.0.1:%d/metrics" % self.metrics_port)
        self.assertRegex(metrics, r'mailfleet_send_messages_total\{result="bounced_undetermined"\} 4\b')
        self.assertRegex(metrics, r'mailfleet_send_messages_total\{result="bounced_permanent"\} 1\b')
        self.assertNotRegex(metrics, r'mailfleet_send_transport_refusals_total\{[^}]*\} [1-9]')
        self.assertEqual(sorted(r for r, _ in ses.requests), sorted(answers))   # each once: nothing held

    def test_ses_access_denied_record_goes_to_the_dlq_after_access_denied_max(self):
        """AccessDenied holds like a credentials error, but an IAM condition
        can deny one recipient only: once SES has denied the same record for
        access_denied_max it goes to the DLQ with SES's reason, nobody is
        bounced, and the record behind it in its partition is delivered."""
        denied = ("User: arn:aws:iam::123456789012:user/mf is not authorized to perform: ses:SendEmail on "
                  "resource: arn:aws:ses:eu-west-1:123456789012:identity/example.com")

        def answer(rcpt, n):
            return (403, "AccessDeniedException", denied) if rcpt == "denied@example.com" else None

        ses, cfg = self.fake_ses(answer, "connections = 1\naccess_denied_max = 2s\n")
        first = outbound(["denied@example.com"])
        behind = outbound(["after@example.com"], inbound_id=first["inbound_id"])   # same key: same partition
        self.produce_outbound([first, behind])
        self.start_send(cfg)
        (d,) = harness.wait_for(lambda: self.dump("mailfleet.outbound.dlq"), timeout=30, what="the denied record in the DLQ")
        self.assertEqual(json.loads(d["value"]), first)
        h = d["headers"]
        self.assertEqual((h["mf.error.stage"], h["mf.error.class"]), ("send.transport", "policy"))
        self.assertIn("access_denied_max", h["mf.error.message"])
        self.assertIn("is not authorized to perform", h["mf.error.message"])
        ev = self.wait_events(lambda ev: self.by_type(ev, "Delivery"), timeout=20, what="the record behind it")
        self.assertEqual([e["delivery"]["recipients"] for e in self.by_type(ev, "Delivery")], [["after@example.com"]])
        self.assertEqual(self.by_type(ev, "Bounce"), [])
        answered = ses.answers("denied@example.com")
        self.assertEqual(set(answered), {403})
        self.assertGreaterEqual(len(answered), 2)   # held and tried again before the cap
        self.assertEqual(ses.answers("after@example.com"), [200])

    def _dkim_roundtrip(self, alg):
        import dkim
        key = self.path("dkim.pem")
        if alg == "rsa-sha256":
            subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
            der = subprocess.run(["openssl", "rsa", "-in", key, "-pubout", "-outform", "DER"], check=True,
                                 capture_output=True).stdout
            txt = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
        else:
            subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], check=True, capture_output=True)
            der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"], check=True,
                                 capture_output=True).stdout
            txt = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(der[-32:])
        cfg = self.config("outbox:" + self.path("outbox"),
                          "dkim_key_file = %s\ndkim_selector = sel\ndkim_domain = iot.localhost\ndkim_algorithm = %s\n"
                          "list_unsubscribe = true\nunsubscribe_url = https://mail.example.com/\n" % (key, alg))
        rec = outbound(["a@x.com"], list="alerts")
        self.produce_outbound([rec])
        self.start_send(cfg)
        self.wait_events(lambda ev: len(self.by_type(ev, "Delivery")) == 1)
        with open(self.path("outbox", "a@x.com", rec["id"] + ".eml"), "rb") as f:
            msg = f.read()

        def dns(name, timeout=5):
            return txt if name == b"sel._domainkey.iot.localhost." else None

        self.assertTrue(dkim.verify(msg, dnsfunc=dns))
        sig = re.search(rb"^DKIM-Signature:(.*?)\r\n(?![ \t])", msg, re.M | re.S).group(1)
        sig = re.sub(rb"\s+", b"", sig)
        self.assertIn(("a=" + alg).encode(), sig)
        signed = re.search(rb"(?:^|;)h=([^;]+)", sig).group(1).lower().split(b":")
        for h in (b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
                  b"list-unsubscribe", b"list-unsubscribe-post"):
            self.assertIn(h, signed)
        self.assertIn(b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", msg)
        lu = re.search(rb"List-Unsubscribe: <(https://[^>]+)>,\r\n <mailto:([^>]+)>", msg)
        self.assertIsNotNone(lu)
        url, mailto = lu.group(1).decode(), lu.group(2).decode()
        self.assertTrue(url.startswith("https://mail.example.com/u/"))
        first = url.rsplit("/", 1)[1].split(".")[0]
        payload = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)).decode()
        self.assertTrue(payload.endswith(".u|a@x.com|alerts"), payload)
        self.assertRegex(mailto, r"^unsubscribe\+[a-z2-7]{42}@iot\.localhost$")
        # tampering with a signed header breaks the signature
        self.assertFalse(dkim.verify(msg.replace(b"List-Unsubscribe=One-Click", b"List-Unsubscribe=Two-Click"),
                                     dnsfunc=dns))

    def test_dkim_rsa_signature_verifies_with_one_click_headers_signed(self):
        self._dkim_roundtrip("rsa-sha256")

    def test_dkim_ed25519_signature_verifies(self):
        self._dkim_roundtrip("ed25519-sha256")

    def test_suppressed_recipient_gets_suppressed_event_and_no_mail(self):
        sink, port, sd = self.start_sink()
        self.produce("mailfleet.suppression", [
            ("gone@example.com", {"schema": "mailfleet.suppression.v1", "emailAddress": "gone@example.com",
                                  "reason": "BOUNCE", "lastUpdateTime": now3339()}),
            ("back@example.com", {"schema": "mailfleet.suppression.v1", "emailAddress": "back@example.com",
                                  "reason": "COMPLAINT", "lastUpdateTime": now3339()}),
            ("back@example.com", None),   # tombstone: removed again
            ("unsub@example.com|alerts", {"schema": "mailfleet.suppression.v1", "emailAddress": "unsub@example.com",
                                          "reason": "UNSUBSCRIBE", "list": "alerts", "lastUpdateTime": now3339()}),
        ])
        cfg = self.config("smtp://127.0.0.1:%d" % port)
        rec = outbound(["gone@example.com", "back@example.com", "unsub@example.com", "ok@example.com"], list="alerts")
        other = outbound(["unsub@example.com"], list="other")
        self.produce_outbound([rec, other])
        self.start_send(cfg)
        ev = self.wait_events(lambda ev: len(ev) >= 5)
        self.check_schema(ev)
        sup = {e["suppressed"]["suppressedRecipients"][0]["emailAddress"]:
               e["suppressed"]["suppressedRecipients"][0] for e in self.by_type(ev, "Suppressed")}
        self.assertEqual(set(sup), {"gone@example.com", "unsub@example.com"})
        self.assertEqual(sup["gone@example.com"]["reason"], "BOUNCE")
        self.assertEqual((sup["unsub@example.com"]["reason"], sup["unsub@example.com"]["list"]), ("UNSUBSCRIBE", "alerts"))
        got = sorted(r for m in sd.messages() for r in m["rcpts"])
        self.assertEqual(got, ["back@example.com", "ok@example.com", "unsub@example.com"])
        metrics = urlget("http://127.0.0.1:%d/metrics" % self.metrics_port)
        self.assertRegex(metrics, r"mailfleet_send_suppressed_total 2\b")
        self.assertRegex(metrics, r'mailfleet_send_messages_total\{result="delivered"\} 3\b')
        self.assertRegex(metrics, r"mailfleet_send_attempt_seconds_count 3\b")
        self.assertRegex(metrics, r"mailfleet_send_ratelimit_tokens ")
        self.assertRegex(metrics, r"mailfleet_send_paused 0\b")

    def test_pause_keeps_place_and_resume_sends(self):
        cfg = self.config("outbox:" + self.path("outbox"))
        r = self.mailfleet("send", "pause", "-c", cfg)
        self.assertIn("paused", r.stdout)
        self.assertIn("paused", self.mailfleet("send", "status", "-c", cfg).stdout)
        rec = outbound(["p@example.com"])
        self.produce_outbound([rec])
        self.start_send(cfg)
        time.sleep(1.5)
        self.assertFalse(os.path.exists(self.path("outbox", "p@example.com")))
        self.assertEqual(self.events(), [])
        self.assertRegex(urlget("http://127.0.0.1:%d/metrics" % self.metrics_port), r"mailfleet_send_paused 1\b")
        self.mailfleet("send", "resume", "-c", cfg)
        self.wait_events(lambda ev: len(self.by_type(ev, "Delivery")) == 1, timeout=10)
        self.assertTrue(os.path.exists(self.path("outbox", "p@example.com", rec["id"] + ".eml")))

    def test_unhandleable_records_go_to_the_dlq_with_error_headers(self):
        cfg = self.config("outbox:" + self.path("outbox"))
        good = outbound(["ok@example.com"])
        bad_rcpt = outbound(["ok@example.com"])
        bad_rcpt["recipients"] = ["x@y.com\r\nRCPT TO:<evil@example.com>"]
        missing = outbound(["ok@example.com"], body={"encoding": "store", "store": "incoming", "key": "outbound/none.eml",
                                                     "size": 1, "sha256": "0" * 64})
        self.produce("mailfleet.outbound", [("k-json", {"not": "outbound"}), ("k-rcpt", bad_rcpt),
                                            ("k-missing", missing), ("k-good", good)])
        self.start_send(cfg)
        self.wait_events(lambda ev: len(self.by_type(ev, "Delivery")) == 1)
        dlq = harness.wait_for(lambda: (lambda d: d if len(d) == 3 else None)(self.dump("mailfleet.outbound.dlq")),
                               what="3 DLQ records")
        self.assertEqual([d["key"] for d in dlq], ["k-json", "k-rcpt", "k-missing"])
        for d in dlq:
            h = d["headers"]
            self.assertTrue(h["mf.error.stage"].startswith("send."))
            self.assertIn(h["mf.error.class"], ("parse", "store"))
            self.assertEqual(h["mf.source.topic"], "mailfleet.outbound")
            self.assertEqual(h["mf.source.partition"], "0")
            self.assertNotIn("\n", h["mf.error.message"])
        self.assertEqual([d["headers"]["mf.source.offset"] for d in dlq], ["0", "1", "2"])
        self.assertEqual(dlq[2]["headers"]["mf.error.class"], "store")
        self.assertEqual(json.loads(dlq[1]["value"]), bad_rcpt)   # the original, unchanged
        self.assertEqual(os.listdir(self.path("outbox")), ["ok@example.com"])

    def test_starttls_required_by_default_refuses_a_plaintext_relay(self):
        sink, port, sd = self.start_sink()
        cfg = self.config("smtp://127.0.0.1:%d" % port)
        with open(cfg) as f:
            text = f.read().replace("smtp_starttls = off\n", "")
        self.assertNotIn("smtp_starttls", text)
        with open(cfg, "w") as f:
            f.write(text)
        self.produce_outbound([outbound(["tls@example.com"])])
        self.start_send(cfg)
        ev = self.wait_events(lambda ev: len(self.by_type(ev, "DeliveryDelay")) >= 1)
        d = self.by_type(ev, "DeliveryDelay")[0]["deliveryDelay"]["delayedRecipients"][0]
        self.assertRegex(d["diagnosticCode"], r"(?i)ssl|tls")
        self.assertEqual(sd.messages(), [])

    def test_connection_reuse_one_session_carries_many_messages(self):
        sink, port, sd = self.start_sink()
        wire = self.recording_proxy(port)
        cfg = self.config("smtp://127.0.0.1:%d" % wire.port, "connections = 1\n")
        recs = [outbound(["m%d@example.com" % i]) for i in range(8)]
        self.produce_outbound(recs)
        self.start_send(cfg)
        self.wait_events(lambda ev: len(self.by_type(ev, "Delivery")) == 8)
        # one session carried all eight messages
        self.assertEqual(len(wire), 1)
        sent = b"".join(wire[0])
        self.assertEqual(sent.count(b"MAIL FROM:"), 8)
        self.assertEqual(sent.count(b"EHLO "), 1)
        self.assertEqual(sorted(r for m in sd.messages() for r in m["rcpts"]), sorted(r["recipients"][0] for r in recs))

    def test_per_domain_cap_serializes_one_domain_not_the_others(self):
        sink, port, sd = self.start_sink("-w", "1")
        cfg = self.config("smtp://127.0.0.1:%d" % port, "connections = 4\nper_domain = 1\n")
        rec = outbound(["a@slow.example", "b@slow.example", "c@slow.example", "d@other.example"])
        self.produce_outbound([rec])
        self.start_send(cfg)
        ev = self.wait_events(lambda ev: len(self.by_type(ev, "Delivery")) == 4, timeout=30)
        at = {e["delivery"]["recipients"][0]: harness_ts(e["delivery"]["timestamp"]) for e in self.by_type(ev, "Delivery")}
        slow = sorted(at[r] for r in ("a@slow.example", "b@slow.example", "c@slow.example"))
        # one at a time for slow.example (each transfer waits 1 s at DATA) ...
        self.assertGreaterEqual(slow[1] - slow[0], 0.9)
        self.assertGreaterEqual(slow[2] - slow[1], 0.9)
        # ... while other.example went in parallel with the first of them
        self.assertLess(abs(at["d@other.example"] - slow[0]), 0.5)

    def test_kafka_bus_delivers_and_publishes_events(self):
        # a real 1-node Apache Kafka cluster; this test's retry tiers (1 s,
        # 2 s) are not the manifest's, so its topics are named here
        _, boot = harness.start_kafka(self, topics=[
            "mailfleet.outbound:3", "mailfleet.outbound.retry.1s", "mailfleet.outbound.retry.2s",
            "mailfleet.events:3", "mailfleet.suppression:3:cleanup.policy=compact", "mailfleet.outbound.dlq"])
        self.bus = "kafka:" + boot
        self.produce("mailfleet.suppression", [
            ("gone@example.com", {"schema": "mailfleet.suppression.v1", "emailAddress": "gone@example.com",
                                  "reason": "BOUNCE", "lastUpdateTime": now3339()})])
        cfg = self.config("outbox:" + self.path("outbox"))
        rec = outbound(["k@example.com", "gone@example.com"])
        self.produce_outbound([rec])
        self.start_send(cfg)
        path = self.path("outbox", "k@example.com", rec["id"] + ".eml")
        harness.wait_for(lambda: os.path.exists(path), timeout=30, what="delivery over kafka")

        def kafka_events():
            r = subprocess.run(["kcat", "-b", boot, "-C", "-t", "mailfleet.events", "-e", "-q"], capture_output=True,
                               text=True, timeout=30)
            evs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
            return evs if len(evs) >= 2 else None

        ev = harness.wait_for(kafka_events, timeout=30, what="events on kafka")
        self.assertEqual(sorted(e["eventType"] for e in ev), ["Delivery", "Suppressed"])
        self.assertFalse(os.path.exists(self.path("outbox", "gone@example.com")))

    def test_rate_limit_spaces_sends(self):
        cfg = self.config("outbox:" + self.path("outbox"), "rate = 5\nburst = 1\n")
        recs = [outbound(["r%d@example.com" % i]) for i in range(6)]
        self.produce_outbound(recs)
        self.start_send(cfg)
        ev = self.wait_events(lambda ev: len(self.by_type(ev, "Delivery")) == 6, timeout=20)
        ts = sorted(harness_ts(e["delivery"]["timestamp"]) for e in self.by_type(ev, "Delivery"))
        # 1 token at start, then one every 200 ms: 6 sends span >= 1 s
        self.assertGreaterEqual(ts[-1] - ts[0], 0.9)


def harness_ts(s):
    import datetime
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def urlget(url):
    import urllib.request
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()
