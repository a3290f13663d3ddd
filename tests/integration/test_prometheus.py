"""A real Prometheus scrapes every worker (issue 7, last "Done when" item).

The six workers run as separate processes (`mailfleet ingest|transform|send|
feedback|monitor|links -c FILE`), each with its own metrics_listen, on one
local bus.  Debian's Prometheus (2.42) is started with static targets for all
six and a 1 s scrape interval; the test waits until its /api/v1/targets shows
every target up, checks `up` through /api/v1/query, queries one real metric of
each worker after one mail went through ingest -> transform -> send, and runs
`promtool check metrics` on each worker's /metrics text."""
import json
import os
import shutil
import smtplib
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import harness

WORKERS = ("ingest", "transform", "send", "feedback", "monitor", "links")


def http_get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


class PrometheusTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.met = {w: harness.free_port() for w in WORKERS}
        self.smtp = harness.free_port()
        self.pub = {"feedback": harness.free_port(), "links": harness.free_port()}
        d = self.dir
        self.cfg = self.write("mailfleet.ini", f"""[mailfleet]
bus = local:{d}/queue
store_incoming = file:{d}/store/incoming
store_attachments = file:{d}/store/attachments
state_dir = {d}/state
log_level = info
public_base_url = http://127.0.0.1:{self.pub["links"]}
token_keys = t1:{"5a" * 32}

[ingest]
listen = 127.0.0.1:{self.smtp}
listen_tls =
metrics_listen = 127.0.0.1:{self.met["ingest"]}
hostname = mailfleet.localhost
tls_cert = {d}/tls/cert.pem
tls_key = {d}/tls/key.pem
tls_generate = true

[rule.capture]
recipients = alerts@iot.localhost
action = capture

[transform]
metrics_listen = 127.0.0.1:{self.met["transform"]}
capture_addresses = alerts@iot.localhost

[send]
metrics_listen = 127.0.0.1:{self.met["send"]}
transport = outbox:{d}/outbox

[feedback]
metrics_listen = 127.0.0.1:{self.met["feedback"]}
public_listen = 127.0.0.1:{self.pub["feedback"]}

[monitor]
metrics_listen = 127.0.0.1:{self.met["monitor"]}
sample_interval = 1s
period = 2s

[links]
metrics_listen = 127.0.0.1:{self.met["links"]}
public_listen = 127.0.0.1:{self.pub["links"]}
""")

    def metrics_url(self, w):
        return "http://127.0.0.1:%d/metrics" % self.met[w]

    def query(self, expr):
        st, body = http_get("http://127.0.0.1:%d/api/v1/query?%s"
                            % (self.prom_port, urllib.parse.urlencode({"query": expr})))
        self.assertEqual(st, 200, body)
        doc = json.loads(body)
        self.assertEqual(doc["status"], "success", body)
        return doc["data"]["result"]

    def test_prometheus_scrapes_every_worker(self):
        procs = {}
        for w in WORKERS:
            procs[w] = self.start([harness.MAILFLEET, w, "-c", self.cfg], w)
        for w in WORKERS:
            harness.wait_port(self.met[w], proc=procs[w].p)
        harness.wait_port(self.smtp, proc=procs["ingest"].p)

        # one mail through ingest -> transform -> send (outbox), and one SMTP
        # session that only says EHLO: real counters move in every worker
        body = ("From: sensor-1@sensors.example\r\nTo: alerts@iot.localhost\r\nSubject: metrics\r\n"
                "Message-ID: <metrics-1@sensors.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
                ":Email_Rxers_Code:[ops@example.com]:Email_Rxers_Code:\r\nhello\r\n")
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=10) as s:
            s.ehlo("sensor-1.sensors.example")
            s.sendmail("sensor-1@sensors.example", ["alerts@iot.localhost"], body.encode())
        # the links gateway answers a forged token with 403 (a counted request)
        st, _ = http_get("http://127.0.0.1:%d/a/not-a-token" % self.pub["links"])
        self.assertEqual(st, 403)

        # promtool lints each worker's exposition text as it is served
        for w in WORKERS:
            st, text = http_get(self.metrics_url(w))
            self.assertEqual(st, 200, w)
            self.assertIn("# TYPE ", text, w)
            r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 0, "%s: promtool check metrics:\n%s%s" % (w, r.stdout, r.stderr))
            self.assertEqual(r.stdout.strip() + r.stderr.strip(), "", w)

        # Prometheus with static targets for all six
        self.prom_port = harness.free_port()
        targets = "\n".join("      - targets: ['127.0.0.1:%d']\n        labels: {component: %s}" % (self.met[w], w)
                            for w in WORKERS)
        prom_cfg = self.write("prometheus.yml", f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: mailfleet
    static_configs:
{targets}
""")
        r = subprocess.run(["promtool", "check", "config", prom_cfg], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        prom = self.start(["prometheus", "--config.file=" + prom_cfg, "--storage.tsdb.path=" + self.path("tsdb"),
                           "--web.listen-address=127.0.0.1:%d" % self.prom_port, "--log.level=warn"], "prometheus")
        harness.wait_port(self.prom_port, timeout=30, proc=prom.p)

        def all_up():
            st, body = http_get("http://127.0.0.1:%d/api/v1/targets?state=active" % self.prom_port)
            if st != 200:
                return None
            active = json.loads(body)["data"]["activeTargets"]
            if len(active) == len(WORKERS) and all(t["health"] == "up" for t in active):
                return active
            return None
        try:
            active = harness.wait_for(all_up, timeout=30, interval=0.5, what="every target up")
        except TimeoutError:
            self.fail("targets: %s\nprometheus log:\n%s" % (
                http_get("http://127.0.0.1:%d/api/v1/targets" % self.prom_port)[1], prom.output()[-3000:]))
        self.assertEqual(sorted(t["labels"]["component"] for t in active), sorted(WORKERS))
        for t in active:
            self.assertEqual(t["lastError"], "", t)

        def up_series():
            res = self.query("up")
            return res if len(res) == len(WORKERS) else None
        up = harness.wait_for(up_series, timeout=15, interval=0.5, what="six `up` series")
        self.assertEqual(sorted(s["metric"]["component"] for s in up), sorted(WORKERS))
        for s in up:
            self.assertEqual(s["value"][1], "1", s)

        # one real mailfleet metric of each worker, as Prometheus stored it
        checks = {
            "ingest": 'mailfleet_ingest_connections_total{component="ingest"} >= 1',
            "transform": 'sum(mailfleet_transform_messages_total{component="transform"}) >= 1',
            "send": 'mailfleet_send_messages_total{component="send",result="delivered"} >= 1',
            "feedback": 'mailfleet_feedback_suppressions_total{component="feedback"} == 0',
            "monitor": 'mailfleet_topic_backlog_records{component="monitor",topic="mailfleet.inbound"}',
            "links": 'sum(mailfleet_links_requests_total{component="links"}) >= 1',
        }
        for w, expr in checks.items():
            try:
                harness.wait_for(lambda: self.query(expr), timeout=15, interval=0.5, what=expr)
            except TimeoutError:
                st, text = http_get(self.metrics_url(w))
                self.fail("%s: no result for %s\n/metrics:\n%s" % (w, expr, text[-3000:]))
        for w in WORKERS:
            self.assertTrue(procs[w].alive(), "%s exited:\n%s" % (w, procs[w].output()[-2000:]))
        self.assertEqual(prom.stop(10), 0)
        for w in reversed(WORKERS):
            self.assertEqual(procs[w].stop(10), 0, w)
        shutil.rmtree(self.path("tsdb"), ignore_errors=True)
