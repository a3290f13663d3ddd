"""The transform worker against a real 1-node Apache Kafka cluster with the
manifest's topics: outbound and fallback produced with the input commit,
bad records to the DLQ with their headers, `mailfleet dlq list|replay`, the
worker still up.  Output topics are read through consumer groups
(read_committed).  Each test has a cluster of its own: the workers' topic
and group names are fixed, and a record left by one test would point a
later test's transform at a store it does not have."""
import json
import subprocess

import harness
from test_transform import TOOL, Pipeline, corpus, validate


class TransformKafkaTest(harness.TestCase, Pipeline):
    def setUp(self):
        super().setUp()
        _, bootstrap = harness.start_kafka(self, manifest=True)
        self.setup_pipeline(bus="kafka:" + bootstrap)
        self.start_transform()

    def read(self, topic):
        """Through a fresh group: read_committed, as a downstream worker sees it."""
        self.groups = getattr(self, "groups", 0) + 1
        r = subprocess.run([TOOL, "consume", self.bus, topic, "test-%d" % self.groups, "1500"],
                           capture_output=True, check=True, timeout=60)
        return [json.loads(l) for l in r.stdout.decode().splitlines()]

    def test_outbound_fallback_dlq(self):
        iid = self.submit(corpus("demo"))
        nm = self.submit(corpus("no_marker"))
        ob = self.outbound_for(iid)
        validate("outbound", ob)
        self.assertEqual(ob["recipients"], ["a@x.com", "b@y.org"])
        fb = self.fallbacks_for(nm)[0]
        self.assertEqual(fb["reason"], "no_recipients")
        self.publish("mailfleet.inbound", "junk-k", b"[]")
        dlq = self.wait_records("mailfleet.inbound.dlq", lambda r: r["key"] == "junk-k", timeout=60)
        self.assertEqual(dlq[0]["value"], "[]")
        self.assertEqual(dlq[0]["headers"]["mf.error.class"], "parse")
        self.assertEqual(dlq[0]["headers"]["mf.source.topic"], "mailfleet.inbound")
        # dlq list / replay through group-less reads and explicit group offsets.
        listed = self.mailfleet("dlq", "list", "-c", self.cfg, timeout=60).stdout.splitlines()
        self.assertEqual([json.loads(l)["key"] for l in listed], ["junk-k"])
        out = self.mailfleet("dlq", "replay", "-c", self.cfg, timeout=60).stdout
        self.assertIn("replayed mailfleet.inbound.dlq:0:0 -> mailfleet.inbound", out)
        self.wait_records("mailfleet.inbound", lambda r: r["key"] == "junk-k" and r["value"] == "[]"
                          and not r["headers"], timeout=60)
        # Good mail after bad still flows.
        iid2 = self.submit(corpus("html_only"))
        self.assertEqual(self.outbound_for(iid2)["recipients"], ["ops@plant.example", "night@plant.example"])
        self.assertTrue(self.transform.alive())

    def test_two_transforms_share_the_work_once_each(self):
        """A second transform process joins the group (as KEDA scales them):
        neither fences the other, both stay up, and each mail comes out
        exactly once (read_committed), across the rebalance it causes."""
        self.transform.stop()
        t1 = self.start([harness.MAILFLEET, "transform", "-c", self.cfg], "transform-1")
        ids = [self.submit(corpus("demo")) for _ in range(3)]
        for iid in ids:
            self.outbound_for(iid)
        t2 = self.start([harness.MAILFLEET, "transform", "-c", self.cfg], "transform-2")
        ids += [self.submit(corpus("demo")) for _ in range(6)]
        harness.wait_for(lambda: set(ids) <= {r["key"] for r in self.read("mailfleet.outbound")},
                         timeout=60, what="all 9 mails transformed")
        keys = [r["key"] for r in self.read("mailfleet.outbound")]
        self.assertEqual(sorted(keys), sorted(ids))
        for p in (t1, t2):
            self.assertTrue(p.alive(), p.output()[-3000:])
            self.assertNotIn("fenced", p.output())

    def test_no_broker_or_bad_sasl_keeps_it_up_and_not_ready(self):
        """A wrong bootstrap address, and SASL towards a listener without
        it: the transform stays up (no exit, no restart loop), /readyz
        answers 503 naming Kafka and the cause, and the log says why; the
        healthy transform next to them is ready."""
        from test_links import get
        import re
        with open(self.cfg) as f:
            good_port = int(re.search(r"\[transform\]\nmetrics_listen = 127.0.0.1:(\d+)", f.read()).group(1))
        harness.wait_port(good_port, proc=self.transform.p, timeout=30)
        harness.wait_for(lambda: get("http://127.0.0.1:%d/readyz" % good_port)[0] == 200, timeout=30,
                         what="the healthy transform ready")
        port = harness.free_port()
        nowhere_port, sasl_port = harness.free_port(), harness.free_port()
        nowhere = self.start([harness.MAILFLEET, "transform", "-c", self.cfg], "transform-nowhere", env={
            "MAILFLEET__MAILFLEET__BUS": "kafka:127.0.0.1:%d" % port,
            "MAILFLEET__TRANSFORM__METRICS_LISTEN": "127.0.0.1:%d" % nowhere_port})
        with open(self.cfg) as f:
            sasl_cfg = self.write("sasl.ini", f.read() + "\n[kafka]\nsecurity.protocol = sasl_plaintext\n"
                                  "sasl.mechanism = PLAIN\nsasl.username = device\nsasl.password = wrong\n")
        sasl = self.start([harness.MAILFLEET, "transform", "-c", sasl_cfg], "transform-sasl", env={
            "MAILFLEET__TRANSFORM__METRICS_LISTEN": "127.0.0.1:%d" % sasl_port})
        for p, mport, want in ((nowhere, nowhere_port, "127.0.0.1:%d" % port),
                               (sasl, sasl_port, self.bus[len("kafka:"):])):
            harness.wait_port(mport, proc=p.p, timeout=30)
            code, _, body = harness.wait_for(
                lambda: (lambda r: r if r[0] == 503 and b"no broker answers" in r[2] else None)(
                    get("http://127.0.0.1:%d/readyz" % mport)), timeout=30, what="readyz 503")
            self.assertIn(("kafka: no broker answers at " + want).encode(), body)
        # Past the bound on init_transactions at start-up: still up, not ready.
        for p, mport in ((nowhere, nowhere_port), (sasl, sasl_port)):
            harness.wait_for(lambda: "the first batch tries again" in p.output(), timeout=30,
                             what="start-up past init_transactions")
            self.assertTrue(p.alive(), p.output()[-2000:])
            self.assertEqual(get("http://127.0.0.1:%d/readyz" % mport)[0], 503)
        self.assertIn("Connection refused", nowhere.output())
        self.assertRegex(sasl.output(), r"(?i)sasl|authentication|disconnected")
        self.assertEqual(get("http://127.0.0.1:%d/readyz" % good_port)[0], 200)

    def test_links_revocation_on_kafka(self):
        from test_links import get
        self.start_links()
        iid = self.submit(corpus("demo"))
        url = self.outbound_for(iid)["links"][0]["url"]
        harness.wait_for(lambda: get(url)[0] == 200, timeout=30, what="link served")
        self.mailfleet("links", "revoke", "--message", iid, "-c", self.cfg, timeout=60)
        harness.wait_for(lambda: get(url)[0] == 403, timeout=15, what="revoked on kafka")


class TransformKafkaRefusalTest(harness.TestCase, Pipeline):
    """The broker refuses one mail's output (mailfleet.outbound takes records
    of at most 4,000 bytes here; the mail codes 50 long addresses): the batch is redone one record at a time,
    that mail is retried and then dead-lettered with the broker's reason
    naming the topic; mails before and after it flow."""

    def setUp(self):
        super().setUp()
        _, bootstrap = harness.start_kafka(self, manifest=True, topics=[
            "mailfleet.outbound:12:max.message.bytes=4000"])
        self.setup_pipeline(bus="kafka:" + bootstrap)
        self.start_transform()

    def test_refused_output_goes_to_the_dlq_with_the_broker_reason(self):
        before = self.submit(corpus("demo"))
        self.outbound_for(before)
        many = ",".join("sensor-maintenance-team-member-%02d@plant-seven.operations.example.com" % i
                        for i in range(50))
        raw = corpus("demo").replace(b"[a@x.com,b@y.org]", ("[%s]" % many).encode())
        self.assertNotEqual(raw, corpus("demo"))
        big = self.submit(raw)
        dlq = self.wait_records("mailfleet.inbound.dlq", lambda r: r["key"] == big, timeout=90)
        h = dlq[0]["headers"]
        self.assertEqual(h["mf.error.stage"], "bus.produce")
        self.assertEqual(h["mf.error.class"], "bus")
        self.assertIn("mailfleet.outbound", h["mf.error.message"])
        self.assertIn("Message size too large", h["mf.error.message"])
        self.assertEqual(h["mf.attempts"], "2")
        after = self.submit(corpus("demo"))
        self.outbound_for(after)
        self.assertNotIn(big, {r["key"] for r in self.read("mailfleet.outbound")})
        self.assertTrue(self.transform.alive())
