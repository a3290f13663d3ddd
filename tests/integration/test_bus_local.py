"""The durable local queue across real processes: kill -9 of a producer
loses nothing it acknowledged and leaves no torn record; several producer
processes share one log; one consumer per group across processes; another
process's records reach a waiting consumer."""
import os
import re
import subprocess
import time

import harness

BUS_TOOL = os.path.join(harness.TOOLS, "bus_tool")


def acked(proc):
    """Keys the producer acknowledged (complete lines only)."""
    out = proc.output()
    if not out.endswith("\n"):
        out = out[:out.rfind("\n") + 1]
    return [line[4:] for line in out.splitlines() if line.startswith("ack ")]


class BusLocalTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.uri = "local:" + self.path("queue")

    def tool(self, *args, timeout=60):
        return subprocess.run([BUS_TOOL] + list(args), capture_output=True, text=True, timeout=timeout)

    def dump(self, topic):
        r = self.tool("dump", self.uri, topic)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = []
        for line in r.stdout.splitlines():
            off, key, status = line.split(" ")
            rows.append((int(off), key, status))
        return rows

    def test_kill9_producer_loses_nothing_acknowledged(self):
        all_acked = set()
        expected_next = 0
        for round_ in range(3):
            p = self.start([BUS_TOOL, "produce", self.uri, "crash", "10000000", "8"], "producer%d" % round_)
            # Kill at a different depth each round, always mid-stream.
            want = 200 + 300 * round_
            harness.wait_for(lambda: len(acked(p)) >= want, timeout=60, interval=0.01,
                             what="%d acknowledged records" % want)
            p.kill9()
            self.assertNotEqual(p.p.returncode, 0)
            all_acked.update(acked(p))

            rows = self.dump("crash")
            offsets = [r[0] for r in rows]
            # Whole transactions only: offsets stay dense from 0, every record decodes.
            self.assertEqual(offsets, list(range(len(rows))))
            self.assertEqual([r for r in rows if r[2] != "ok"], [])
            keys = [r[1] for r in rows]
            self.assertEqual(len(keys), len(set(keys)), "a record stored twice")
            missing = all_acked - set(keys)
            self.assertEqual(missing, set(), "acknowledged but lost")
            self.assertGreaterEqual(len(rows), expected_next)
            expected_next = len(rows)

        # The queue is still writable after the crashes (LMDB's robust writer lock).
        r = self.tool("produce", self.uri, "crash", "50", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(re.findall(r"^ack ", r.stdout, re.M)), 50)
        rows = self.dump("crash")
        self.assertEqual(len(rows), expected_next + 50)
        self.assertEqual([r for r in rows if r[2] != "ok"], [])

    def test_producer_processes_share_the_queue(self):
        procs = [self.start([BUS_TOOL, "produce", self.uri, "shared", "400", "4"], "producer%d" % i)
                 for i in range(3)]
        for p in procs:
            self.assertEqual(p.p.wait(60), 0, p.output())
        keys = set()
        for p in procs:
            keys.update(acked(p))
        self.assertEqual(len(keys), 1200)
        rows = self.dump("shared")
        # One log: every offset used once, no gaps, every record intact.
        self.assertEqual([r[0] for r in rows], list(range(1200)))
        self.assertEqual([r for r in rows if r[2] != "ok"], [])
        self.assertEqual({r[1] for r in rows}, keys)

    def test_second_consumer_process_is_refused(self):
        self.assertEqual(self.tool("produce", self.uri, "jobs", "3", "1").returncode, 0)
        first = self.start([BUS_TOOL, "consume", self.uri, "jobs", "workers", "30"], "first")
        harness.wait_for(lambda: "ready" in first.output(), timeout=15, what="first consumer")

        t0 = time.monotonic()
        r = self.tool("consume", self.uri, "jobs", "workers", "5")
        self.assertLess(time.monotonic() - t0, 3, "must fail fast, not wait for the lock")
        self.assertEqual(r.returncode, 2)
        self.assertIn("group workers is already consumed by another process (pid %d); "
                      "scale out with Kafka" % first.pid, r.stderr)
        self.assertNotIn("ready", r.stdout)

        # Another group is independent, and the group frees up when the holder dies.
        r = self.tool("consume", self.uri, "jobs", "auditors", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout.splitlines()), 1 + 3)
        first.kill9()
        r = self.tool("consume", self.uri, "jobs", "workers", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("ready\n"))

    def test_consumer_sees_other_process_records_and_resumes(self):
        c = self.start([BUS_TOOL, "consume", self.uri, "feed", "g", "30"], "consumer")
        harness.wait_for(lambda: "ready" in c.output(), timeout=15, what="consumer")
        r = self.tool("produce", self.uri, "feed", "20", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = lambda: [l for l in c.output().splitlines() if l != "ready"]
        harness.wait_for(lambda: len(lines()) >= 20, timeout=10, what="20 records at the consumer")
        self.assertEqual([int(l.split()[0]) for l in lines()], list(range(20)))
        c.kill9()

        # Everything was committed: a restarted consumer sees only newer records.
        r = self.tool("produce", self.uri, "feed", "5", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.tool("consume", self.uri, "feed", "g", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([int(l.split()[0]) for l in r.stdout.splitlines()[1:]], list(range(20, 25)))
