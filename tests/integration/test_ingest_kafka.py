"""ingest in Kafka mode (librdkafka's mock cluster in its own process, kcat
as an independent reader): records reach Kafka through the local spool; with
the broker gone ingest keeps answering 250 into the spool, and the backlog
is forwarded once a broker is reachable again."""
import os
import re
import signal
import smtplib
import subprocess
import time

import harness
from ingest_util import Ingest, eventually


class KafkaMock:
    def __init__(self, test, name):
        tool = os.path.join(harness.TOOLS, "kafka_mock")
        self.log = open(test.path(name + ".log"), "ab")
        self.p = subprocess.Popen([tool, "--topic", "mailfleet.inbound", "--topic", "mailfleet.feedback"],
                                  stdout=subprocess.PIPE, stderr=self.log, start_new_session=True, text=True)
        self.bootstrap = self.p.stdout.readline().strip()
        test.assertRegex(self.bootstrap, r"^127\.0\.0\.1:\d+")
        test.addCleanup(self.stop)

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait()
        self.p.stdout.close()
        self.log.close()


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
        mock = KafkaMock(self, "kafka1")
        ing = Ingest(self, produce_timeout="5s")
        with open(ing.config) as f:
            cfg = f.read().replace("bus = " + ing.queue, "bus = kafka:" + mock.bootstrap)
        with open(ing.config, "w") as f:
            f.write(cfg)
        ing.start()
        first = send(ing.port, 5, b"up")
        eventually(lambda: set(first) <= set(kcat_keys(mock.bootstrap)), 30, "records in Kafka")
        self.assertEqual(sorted(kcat_keys(mock.bootstrap)), sorted(first))   # each exactly once

        mock.stop()   # broker outage: mail is still accepted, fast
        t0 = time.monotonic()
        held = send(ing.port, 3, b"down")
        self.assertLess(time.monotonic() - t0, 5)
        eventually(lambda: re.search(r"mailfleet_spool_backlog_records [1-9]", ing.metrics()), 10, "backlog")
        self.assertEqual(len(ing.stored()), 8)   # raw mail is durable either way

        # A broker again (the mock cannot come back on its old port: restart
        # ingest pointed at the new one); the spool is forwarded.
        ing.proc.stop()
        mock2 = KafkaMock(self, "kafka2")
        with open(ing.config, "w") as f:
            f.write(cfg.replace(mock.bootstrap, mock2.bootstrap))
        ing.proc = self.start([harness.MAILFLEET, "ingest", "-c", ing.config], "ingest-2")
        harness.wait_port(ing.port, proc=ing.proc.p)
        eventually(lambda: set(held) <= set(kcat_keys(mock2.bootstrap)), 30, "spooled records forwarded")
        keys = kcat_keys(mock2.bootstrap)
        for k in held:
            self.assertEqual(keys.count(k), 1)
        eventually(lambda: "mailfleet_spool_backlog_records 0" in ing.metrics(), 10, "backlog drained")


if __name__ == "__main__":
    import unittest
    unittest.main()
