"""Helpers for the end-to-end tests (DESIGN.md §1, §6, §10): a whole fleet
in a test dir, either `mailfleet run` (every worker in one process) or one
process per worker, on the local queue or against a real 1-node Apache
Kafka cluster (ops/kafka/cluster.py); real clients in front (openssl s_client, smtplib) and
real peers behind (Postfix's smtp-sink, curl, kcat).  Records read back are
validated against schemas/*.json."""
import base64
import email
import email.policy
import hashlib
import json
import os
import queue
import re
import subprocess
import threading
import time
import urllib.request
import uuid
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import jsonschema

import harness

MFTOOL = os.path.join(harness.TOOLS, "mftool")
SCHEMAS = os.path.join(harness.ROOT, "schemas")
MARKER = ":Email_Rxers_Code:"
USER, PASSWORD = "device", "e2e-device-password"
CAPTURE = "alerts@iot.localhost"
RETRY_TIERS = ("1s", "2s")
# Kafka mode: every topic of ops/k8s/base/topics.yaml (DESIGN.md §5), as
# Strimzi creates them, plus this fleet's short retry tiers.
KAFKA_RETRY_TOPICS = tuple("mailfleet.outbound.retry.%s:12" % t for t in RETRY_TIERS)
WORKERS = ("feedback", "monitor", "ingest", "transform", "links", "send")

_validators = {}


def validate(kind, doc):
    """Validates doc against schemas/<kind>.v1.json (2020-12, formats checked)."""
    v = _validators.get(kind)
    if v is None:
        with open(os.path.join(SCHEMAS, kind + ".v1.json")) as f:
            schema = json.load(f)
        v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        _validators[kind] = v
    v.validate(doc)
    return doc


def uuid7():
    ms = int(time.time() * 1000)
    r = uuid.uuid4().int
    v = (ms << 80) | (0x7 << 76) | ((r >> 64) & 0xFFF) << 64 | (0b10 << 62) | (r & ((1 << 62) - 1))
    return str(uuid.UUID(int=v))


def sha256(b):
    return hashlib.sha256(b).hexdigest()


class Fleet:
    """The config and processes of one fleet in test.dir.

    mode: "local" (durable local queue) or "kafka" (a cluster started here).
    per_worker: one `mailfleet <worker>` process per worker instead of
    `mailfleet run`.  transport: the [send] transport (default: outbox dir).
    sections: extra INI text appended (e.g. [alarm.x] sections); settings:
    {section: {key: value}} merged into the generated sections.  topics
    (Kafka mode): "name:partitions[:k=v,...]" specs that replace the
    manifest's topic of that name (e.g. fewer partitions).  kafka_nodes:
    nodes of the Kafka cluster (3: replication 3 and min.insync.replicas 2
    for the manifest's topics, as in production)."""

    def __init__(self, test, mode="local", per_worker=False, transport=None, workers=WORKERS, sections="",
                 settings=None, topics=(), kafka_nodes=1):
        self.test = test
        self.mode = mode
        self.per_worker = per_worker
        self.workers = workers
        self.procs = {}
        self.restarts = {}
        os.chmod(test.dir, 0o755)   # smtp-sink runs as nobody and writes below here
        if mode == "kafka":
            # a topic named in topics replaces the manifest's (cluster.create_topics)
            self.kafka, self.bootstrap = harness.start_kafka(test, nodes=kafka_nodes, manifest=True,
                                                             topics=list(topics) + list(KAFKA_RETRY_TOPICS))
            self.bus = "kafka:" + self.bootstrap
        else:
            self.bus = "local:" + test.path("queue")
        p = harness.free_port
        self.smtp_port, self.smtps_port = p(), p()
        self.http_port, self.public_port, self.feedback_public = p(), p(), p()
        self.metrics = {w: p() for w in WORKERS}
        self.outbox = test.path("outbox")
        self.attachments = test.path("store", "attachments")
        self.users = test.path("users")
        open(self.users, "w").close()
        conf = {
            "mailfleet": {
                "bus": self.bus,
                "store_incoming": "file:" + test.path("store", "incoming"),
                "store_attachments": "file:" + self.attachments,
                "state_dir": test.path("state"), "log_level": "info",
                "http_listen": "127.0.0.1:%d" % self.http_port,
                "public_listen": "127.0.0.1:%d" % self.public_port,
                "public_base_url": "http://127.0.0.1:%d" % self.public_port,
                "token_keys": "e2e1:" + "6b" * 32,
            },
            "ingest": {
                "listen": "127.0.0.1:%d" % self.smtp_port, "listen_tls": "127.0.0.1:%d" % self.smtps_port,
                "metrics_listen": "127.0.0.1:%d" % self.metrics["ingest"], "hostname": "mx.e2e.test",
                "tls_cert": test.path("tls", "cert.pem"), "tls_key": test.path("tls", "key.pem"),
                "tls_generate": "true", "users_file": self.users, "auth_delay": "50ms",
                "auth_delay_max": "200ms", "drain_timeout": "2s", "max_connections_per_ip": "200",
            },
            "transform": {
                "metrics_listen": "127.0.0.1:%d" % self.metrics["transform"],
                "sender": "mailfleet <noreply@iot.localhost>", "capture_addresses": CAPTURE,
                "retries": "2", "retry_backoff": "100ms", "tmp_dir": test.dir,
            },
            "links": {"metrics_listen": "127.0.0.1:%d" % self.metrics["links"],
                      "public_listen": "127.0.0.1:%d" % self.public_port, "revocation_poll": "100ms"},
            "send": {
                "metrics_listen": "127.0.0.1:%d" % self.metrics["send"],
                "transport": transport or "outbox:" + self.outbox, "smtp_starttls": "off",
                "retry_tiers": ",".join(RETRY_TIERS), "connect_timeout": "2s", "timeout": "10s",
            },
            "feedback": {"metrics_listen": "127.0.0.1:%d" % self.metrics["feedback"],
                         "public_listen": "127.0.0.1:%d" % self.feedback_public},
            "monitor": {"metrics_listen": "127.0.0.1:%d" % self.metrics["monitor"], "period": "1s",
                        "sample_interval": "200ms", "renotify_interval": "0"},
        }
        for sec, kv in (settings or {}).items():
            conf.setdefault(sec, {}).update(kv)
        text = "".join("[%s]\n%s\n" % (sec, "".join("%s = %s\n" % i for i in kv.items()))
                       for sec, kv in conf.items())
        text += """
[rule.capture]
recipients = %s
action = capture

[rule.bounces]
recipients = bounce+*@iot.localhost
action = feedback
""" % CAPTURE
        self.cfg = test.write("mailfleet.ini", text + sections)
        test.mailfleet("config", "check", "-c", self.cfg)
        test.mailfleet("users", "add", USER, "-c", self.cfg, input=PASSWORD + "\n")

    # ---- processes ----
    def start(self):
        if self.per_worker:
            for w in self.workers:
                self.start_worker(w)
        else:
            p = self.test.start([harness.MAILFLEET, "run", "-c", self.cfg], "run")
            self.procs["run"] = p
            harness.wait_port(self.http_port, proc=p.p, timeout=30)
            self.wait_ready(self.http_port, p)
        harness.wait_port(self.smtp_port, timeout=30)
        return self

    def start_worker(self, w):
        n = self.restarts[w] = self.restarts.get(w, -1) + 1
        p = self.test.start([harness.MAILFLEET, w, "-c", self.cfg], w if n == 0 else "%s.%d" % (w, n))
        self.procs[w] = p
        harness.wait_port(self.metrics[w], proc=p.p, timeout=30)
        self.wait_ready(self.metrics[w], p)
        return p

    def wait_ready(self, port, proc, timeout=60):
        def ready():
            if not proc.alive():
                raise AssertionError("worker exited:\n" + proc.output()[-3000:])
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        harness.wait_for(ready, timeout=timeout, interval=0.1, what="/readyz on %d" % port)

    def alive(self):
        return all(p.alive() for p in self.procs.values())

    def logs(self):
        return "\n".join("== %s ==\n%s" % (n, p.output()[-3000:]) for n, p in self.procs.items())

    def monitor_port(self):
        return self.metrics["monitor"] if self.per_worker else self.http_port

    # ---- topics ----
    def read(self, topic):
        """[{key, value, headers}] of every record of topic (values as text)."""
        if self.mode == "kafka":
            r = subprocess.run(["kcat", "-C", "-b", self.bootstrap, "-t", topic, "-e", "-q", "-J"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise AssertionError("kcat %s: %s" % (topic, r.stderr))
            out = []
            for line in r.stdout.splitlines():
                j = json.loads(line)
                h = j.get("headers") or []
                out.append({"key": j.get("key"), "value": j.get("payload"),
                            "headers": dict(zip(h[0::2], h[1::2]))})
            return out
        r = subprocess.run([MFTOOL, "dump", self.bus, topic], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            return []    # nobody wrote the topic yet
        return [{"key": None, "value": line, "headers": {}} for line in r.stdout.splitlines() if line.strip()]

    def docs(self, topic, kind):
        """Values of topic as JSON, each validated against schemas/<kind>.v1.json."""
        return [validate(kind, json.loads(r["value"])) for r in self.read(topic)]

    def events(self):
        return self.docs("mailfleet.events", "event")

    def wait_inbound(self, n=1, timeout=30):
        """The first n inbound.v1 records (in Kafka mode ingest forwards from
        its local spool after the 250, so they appear a little later)."""
        return harness.wait_for(lambda: (lambda d: d if len(d) >= n else None)(self.docs("mailfleet.inbound",
                                                                                          "inbound")),
                                timeout=timeout, interval=0.2, what="%d inbound records" % n)

    def dlq_list(self):
        out = self.test.mailfleet("dlq", "list", "-c", self.cfg, timeout=60).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def alarms(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/alarms" % self.monitor_port(), timeout=5) as r:
            return {a["AlarmName"]: a["StateValue"] for a in json.load(r)}

    # ---- delivered mail ----
    def outbox_mail(self, rcpt):
        d = os.path.join(self.outbox, rcpt)
        if not os.path.isdir(d):
            return []
        out = []
        for n in sorted(os.listdir(d)):
            if n.endswith(".eml"):
                with open(os.path.join(d, n), "rb") as f:
                    out.append(f.read())
        return out


class Sink:
    """Postfix's smtp-sink on a free port, dumping each transaction to a file."""

    def __init__(self, test, name="sink", backlog=1000):
        self.port = harness.free_port()
        self.dir = test.path(name + "-dir")
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o777)
        self.proc = test.start(["smtp-sink", "-u", "nobody", "-d", self.dir + "/m.", "127.0.0.1:%d" % self.port,
                                str(backlog)], name)
        harness.wait_port(self.port, proc=self.proc.p)
        self._cache = {}

    def transactions(self, with_mtime=False):
        """[(recipients, message bytes)], one per dumped transaction; with
        with_mtime, (recipients, message, when the sink wrote it)."""
        out = []
        for name in sorted(os.listdir(self.dir)):
            got = self._cache.get(name)
            if got is None:
                path = os.path.join(self.dir, name)
                with open(path, "rb") as f:
                    data = f.read()
                mtime = os.stat(path).st_mtime
                m = re.search(rb"\nReceived: [^\n]*\n\t[^\n]*\n\t[^\n]*\n", data)
                if not m or not data.endswith(b"\n"):
                    continue    # still being written
                rcpts = [r.decode() for r in re.findall(rb"^X-Rcpt-Args: <([^>]*)>", data[:m.start() + 1], re.M)]
                got = (rcpts, data[m.end():], mtime)
                self._cache[name] = got
            out.append(got if with_mtime else got[:2])
        return out

    def mail_for(self, rcpt):
        return [msg for rcpts, msg in self.transactions() if rcpt in rcpts]


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def text_of(raw):
    """Decoded text of every text/* part of a delivered mail."""
    m = parse(raw)
    return "\n".join(p.get_content() for p in m.walk() if p.get_content_maintype() == "text")


def links_in(raw, public_port):
    return sorted(set(re.findall(r"http://127\.0\.0\.1:%d/a/[A-Za-z0-9._~%%-]+" % public_port, text_of(raw))))


def curl(test, url):
    """Downloads url with curl; returns (http code, bytes)."""
    out = test.path("dl-%d" % time.monotonic_ns())
    r = subprocess.run(["curl", "-sS", "-o", out, "-w", "%{http_code}", url], capture_output=True, text=True,
                       timeout=30)
    data = b""
    if os.path.exists(out):
        with open(out, "rb") as f:
            data = f.read()
        os.unlink(out)
    return int(r.stdout or 0), data


def reference_message(recipients, attachment, subject="Sensor 7: over temperature", mail_from="sensor7@devices.example",
                      coded=True):
    """multipart/mixed: a text part carrying the coded recipient list, then a
    base64 attachment."""
    m = MIMEMultipart("mixed")
    m["From"] = mail_from
    m["To"] = CAPTURE
    m["Subject"] = subject
    m["Message-ID"] = "<%s@devices.example>" % sha256(subject.encode() + attachment)[:24]
    text = "Sensor 7 reports 81.5 C at %s.\n" % time.strftime("%H:%M:%S")
    if coded:
        text += "%s[%s]%s\n" % (MARKER, ", ".join(recipients), MARKER)
    text += "Diagnostics attached.\n"
    m.attach(MIMEText(text, "plain", "utf-8"))
    a = MIMEApplication(attachment, "octet-stream")   # base64 by default
    a.add_header("Content-Disposition", "attachment", filename="diag-sensor7.bin")
    m.attach(a)
    return m.as_bytes()


class SClient:
    """`openssl s_client -starttls smtp -crlf -quiet` driven line by line:
    lines go to its stdin, replies are read from its stdout."""

    def __init__(self, test, port, timeout=20.0):
        self.timeout = timeout
        self.p = subprocess.Popen(["openssl", "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % port,
                                   "-crlf", "-quiet", "-nocommands"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        test.addCleanup(self.close)
        self.q = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            self.q.put(line.decode("utf-8", "replace").rstrip("\r\n"))
        self.q.put(None)

    def reply(self):
        lines = []
        while True:
            line = self.q.get(timeout=self.timeout)
            if line is None:
                raise EOFError("s_client ended; so far %r; stderr %s" % (lines, self.p.stderr.read()[-500:]))
            if not re.match(r"^\d{3}[ -]", line):
                continue    # s_client's own notes
            lines.append(line)
            if line[3] == " ":
                return int(line[:3]), lines

    def send(self, line):
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def cmd(self, line, expect):
        self.send(line)
        code, lines = self.reply()
        if code != expect:
            raise AssertionError("%s -> %s (expected %d)" % (line.split(" ")[0], lines, expect))
        return lines

    def submit(self, mail_from, rcpts, raw):
        """EHLO, AUTH LOGIN, one transaction, QUIT; returns the 250 line after DATA."""
        self.cmd("EHLO e2e.client.test", 250)
        self.cmd("AUTH LOGIN", 334)
        self.cmd(base64.b64encode(USER.encode()).decode(), 334)
        self.cmd(base64.b64encode(PASSWORD.encode()).decode(), 235)
        self.cmd("MAIL FROM:<%s>" % mail_from, 250)
        for r in rcpts:
            self.cmd("RCPT TO:<%s>" % r, 250)
        self.cmd("DATA", 354)
        for line in raw.decode().replace("\r\n", "\n").split("\n"):
            self.send("." + line if line.startswith(".") else line)
        last = self.cmd(".", 250)
        self.cmd("QUIT", 221)
        return last[-1]

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                f.close()
            except OSError:
                pass


def submit_with_openssl(test, fleet, raw, mail_from="sensor7@devices.example"):
    return SClient(test, fleet.smtp_port).submit(mail_from, [CAPTURE], raw)


REFERENCE_RCPTS = ["a@x.example.com", "b@y.example.org", "c@z.example.net"]


class Scenarios:
    """The end-to-end scenarios (DESIGN.md §6, §7), shared by the local and the Kafka
    test classes (MODE, PER_WORKER; SINK: deliver into smtp-sink instead of
    the outbox dir)."""
    MODE = "local"
    PER_WORKER = False
    SINK = False
    DELIVERY_TIMEOUT = 60

    def fleet(self, sink=None, **kw):
        if sink is not None:
            kw["transport"] = "smtp://127.0.0.1:%d" % sink.port
        self.f = Fleet(self, self.MODE, self.PER_WORKER, **kw)
        self.sink = sink
        return self.f.start()

    def delivered(self, rcpt):
        return self.sink.mail_for(rcpt) if self.sink else self.f.outbox_mail(rcpt)

    def delivered_subject(self, rcpt, subject):
        return [m for m in self.delivered(rcpt) if parse(m)["Subject"] == subject]

    def wait_delivered(self, rcpts, subject):
        for r in rcpts:
            harness.wait_for(lambda: self.delivered_subject(r, subject) or (not self.f.alive() and self.fail(
                self.f.logs())), timeout=self.DELIVERY_TIMEOUT, interval=0.2, what="delivery to " + r)

    def events_for(self, pred):
        return [e for e in self.f.events() if pred(e)]

    def check_reference_delivery(self, rcpts, subject, attachment):
        """Each of rcpts got exactly one mail of subject, without the code,
        whose link serves the attachment's bytes."""
        self.wait_delivered(rcpts, subject)
        time.sleep(1.5)    # a duplicate would arrive now
        for r in rcpts:
            mails = self.delivered_subject(r, subject)
            self.assertEqual(len(mails), 1, r)
            raw = mails[0]
            self.assertNotIn(b"Email_Rxers_Code", raw)
            text = text_of(raw)
            self.assertNotIn("Email_Rxers_Code", text)
            self.assertNotIn("[" + ", ".join(rcpts), text)
            self.assertIn("Sensor 7 reports", text)
            self.assertEqual(parse(raw)["Auto-Submitted"], "auto-generated")
            links = links_in(raw, self.f.public_port)
            self.assertEqual(len(links), 1, text)
            code, data = curl(self, links[0])
            self.assertEqual(code, 200, links[0])
            self.assertEqual(sha256(data), sha256(attachment))
        # outbound.v1 and the Delivery events validate; one Delivery per recipient
        obs = [o for o in self.f.docs("mailfleet.outbound", "outbound") if o.get("subject", subject) == subject]
        self.assertTrue(obs)
        deliveries = self.events_for(lambda e: e["eventType"] == "Delivery")
        got = sorted(r for e in deliveries for r in e["delivery"]["recipients"]
                     if e["mail"]["messageId"] in {o["id"] for o in obs})
        self.assertEqual(got, sorted(rcpts))

    # ---- scenarios ----
    def scenario_reference(self):
        attachment = os.urandom(40 * 1024 + 17)
        subject = "reference %s" % self.MODE
        raw = reference_message(REFERENCE_RCPTS, attachment, subject=subject)
        last = submit_with_openssl(self, self.f, raw)
        self.assertRegex(last, r"^250 2\.\d\.\d ")
        inbound = self.f.wait_inbound()
        self.assertEqual(len(inbound), 1)
        self.assertEqual(inbound[0]["envelope"]["rcpt_to"], [CAPTURE])
        if self.MODE == "kafka":
            # ingest made it durable in its local spool first, then forwarded it
            spool = "local:" + self.path("state", "spool")
            out = subprocess.run([MFTOOL, "dump", spool, "ingest.spool"], capture_output=True, text=True,
                                 timeout=30).stdout
            self.assertEqual([validate("inbound", json.loads(v))["id"] for v in out.splitlines()],
                             [inbound[0]["id"]])
            url = "http://127.0.0.1:%d/metrics" % self.f.metrics["ingest"]
            harness.wait_for(lambda: b"\nmailfleet_spool_backlog_records 0\n" in urllib.request.urlopen(
                url, timeout=5).read(), timeout=10, what="ingest's spool forwarded")
        self.check_reference_delivery(REFERENCE_RCPTS, subject, attachment)
        self.assertEqual(self.f.read("mailfleet.fallback"), [])
        self.assertTrue(self.f.alive(), self.f.logs())

    def scenario_no_coded_list(self):
        subject = "no code %s" % self.MODE
        raw = reference_message(REFERENCE_RCPTS, os.urandom(2000), subject=subject, coded=False)
        submit_with_openssl(self, self.f, raw)
        fb = harness.wait_for(lambda: [d for d in self.f.docs("mailfleet.fallback", "fallback")
                                       if d.get("subject") == subject], timeout=self.DELIVERY_TIMEOUT,
                              what="the fallback record")
        self.assertEqual(len(fb), 1)
        self.assertEqual(fb[0]["reason"], "no_recipients")
        self.assertEqual(fb[0]["sender"], "sensor7@devices.example")
        inbound = self.f.wait_inbound()
        self.assertEqual(fb[0]["inbound_id"], inbound[0]["id"])
        time.sleep(2)
        self.assertEqual(self.f.read("mailfleet.outbound"), [])
        for r in REFERENCE_RCPTS:
            self.assertEqual(self.delivered(r), [])
        if self.sink:
            self.assertEqual(self.sink.transactions(), [])
        else:
            self.assertFalse(os.path.exists(self.f.outbox) and os.listdir(self.f.outbox))
        self.assertEqual(self.events_for(lambda e: e["eventType"] == "Delivery"), [])

    def scenario_suppressed(self):
        gone = REFERENCE_RCPTS[1]
        self.mailfleet("suppression", "add", gone, "--reason", "MANUAL", "-c", self.f.cfg, timeout=60)
        sup = self.f.docs("mailfleet.suppression", "suppression")
        self.assertEqual([s["emailAddress"] for s in sup], [gone])
        time.sleep(2 if self.MODE == "local" else 4)    # send's copy polls every 200 ms
        attachment = os.urandom(5000)
        subject = "suppressed %s" % self.MODE
        submit_with_openssl(self, self.f, reference_message(REFERENCE_RCPTS, attachment, subject=subject))
        others = [r for r in REFERENCE_RCPTS if r != gone]
        ev = harness.wait_for(lambda: self.events_for(lambda e: e["eventType"] == "Suppressed"),
                              timeout=self.DELIVERY_TIMEOUT, what="a Suppressed event")
        self.assertEqual(len(ev), 1)
        self.assertEqual([(s["emailAddress"], s["reason"]) for s in ev[0]["suppressed"]["suppressedRecipients"]],
                         [(gone, "MANUAL")])
        self.check_reference_delivery(others, subject, attachment)
        self.assertEqual(self.delivered(gone), [])

    def transform_retries(self, outcome):
        """transform's loop: records of that outcome so far (its metrics)."""
        port = self.f.metrics["transform"] if self.f.per_worker else self.f.http_port
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return 0
        m = re.search(r'mailfleet_loop_records_total\{[^}]*worker="transform"[^}]*outcome="%s"[^}]*\} (\d+)'
                      % outcome, text)
        return int(m.group(1)) if m else 0

    def scenario_poison_dlq_alarm_replay(self):
        # before any failure: OK, or INSUFFICIENT_DATA while no DLQ topic exists
        time.sleep(2.5)
        self.assertIn(self.f.alarms().get("inbound-dlq-depth"), ("OK", "INSUFFICIENT_DATA"))
        # 1. A store fault is the machine's, not the mail's: the attachments
        # root becomes a regular file (every mkdir below it fails with
        # ENOTDIR, for root too).  The mail is retried, never dead-lettered,
        # and goes out by itself once the fault is gone.
        saved = self.f.attachments + ".saved"
        os.rename(self.f.attachments, saved)
        with open(self.f.attachments, "w") as fh:
            fh.write("not a directory\n")
        attachment = os.urandom(30000)
        subject = "store fault %s" % self.MODE
        raw = reference_message(REFERENCE_RCPTS, attachment, subject=subject)
        submit_with_openssl(self, self.f, raw)
        inbound = self.f.wait_inbound()
        harness.wait_for(lambda: self.transform_retries("environment") >= 3, timeout=self.DELIVERY_TIMEOUT,
                         what="transform retrying the store")
        self.assertEqual(self.f.dlq_list(), [])
        self.assertEqual(self.f.read("mailfleet.outbound"), [])
        os.unlink(self.f.attachments)
        os.rename(saved, self.f.attachments)
        self.check_reference_delivery(REFERENCE_RCPTS, subject, attachment)
        self.assertEqual(self.f.dlq_list(), [])
        # 2. A poison record: an inbound record whose raw mail is not in the
        # store (the record's fault): retried twice, then dead-lettered with
        # its reason, the alarm fires; the operator puts the mail back and
        # replays it.
        attachment = os.urandom(20000)
        subject = "poison %s" % self.MODE
        raw = reference_message(REFERENCE_RCPTS, attachment, subject=subject)
        rec = dict(inbound[0])
        rec["id"] = uuid7()
        key = "incoming/poison/%s.eml" % rec["id"]
        rec["store"] = dict(rec["store"], key=key, size=len(raw), sha256=sha256(raw))
        recfile = self.path("poison.json")
        with open(recfile, "w") as fh:
            json.dump(rec, fh)
        subprocess.run([MFTOOL, "put", self.f.bus, "mailfleet.inbound", rec["id"], recfile], check=True, timeout=60)
        dlq = harness.wait_for(self.f.dlq_list, timeout=self.DELIVERY_TIMEOUT, what="a DLQ record")
        self.assertEqual(len(dlq), 1)
        self.assertEqual(dlq[0]["key"], rec["id"])
        # the DLQ keeps the original inbound.v1 value
        self.assertEqual([d["id"] for d in self.f.docs("mailfleet.inbound.dlq", "inbound")], [rec["id"]])
        h = dlq[0]["headers"]
        self.assertEqual(h["mf.error.class"], "store")
        self.assertEqual(h["mf.source.topic"], "mailfleet.inbound")
        self.assertEqual(h["mf.attempts"], "2")
        t0 = time.time()
        harness.wait_for(lambda: self.f.alarms().get("inbound-dlq-depth") == "ALARM", timeout=10,
                         what="inbound-dlq-depth ALARM")
        self.assertLess(time.time() - t0, 3)    # two periods of 1 s
        alarm = harness.wait_for(lambda: [a for a in self.f.docs("mailfleet.alarms", "alarm")
                                          if a["AlarmName"] == "inbound-dlq-depth" and a["NewStateValue"] == "ALARM"],
                                 timeout=10, what="the alarm record")
        self.assertEqual(alarm[0]["Trigger"]["Threshold"], 0)
        # fault removed (the raw mail put where the record says), then the operator replays
        path = os.path.join(self.incoming_root(), key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(raw)
        out = self.mailfleet("dlq", "replay", "-c", self.f.cfg, timeout=60).stdout
        self.assertIn("-> mailfleet.inbound", out)
        self.check_reference_delivery(REFERENCE_RCPTS, subject, attachment)
        harness.wait_for(lambda: self.f.alarms().get("inbound-dlq-depth") == "OK", timeout=10,
                         what="inbound-dlq-depth back to OK")
        self.assertEqual(self.f.dlq_list(), [])
        self.assertTrue(self.f.alive(), self.f.logs())

    def incoming_root(self):
        return self.path("store", "incoming")


POISON_SECTIONS = """
[alarm.inbound-dlq-depth]
metric = DLQDepth
topic = mailfleet.inbound.dlq
group = dlq-operator
threshold = 0
description = e2e: any record in the inbound DLQ
"""
