"""The transform worker as a process on the local bus: inbound.v1 records in,
outbound.v1 / fallback.v1 out, attachments in the store, DLQ with error
headers, `mailfleet dlq list|replay`, and the sender/capture check."""
import base64
import email
import email.policy
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import harness

DATA = os.path.join(harness.ROOT, "tests", "data")
TOOL = os.path.join(harness.TOOLS, "transform_tool")
SCHEMAS = os.path.join(harness.ROOT, "schemas")
TOKEN_SECRET = "links-test-secret-0123456789"


def uuid7():
    ms = int(time.time() * 1000)
    r = uuid.uuid4().int
    v = (ms << 80) | (0x7 << 76) | ((r >> 64) & 0xFFF) << 64 | (0b10 << 62) | (r & ((1 << 62) - 1))
    return str(uuid.UUID(int=v))


def validate(kind, doc):
    """jsonschema validation against schemas/<kind>.v1.json once the schemas
    are in the tree; the structural checks in the tests hold either way."""
    path = os.path.join(SCHEMAS, kind + ".v1.json")
    if not os.path.exists(path):
        return
    import jsonschema
    with open(path) as f:
        schema = json.load(f)
    jsonschema.validate(doc, schema, format_checker=jsonschema.FormatChecker())


class Pipeline:
    """A config, stores and local bus in a test dir, plus helpers."""

    def setup_pipeline(self, extra="", sender="mailfleet <noreply@iot.localhost>", bus=None, transform_extra=""):
        self.pub_port = harness.free_port()
        self.bus = bus or "local:" + self.path("queue")
        self.incoming = self.path("incoming")
        self.att = self.path("att")
        os.makedirs(self.incoming)
        os.makedirs(self.att)
        self.cfg = self.write("mf.ini", """
[mailfleet]
bus = {bus}
store_incoming = file:{inc}
store_attachments = file:{att}
state_dir = {state}
public_base_url = http://127.0.0.1:{pub}
token_keys = tkey:{secret}
log_level = debug

[transform]
metrics_listen = 127.0.0.1:{m1}
sender = {sender}
capture_addresses = alerts@iot.localhost
retries = 2
retry_backoff = 50ms
tmp_dir = {dir}
{textra}

[links]
metrics_listen = 127.0.0.1:{m2}
public_listen = 127.0.0.1:{pub}
revocation_poll = 100ms
{extra}
""".format(bus=self.bus, inc=self.incoming, att=self.att, state=self.path("state"), pub=self.pub_port,
           secret=TOKEN_SECRET, m1=harness.free_port(), m2=harness.free_port(), sender=sender,
           dir=self.dir, extra=extra, textra=transform_extra))

    def start_transform(self, expect_exit=0):
        self.transform = self.start([harness.MAILFLEET, "transform", "-c", self.cfg], "transform",
                                    expect_exit=expect_exit)
        return self.transform

    def start_links(self):
        self.links = self.start([harness.MAILFLEET, "links", "-c", self.cfg], "links")
        harness.wait_port(self.pub_port, proc=self.links.p)
        return self.links

    def submit(self, raw, mail_from="sensor7@devices.example"):
        """Stores raw as ingest would and publishes its inbound.v1 record."""
        iid = uuid7()
        key = "incoming/%s/%s.eml" % (time.strftime("%Y-%m-%d", time.gmtime()), iid)
        os.makedirs(os.path.dirname(os.path.join(self.incoming, key)), exist_ok=True)
        with open(os.path.join(self.incoming, key), "wb") as f:
            f.write(raw)
        return self.publish_inbound(iid, key, raw, mail_from)

    def publish_inbound(self, iid, key, raw, mail_from="sensor7@devices.example"):
        """Publishes the inbound.v1 record of raw, stored under key."""
        rec = {"schema": "mailfleet.inbound.v1", "id": iid,
               "received_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
               "rule": "capture",
               "envelope": {"mail_from": mail_from, "rcpt_to": ["alerts@iot.localhost"], "helo": "dev",
                            "client_ip": "127.0.0.1", "tls": False},
               "store": {"key": key, "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}}
        validate("inbound", rec)
        self.publish("mailfleet.inbound", iid, json.dumps(rec).encode())
        return iid

    def publish(self, topic, key, value):
        subprocess.run([TOOL, "publish", self.bus, topic, key], input=value, check=True, timeout=30)

    def read(self, topic):
        r = subprocess.run([TOOL, "read", self.bus, topic], capture_output=True, check=True, timeout=30)
        return [json.loads(l) for l in r.stdout.decode().splitlines()]

    def wait_records(self, topic, pred, timeout=40, what=None):
        def found():
            recs = [r for r in self.read(topic) if pred(r)]
            return recs or None
        return harness.wait_for(found, timeout=timeout, what=what or topic)

    def outbound_for(self, iid):
        rec = self.wait_records("mailfleet.outbound", lambda r: r["key"] == iid)[0]
        return json.loads(rec["value"])

    def fallbacks_for(self, iid, n=1):
        recs = self.wait_records("mailfleet.fallback", lambda r: r["key"] == iid)
        return [json.loads(r["value"]) for r in recs]


def corpus(name):
    with open(os.path.join(DATA, name + ".eml"), "rb") as f:
        return f.read()


class TransformWorkerTest(harness.TestCase, Pipeline):
    def setUp(self):
        super().setUp()
        self.setup_pipeline()
        self.start_transform()

    def test_demo_to_outbound(self):
        iid = self.submit(corpus("demo"))
        ob = self.outbound_for(iid)
        validate("outbound", ob)
        self.assertEqual(ob["schema"], "mailfleet.outbound.v1")
        self.assertEqual(ob["inbound_id"], iid)
        self.assertEqual(ob["recipients"], ["a@x.com", "b@y.org"])
        self.assertEqual(ob["from"], "noreply@iot.localhost")
        self.assertEqual(ob["subject"], "Demo alert")
        self.assertEqual(ob["attempt"], 0)
        self.assertEqual(ob["body"]["encoding"], "text")
        msg = email.message_from_bytes(ob["body"]["data"].encode(), policy=email.policy.default)
        self.assertEqual(msg["Message-ID"], ob["message_id"])
        self.assertEqual(msg["Auto-Submitted"], "auto-generated")
        self.assertEqual(len(ob["links"]), 1)
        link = ob["links"][0]
        self.assertEqual(link["name"], "report.csv")
        self.assertTrue(link["key"].startswith("attachments/"))
        self.assertIn("/%s/%s-1-report.csv" % (iid[-2:], iid), link["key"])
        with open(os.path.join(self.att, link["key"]), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), link["sha256"])
        self.assertTrue(link["url"].startswith("http://127.0.0.1:%d/a/" % self.pub_port))
        self.assertEqual(self.read("mailfleet.fallback"), [])

    def test_fallback_reasons(self):
        cases = {"no_marker": ["no_recipients"], "recipients_51": ["too_many_recipients"],
                 "all_invalid": ["invalid_recipients"], "deep_nesting": ["unparseable"],
                 "garbage": ["unparseable"]}
        ids = {name: self.submit(corpus(name)) for name in cases}
        for name, reasons in cases.items():
            fbs = self.fallbacks_for(ids[name])
            self.assertEqual(sorted(f["reason"] for f in fbs), reasons, name)
            for f in fbs:
                validate("fallback", f)
                self.assertEqual(f["inbound_id"], ids[name])
                self.assertEqual(f["sender"], "sensor7@devices.example")
        # None of them was sent.
        keys = {r["key"] for r in self.read("mailfleet.outbound")}
        self.assertFalse(keys & set(ids.values()))
        inv = self.fallbacks_for(ids["all_invalid"])[0]
        self.assertEqual(inv["invalid"], ["foo", "bar@", "@baz.com"])
        # no_marker still stored its attachment and reports the link.
        nm = self.fallbacks_for(ids["no_marker"])[0]
        self.assertEqual([l["name"] for l in nm["links"]], ["a.txt"])

    def test_some_invalid_sends_and_reports(self):
        iid = self.submit(corpus("bad_addresses"))
        ob = self.outbound_for(iid)
        self.assertEqual(ob["recipients"], ["n@x.com", "q@example.org"])
        fb = self.fallbacks_for(iid)
        self.assertEqual(len(fb), 1)
        self.assertEqual(fb[0]["reason"], "invalid_recipients")
        self.assertEqual(fb[0]["sent_to"], ["n@x.com", "q@example.org"])
        self.assertEqual(fb[0]["invalid"], ["not-an-address", "o@@y.org", "p@x"])

    def test_blocked_attachment(self):
        iid = self.submit(corpus("blocked_exe"))
        ob = self.outbound_for(iid)
        self.assertEqual([l["name"] for l in ob["links"]], ["notes.txt"])
        fb = self.fallbacks_for(iid)[0]
        validate("fallback", fb)
        self.assertEqual(fb["reason"], "blocked_attachment")
        self.assertEqual(fb["flagged"][0]["name"], "update.exe")
        self.assertEqual(fb["flagged"][0]["why"], "blocked_extension")

    def test_redelivery_is_idempotent(self):
        """The same inbound record twice: same outbound id, same keys."""
        raw = corpus("demo")
        iid = self.submit(raw)
        first = self.outbound_for(iid)
        rec = [r for r in self.read("mailfleet.inbound") if r["key"] == iid][0]
        self.publish("mailfleet.inbound", iid, rec["value"].encode())
        recs = self.wait_records("mailfleet.outbound", lambda r: r["key"] == iid and r["offset"] > 0
                                 if len(self.read("mailfleet.outbound")) > 1 else False)
        second = json.loads(recs[-1]["value"])
        self.assertEqual(first["id"], second["id"])
        self.assertEqual(first["message_id"], second["message_id"])
        self.assertEqual([l["key"] for l in first["links"]], [l["key"] for l in second["links"]])

    def test_bad_record_goes_to_dlq_and_replays(self):
        self.publish("mailfleet.inbound", "junk-1", b"{not json")
        missing = {"schema": "mailfleet.inbound.v1", "id": uuid7(), "received_at": "2026-11-26T10:00:00.000Z",
                   "rule": "capture", "envelope": {"mail_from": "", "rcpt_to": ["alerts@iot.localhost"],
                                                   "helo": "x", "client_ip": "127.0.0.1", "tls": False},
                   "store": {"key": "incoming/nowhere.eml", "size": 1, "sha256": "0" * 64}}
        self.publish("mailfleet.inbound", missing["id"], json.dumps(missing).encode())
        dlq = self.wait_records("mailfleet.inbound.dlq", lambda r: True, what="dlq records")
        dlq = harness.wait_for(lambda: (lambda d: d if len(d) >= 2 else None)(self.read("mailfleet.inbound.dlq")),
                               what="two dlq records")
        junk = [r for r in dlq if r["key"] == "junk-1"][0]
        self.assertEqual(junk["value"], "{not json")
        h = junk["headers"]
        self.assertEqual(h["mf.error.stage"], "transform.decode")
        self.assertEqual(h["mf.error.class"], "parse")
        self.assertEqual(h["mf.source.topic"], "mailfleet.inbound")
        self.assertEqual(h["mf.attempts"], "1")
        miss = [r for r in dlq if r["key"] == missing["id"]][0]
        self.assertEqual(miss["headers"]["mf.error.class"], "store")
        self.assertEqual(miss["headers"]["mf.attempts"], "2")   # retries = 2
        # The worker is still up and handles good mail after bad.
        iid = self.submit(corpus("demo"))
        self.outbound_for(iid)
        self.assertTrue(self.transform.alive())

        listed = self.mailfleet("dlq", "list", "-c", self.cfg).stdout.splitlines()
        self.assertEqual(len(listed), 2)
        self.assertEqual(json.loads(listed[0])["headers"]["mf.error.stage"], "transform.decode")
        before = len(self.read("mailfleet.inbound"))
        out = self.mailfleet("dlq", "replay", "-c", self.cfg).stdout
        self.assertEqual(out.count("replayed"), 2)
        inbound = self.read("mailfleet.inbound")
        self.assertEqual(len(inbound), before + 2)
        replayed = [r for r in inbound[before:] if r["key"] == "junk-1"][0]
        self.assertEqual(replayed["value"], "{not json")
        self.assertFalse(any(k.startswith("mf.") for k in replayed["headers"]))
        # dlq-operator advanced: nothing pending until the replays fail again.
        harness.wait_for(lambda: len(self.read("mailfleet.inbound.dlq")) >= 4, what="replays dead-lettered again")
        listed = self.mailfleet("dlq", "list", "-c", self.cfg).stdout.splitlines()
        self.assertEqual(len(listed), 2)
        self.assertTrue(all(json.loads(l)["offset"] >= 2 for l in listed))


    def test_strict_parsing_dead_letters_with_the_reason(self):
        # Duplicate keys, another schema version and a wrong type are refused,
        # never guessed at; mf.error.message says which.
        good = {"schema": "mailfleet.inbound.v1", "id": uuid7(), "received_at": "2026-11-26T10:00:00.000Z",
                "rule": "capture", "envelope": {"mail_from": "", "rcpt_to": ["alerts@iot.localhost"],
                                                "helo": "x", "client_ip": "127.0.0.1", "tls": False},
                "store": {"key": "incoming/nowhere.eml", "size": 1, "sha256": "0" * 64}}
        body = json.dumps(good)
        rows = [
            ("dup-1", body[:-1] + ', "id": "%s"}' % uuid7(), "duplicate object key"),
            ("v2-1", body.replace("mailfleet.inbound.v1", "mailfleet.inbound.v2"),
             'unknown schema "mailfleet.inbound.v2"'),
            ("type-1", json.dumps(dict(good, id=7)), "field id is not a string"),
        ]
        for key, value, _ in rows:
            self.publish("mailfleet.inbound", key, value.encode())
        dlq = harness.wait_for(lambda: (lambda d: d if len(d) >= 3 else None)(self.read("mailfleet.inbound.dlq")),
                               what="three dlq records")
        for key, value, why in rows:
            with self.subTest(key=key):
                rec = [r for r in dlq if r["key"] == key][0]
                self.assertEqual(rec["value"], value)
                self.assertEqual(rec["headers"]["mf.error.stage"], "transform.decode")
                self.assertEqual(rec["headers"]["mf.error.class"], "parse")
                self.assertIn(why, rec["headers"]["mf.error.message"])
        self.assertEqual(self.read("mailfleet.outbound"), [])


class TransformLivenessTest(harness.TestCase, Pipeline):
    def test_stuck_batch_fails_liveness_and_recovers(self):
        """A loop stuck in one batch turns /healthz 503 naming it (liveness
        restarts the pod); it is 200 again once the batch moves.  The raw
        mail is a FIFO with no writer, so transform blocks opening it: a real
        hang of a store read, as a stuck mount would give."""
        self.setup_pipeline()
        port = int(re.search(r"\[transform\]\nmetrics_listen = 127.0.0.1:(\d+)", open(self.cfg).read()).group(1))
        self.start([harness.MAILFLEET, "transform", "-c", self.cfg], "transform",
                   env={"MAILFLEET__MAILFLEET__STUCK_AFTER": "2s"})

        def healthz():
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
            except OSError:
                return None, ""

        harness.wait_for(lambda: healthz()[0] == 200, what="transform alive")
        raw = corpus("demo")
        iid = uuid7()
        key = "incoming/%s/%s.eml" % (time.strftime("%Y-%m-%d", time.gmtime()), iid)
        path = os.path.join(self.incoming, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkfifo(path)
        self.publish_inbound(iid, key, raw)
        status, body = harness.wait_for(lambda: (lambda h: h if h[0] == 503 else None)(healthz()),
                                        timeout=30, what="/healthz 503")
        self.assertIn("transform-loop: stuck", body)
        # unblock: a writer for the FIFO transform waits on, and the real
        # mail under its name for the tries after it
        w = os.open(path, os.O_WRONLY)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)

        def feed():   # transform may give up on the FIFO (its name now holds another file)
            try:
                os.write(w, raw)
            except BrokenPipeError:
                pass
            finally:
                os.close(w)
        threading.Thread(target=feed, daemon=True).start()
        harness.wait_for(lambda: healthz()[0] == 200, timeout=30, what="/healthz 200 again")
        # and the record was handled: what the FIFO gave (read unseekably)
        # may have gone to the fallback; the loop moved on either way
        harness.wait_for(lambda: [r for t in ("mailfleet.outbound", "mailfleet.fallback") for r in self.read(t)
                                  if r["key"] == iid], what="the record handled")


class TransformLargeBodyTest(harness.TestCase, Pipeline):
    def test_large_outbound_goes_to_the_store(self):
        self.setup_pipeline(transform_extra="inline_max = 1K\ndefault_recipients = ops@x.example\n")
        self.start_transform()
        iid = self.submit(corpus("no_marker"))
        ob = self.outbound_for(iid)
        validate("outbound", ob)
        # No marker, but a default recipient is configured: sent, no fallback.
        self.assertEqual(ob["recipients"], ["ops@x.example"])
        self.assertEqual(self.read("mailfleet.fallback"), [])
        body = ob["body"]
        self.assertEqual(body["encoding"], "store")
        self.assertEqual(body["store"], "incoming")
        self.assertTrue(body["key"].startswith("outbound/") and body["key"].endswith(iid + ".eml"))
        with open(os.path.join(self.incoming, body["key"]), "rb") as f:
            data = f.read()
        self.assertEqual(len(data), body["size"])
        self.assertEqual(hashlib.sha256(data).hexdigest(), body["sha256"])
        msg = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(msg["To"], "ops@x.example")


class TransformLimitsTest(harness.TestCase, Pipeline):
    def test_decoded_size_limit_is_a_fallback(self):
        self.setup_pipeline(transform_extra="max_decoded_bytes = 1K\n")
        self.start_transform()
        iid = self.submit(corpus("nested_multipart"))
        fb = self.fallbacks_for(iid)
        self.assertEqual([f["reason"] for f in fb], ["unparseable"])
        validate("fallback", fb[0])
        self.assertIn("more than 1024 bytes", fb[0]["details"])
        self.assertEqual(fb[0]["links"], [])
        self.assertEqual(self.read("mailfleet.outbound"), [])
        # The worker is still up.
        self.assertTrue(self.transform.alive())


class TransformRulePolicyTest(harness.TestCase, Pipeline):
    """[rule.NAME] settings transform applies to the mails that rule took."""

    def setUp(self):
        super().setUp()
        self.setup_pipeline(extra="\n[rule.capture]\nrecipients = alerts@iot.localhost\n"
                                  "allowed_recipients = x.com, ops@y.org, alert-*@*.iot.example\n")
        self.start_transform()

    def test_allowed_recipients_sends_to_allowed_and_reports_the_others(self):
        # demo codes a@x.com and b@y.org: x.com is allowed, b@y.org is not.
        iid = self.submit(corpus("demo"))
        ob = self.outbound_for(iid)
        validate("outbound", ob)
        self.assertEqual(ob["recipients"], ["a@x.com"])
        fb = self.fallbacks_for(iid)
        self.assertEqual([f["reason"] for f in fb], ["recipient_not_allowed"])
        validate("fallback", fb[0])
        self.assertEqual(fb[0]["not_allowed"], ["b@y.org"])
        self.assertEqual(fb[0]["sent_to"], ["a@x.com"])
        self.assertEqual(fb[0]["rule"], "capture")
        self.assertIn("b@y.org", fb[0]["found"])

    def test_nothing_allowed_is_a_fallback_only(self):
        raw = (b"From: dev@devices.example\r\nSubject: relay?\r\n\r\n"
               b":Email_Rxers_Code:[victim@gmail.com, other@y.org]:Email_Rxers_Code:\r\nbuy now\r\n")
        iid = self.submit(raw)
        fb = self.fallbacks_for(iid)
        self.assertEqual([f["reason"] for f in fb], ["recipient_not_allowed"])
        validate("fallback", fb[0])
        self.assertEqual(fb[0]["not_allowed"], ["victim@gmail.com", "other@y.org"])
        self.assertNotIn("sent_to", fb[0])
        self.assertNotIn(iid, {r["key"] for r in self.read("mailfleet.outbound")})


class TransformStartupTest(harness.TestCase, Pipeline):
    def test_allowed_recipients_that_are_not_patterns_refuse_start(self):
        self.setup_pipeline(extra="\n[rule.capture]\nrecipients = alerts@iot.localhost\n"
                                  "allowed_recipients = a@b@c.example\n")
        p = self.start_transform(expect_exit=1)
        harness.wait_for(lambda: not p.alive(), timeout=10, what="transform to exit")
        self.assertEqual(p.p.returncode, 1)
        self.assertIn("allowed_recipients", p.output())

    def test_sender_equal_to_capture_address_is_refused(self):
        self.setup_pipeline(sender="Alerts <Alerts@IOT.localhost>")
        p = self.start_transform(expect_exit=1)
        harness.wait_for(lambda: not p.alive(), timeout=10, what="transform to exit")
        self.assertEqual(p.p.returncode, 1)
        self.assertIn("capture address", p.output())

    def test_max_recipients_out_of_range_is_refused(self):
        """The dedupe set of a coded list is sized from max_recipients: -1
        (read as the largest size) or a huge value must not start."""
        for value in ("-1", "0", "1000000"):
            self.setup_pipeline(transform_extra="max_recipients = %s\n" % value)
            p = self.start_transform(expect_exit=1)
            harness.wait_for(lambda: not p.alive(), timeout=10, what="transform to exit")
            self.assertEqual(p.p.returncode, 1, value)
            self.assertIn("max_recipients must be between 1 and 10000", p.output(), value)
            shutil.rmtree(self.path("incoming"))
            shutil.rmtree(self.path("att"))

    def test_forty_megabyte_attachment_in_bounded_memory(self):
        """A 40 MB attachment through the transform core: peak RSS < 64 MB."""
        data = os.urandom(40 * 1024 * 1024)
        b64 = base64.encodebytes(data).replace(b"\n", b"\r\n")
        raw = (b"From: a@b.example\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
               b":Email_Rxers_Code:[a@x.com]:Email_Rxers_Code:\r\n--B\r\n"
               b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"\r\n--B--\r\n")
        path = self.path("big.eml")
        with open(path, "wb") as f:
            f.write(raw)
        store = self.path("att")
        os.makedirs(store)
        r = subprocess.run(["/usr/bin/time", "-v", TOOL, "--store", store, "--key", "t:" + TOKEN_SECRET, path],
                           capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        out = json.loads(r.stdout.decode().splitlines()[0])
        att = out["result"]["attachments"][0]
        self.assertEqual(att["size"], len(data))
        self.assertEqual(att["sha256"], hashlib.sha256(data).hexdigest())
        rss_kb = int([l for l in r.stderr.decode().splitlines() if "Maximum resident set size" in l][0].split()[-1])
        self.assertLess(rss_kb, 64 * 1024, "peak RSS %d KB" % rss_kb)
