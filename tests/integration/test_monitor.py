"""monitor worker on both backends, with short periods: backlog age and
volume drive alarms to ALARM within two periods and back to OK once the
consumer catches up; 51 DLQ records raise inbound-dlq-depth.  Every alarm
record validates against schemas/alarm.v1.json and is read back as an SRE
dashboard would (kcat in Kafka mode, on a real 1-node Apache Kafka
cluster).  The monitor's /metrics passes
`promtool check metrics`.

Inbound records are produced with build/tools/mftool (the same bus code
ingest uses); "transform catching up" is its consumer group's offset moving
to the end, which is all the monitor observes of it."""
import json
import os
import subprocess
import time
import urllib.request

import jsonschema
import harness

MFTOOL = os.path.join(harness.TOOLS, "mftool")
SCHEMA = json.load(open(os.path.join(harness.ROOT, "schemas", "alarm.v1.json")))
PERIOD = 2.0
TOPICS = ["mailfleet.inbound", "mailfleet.inbound.dlq", "mailfleet.outbound", "mailfleet.outbound.dlq",
          "mailfleet.events", "mailfleet.alarms"]


class MonitorBase:
    def start_monitor(self, bus):
        self.bus = bus
        self.met = harness.free_port()
        self.cfg = self.write("mf.ini", f"""[mailfleet]
bus = {bus}
state_dir = {self.path("state")}
store_incoming = file:{self.path("incoming")}
store_attachments = file:{self.path("attachments")}
[monitor]
metrics_listen = 127.0.0.1:{self.met}
period = {int(PERIOD * 1000)}ms
sample_interval = 200ms
recent_window = 8s
renotify_interval = 0
[alarm.inbound-oldest-age]
metric = OldestAgeSeconds
topic = mailfleet.inbound
group = transform
threshold = 2
description = test: the oldest inbound record waits longer than 2 s
""")
        self.proc = self.start([harness.MAILFLEET, "monitor", "-c", self.cfg], "monitor")
        harness.wait_port(self.met, proc=self.proc.p)

    def states(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/alarms" % self.met, timeout=5) as r:
            return {a["AlarmName"]: a["StateValue"] for a in json.load(r)}

    def wait_state(self, name, state, timeout):
        return harness.wait_for(lambda: self.states().get(name) == state, timeout=timeout,
                                interval=0.1, what="%s -> %s" % (name, state))

    def put(self, topic, n):
        v = self.write("v.json", '{"schema":"test"}')
        subprocess.check_call([MFTOOL, "put-n", self.bus, topic, str(n), v])

    def alarm_records(self):
        out = subprocess.check_output([MFTOOL, "dump", self.bus, "mailfleet.alarms"], text=True)
        return [json.loads(l) for l in out.splitlines() if l.strip()]

    def scenario(self):
        # before any data: nothing waiting -> OK after the first period
        self.wait_state("inbound-dlq-depth", "OK", 2 * PERIOD + 2)
        t0 = time.time()
        self.put("mailfleet.inbound", 200)           # transform is not consuming
        self.wait_state("inbound-received-5m", "ALARM", 2 * PERIOD + 1)
        self.assertLessEqual(time.time() - t0, 2 * PERIOD + 1)
        # the age crosses 2 s two seconds later; then within two periods
        self.wait_state("inbound-oldest-age", "ALARM", 2 + 2 * PERIOD + 1)
        self.assertLessEqual(time.time() - t0, 2 + 2 * PERIOD + 1)

        # transform catches up: age back to OK within two periods; the volume
        # alarm once the 8 s window has passed
        subprocess.check_call([MFTOOL, "commit", self.bus, "transform", "mailfleet.inbound"])
        self.wait_state("inbound-oldest-age", "OK", 2 * PERIOD + 1)
        self.wait_state("inbound-received-5m", "OK", 8 + 2 * PERIOD + 2)

        self.put("mailfleet.inbound.dlq", 51)
        self.wait_state("inbound-dlq-depth", "ALARM", 2 * PERIOD + 1)
        out = self.mailfleet("dlq", "ack", "--topic", "mailfleet.inbound.dlq", "-c", self.cfg).stdout
        self.assertIn("acknowledged 51 records", out)
        self.wait_state("inbound-dlq-depth", "OK", 2 * PERIOD + 1)

        recs = self.alarm_records()
        v = jsonschema.Draft202012Validator(SCHEMA)
        for r in recs:
            v.validate(r)
        seen = [(r["AlarmName"], r["OldStateValue"], r["NewStateValue"]) for r in recs]
        for name in ("inbound-received-5m", "inbound-oldest-age", "inbound-dlq-depth"):
            self.assertIn((name, "OK", "ALARM"), seen)
            self.assertIn((name, "ALARM", "OK"), seen)
        dlq = [r for r in recs if r["AlarmName"] == "inbound-dlq-depth" and r["NewStateValue"] == "ALARM"][0]
        self.assertIn("[51.0]", dlq["NewStateReason"])
        self.assertEqual(dlq["Trigger"]["Threshold"], 50)
        self.assertEqual(dlq["Trigger"]["Dimensions"][0], {"name": "Topic", "value": "mailfleet.inbound.dlq"})

        # `mailfleet alarms` shows the latest state of each
        out = self.mailfleet("alarms", "-c", self.cfg).stdout
        self.assertRegex(out, r"inbound-dlq-depth\s+OK")

        metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.met, timeout=5).read()
        chk = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True)
        self.assertEqual(chk.returncode, 0, chk.stdout + chk.stderr)
        self.assertIn(b'mailfleet_alarm_state{alarm="inbound-dlq-depth"} 1', metrics)
        self.assertIn(b'mailfleet_topic_backlog_records{topic="mailfleet.inbound",group="transform"} 0', metrics)
        return recs


class MonitorLocalTest(MonitorBase, harness.TestCase):
    def test_alarms_local(self):
        self.start_monitor("local:" + self.path("queue"))
        self.scenario()

    def test_retention_deletes_old_objects(self):
        inc = self.path("incoming", "incoming", "2026-01-01")
        os.makedirs(inc)
        old, new = os.path.join(inc, "old.eml"), os.path.join(inc, "new.eml")
        for p in (old, new):
            open(p, "w").write("x")
        os.utime(old, (time.time() - 15 * 86400,) * 2)
        cfg = self.write("r.ini", f"""[mailfleet]
bus = local:{self.path("queue")}
state_dir = {self.path("state")}
store_incoming = file:{self.path("incoming")}
store_attachments = file:{self.path("attachments")}
[monitor]
metrics_listen = 127.0.0.1:{harness.free_port()}
retention = 14d
retention_interval = 1s
""")
        p = self.start([harness.MAILFLEET, "monitor", "-c", cfg], "retention")
        harness.wait_for(lambda: not os.path.exists(old), timeout=30, what="old object deleted")
        self.assertTrue(os.path.exists(new))
        p.stop()
        lifecycle = json.loads(self.mailfleet("retention", "-c", cfg).stdout)
        self.assertEqual(lifecycle["Rules"][0]["Expiration"]["Days"], 14)


class MonitorKafkaTest(MonitorBase, harness.TestCase):
    def test_alarms_kafka(self):
        # One partition per topic, not the manifest's 12: the volume and age
        # measures binary-search record timestamps with bus_read_at, and on
        # Kafka each read opens a client of its own, so a sample of 12
        # partitions takes longer than the two periods this test allows.
        _, servers = harness.start_kafka(self, topics=TOPICS)
        self.start_monitor("kafka:" + servers)
        recs = self.scenario()
        # an SRE dashboard reads the same records with an independent client
        out = subprocess.run(["kcat", "-C", "-b", servers, "-t", "mailfleet.alarms", "-e", "-q",
                              "-f", "%k\t%s\n"], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = [l.split("\t", 1) for l in out.stdout.splitlines() if l]
        self.assertEqual(len(lines), len(recs))
        for key, value in lines:
            self.assertEqual(json.loads(value)["AlarmName"], key)
