"""The Kafka backend of the bus against librdkafka's mock cluster, run as a
process of its own (tests/tools/kafka_mock), driven through the bus API by
tests/tools/kafka_check and read back with kcat, an independent client.

Limits of the mock in Debian's librdkafka 2.0.2 that shape these tests:
- offsets sent with send_offsets_to_transaction are not applied to the
  group, so restarts are tested in at_least_once mode (DESIGN.md §3);
- it never reports aborted transactions in Fetch responses and sets the
  last stable offset to the high watermark, so a read_committed reader sees
  aborted records too.  The abort test therefore checks what the mock can
  show: the call fails with the cause, the client aborted the transaction
  (its own eos trace), the aborted output did reach the log, and the same
  producer then commits the retry.
"""
import json
import os
import subprocess

import harness

CHECK = os.path.join(harness.TOOLS, "kafka_check")


def murmur2(data):
    """Kafka's murmur2 (the Java client's default partitioner hash)."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    n4 = len(data) // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = data[4 * n4:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


class BusKafkaTest(harness.TestCase):
    def start_mock(self, *topics, brokers=1):
        self.mock, self.bootstrap = harness.start_mock_kafka(self, brokers=brokers, topics=topics)

    def check(self, *args, env=None, expect_rc=0, timeout=120):
        full_env = dict(os.environ)
        full_env.update(env or {})
        r = subprocess.run([CHECK, args[0], self.bootstrap] + list(args[1:]), capture_output=True,
                           text=True, env=full_env, cwd=self.dir, timeout=timeout)
        if r.returncode != expect_rc:
            self.fail("kafka_check %s exited %d (want %d)\nstdout:%s\nstderr:%s"
                      % (" ".join(args), r.returncode, expect_rc, r.stdout, r.stderr[-4000:]))
        return r

    def relay(self, group, src, dst, n, txn_id=None, env=None, expect_rc=0):
        args = ["relay", group, src, dst, str(n)] + ([txn_id] if txn_id else [])
        r = self.check(*args, env=env, expect_rc=expect_rc)
        return [json.loads(line) for line in r.stdout.splitlines()]

    def kcat(self, topic, *extra):
        r = subprocess.run(["kcat", "-C", "-b", self.bootstrap, "-t", topic, "-e", "-q"] + list(extra),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.splitlines()

    def kcat_json(self, topic, *extra):
        return [json.loads(line) for line in self.kcat(topic, "-J", *extra)]

    def test_api_against_three_brokers(self):
        """Produce/consume with headers and a tombstone, commit and
        redelivery on reopen, seek, stats, read_at, group offsets, concurrent
        producers, produce timeout and config errors (see kafka_check.c)."""
        self.start_mock("main:3", "one:1", brokers=3)
        r = self.check("check", "main", "one", timeout=240)
        self.assertEqual(r.stdout.strip(), "ok")
        self.assertIn("redelivery ok", r.stderr)

    def test_kcat_reads_what_the_bus_wrote(self):
        self.start_mock("kc:4")
        self.check("produce", "kc", "20")
        recs = self.kcat_json("kc")
        self.assertEqual(len(recs), 20)
        by_key = {rec["key"]: rec for rec in recs}
        self.assertEqual(sorted(by_key), sorted("k%d" % i for i in range(20)))
        for i in range(20):
            rec = by_key["k%d" % i]
            self.assertEqual(rec["payload"], "v%d" % i)
            self.assertEqual(rec["headers"], ["mf.seq", str(i), "mf.kind", "test"])
            # murmur2_random: a keyed record lands where a Java client puts it.
            self.assertEqual(rec["partition"], (murmur2(rec["key"].encode()) & 0x7FFFFFFF) % 4,
                             rec["key"])
        # One producer call keeps per-partition order.
        for p in range(4):
            seqs = [int(rec["key"][1:]) for rec in recs if rec["partition"] == p]
            self.assertEqual(seqs, sorted(seqs))
        lines = self.kcat("kc", "-f", "%k|%s|%h\n")
        self.assertIn("k7|v7|mf.seq=7,mf.kind=test", lines)
        self.assertEqual(len(lines), 20)

    def test_transaction_commit_then_abort(self):
        self.start_mock("tin:1", "tout:1")
        self.check("produce", "tin", "1")
        got = self.relay("g-txn", "tin", "tout", 1, txn_id="mf-test-txn")
        self.assertEqual([(g["offset"], g["value"]) for g in got], [(0, "v0")])
        committed = self.kcat_json("tout", "-X", "isolation.level=read_committed")
        self.assertEqual([(c["key"], c["payload"]) for c in committed], [("k0", "out:v0")])
        self.assertEqual(committed[0]["headers"], ["mf.source.offset", "0"])

        r = self.check("txn-abort", "mf-test-txn", "g-txn-abort", "tin", "tout",
                       env={"CHECK_DEBUG": "eos"})
        self.assertIn("aborted: kafka: produce to tout: Broker: Message size too large", r.stdout)
        self.assertIn("committed after abort", r.stdout)
        self.assertIn("Transaction successfully aborted", r.stderr)
        # The first output was written before the failure: the abort, not
        # an early return, is what keeps it out of a transaction's result.
        uncommitted = self.kcat_json("tout", "-X", "isolation.level=read_uncommitted")
        self.assertIn(("aborted", "written-then-aborted"),
                      [(u["key"], u["payload"]) for u in uncommitted])
        after = [(c["key"], c["payload"]) for c in
                 self.kcat_json("tout", "-X", "isolation.level=read_committed")]
        self.assertEqual(after[0], ("k0", "out:v0"))
        self.assertEqual(after[-1], ("retried", "committed-after-abort"))

    def test_at_least_once_resumes_after_restart(self):
        self.start_mock("ain:1", "aout:1")
        self.check("produce", "ain", "6")
        first = self.relay("g-alo", "ain", "aout", 3)
        self.assertEqual([g["offset"] for g in first], [0, 1, 2])
        # A new process in the same group starts after the committed offset.
        second = self.relay("g-alo", "ain", "aout", 3)
        self.assertEqual([g["offset"] for g in second], [3, 4, 5])
        out = self.kcat_json("aout")
        self.assertEqual([o["payload"] for o in out], ["out:v%d" % i for i in range(6)])
        self.assertEqual([o["headers"][1] for o in out], [str(i) for i in range(6)])

        # Dying after the output is durable but before the commit: the input
        # comes again (the output is duplicated, never lost).
        self.check("produce", "ain", "2")   # offsets 6, 7 (keys k0, k1)
        crashed = self.relay("g-alo", "ain", "aout", 2, env={"CHECK_CRASH_AT": "0"}, expect_rc=9)
        self.assertEqual([g["offset"] for g in crashed], [6])
        again = self.relay("g-alo", "ain", "aout", 2)
        self.assertEqual([g["offset"] for g in again], [6, 7])
        out = self.kcat_json("aout")
        self.assertEqual([o["headers"][1] for o in out][6:], ["6", "6", "7"])


if __name__ == "__main__":
    import unittest
    unittest.main()
