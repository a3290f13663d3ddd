"""ingest in Kafka mode (a real 1-node Apache Kafka cluster with the
manifest's topics, kcat as an independent reader): records reach Kafka
through the local spool; with the broker killed (-9) ingest keeps answering
250 into the spool, and the backlog is forwarded, once each, when the same
broker comes back on its port, without restarting ingest."""
import os
import re
import smtplib
import subprocess
import time

import harness
from ingest_util import Ingest, eventually


def kcat_keys(bootstrap, topic="mailfleet.inbound"):
    r = subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k\n"],
                       capture_output=True, text=True, timeout=30)
    return [l for l in r.stdout.splitlines() if l.strip()]


def send(port, n, tag):
    ids = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo()
        for i in range(n):
            s.mail("dev@example.com")
            s.rcpt("alerts@iot.localhost")
            code, text = s.data(b"Subject: %s %d\r\n\r\nbody\r\n" % (tag, i))
            assert code == 250, text
            ids.append(re.search(rb"queued as ([0-9a-f-]{36})", text).group(1).decode())
    return ids


class IngestKafkaTest(harness.TestCase):
    def test_spool_forwards_and_survives_broker_outage(self):
        kafka, bootstrap = harness.start_kafka(self, manifest=True)
        ing = Ingest(self, produce_timeout="5s")
        with open(ing.config) as f:
            cfg = f.read().replace("bus = " + ing.queue, "bus = kafka:" + bootstrap)
        with open(ing.config, "w") as f:
            f.write(cfg)
        ing.start()
        first = send(ing.port, 5, b"up")
        eventually(lambda: set(first) <= set(kcat_keys(bootstrap)), 30, "records in Kafka")
        self.assertEqual(sorted(kcat_keys(bootstrap)), sorted(first))   # each exactly once

        kafka.kill(1)   # broker outage: mail is still accepted, fast
        t0 = time.monotonic()
        held = send(ing.port, 3, b"down")
        self.assertLess(time.monotonic() - t0, 5)
        eventually(lambda: re.search(r"mailfleet_spool_backlog_records [1-9]", ing.metrics()), 10, "backlog")
        self.assertEqual(len(ing.stored()), 8)   # raw mail is durable either way

        # The broker back on its port with its data: the spool is forwarded.
        kafka.start_node(1)
        eventually(lambda: set(held) <= set(kcat_keys(bootstrap)), 60, "spooled records forwarded")
        keys = kcat_keys(bootstrap)
        self.assertEqual(sorted(keys), sorted(first + held))   # nothing lost, nothing twice
        eventually(lambda: "mailfleet_spool_backlog_records 0" in ing.metrics(), 10, "backlog drained")
        self.assertTrue(ing.proc.alive())


if __name__ == "__main__":
    import unittest
    unittest.main()
