"""The Kafka backend of the bus against a real Apache Kafka cluster
(ops/kafka/cluster.py, KRaft), driven through the bus API by
tests/tools/kafka_check and read back by independent clients: kcat
(librdkafka) and Kafka's own console consumer (the Java client, with
isolation.level=read_committed); committed group offsets come from Kafka's
kafka-consumer-groups tool.  One 1-node cluster serves BusKafkaTest, one
3-node cluster (replication 3, min.insync.replicas 2) serves the checks that
want several brokers; each test uses topics and groups of its own.
"""
import json
import os
import subprocess
import unittest

import harness

CHECK = os.path.join(harness.TOOLS, "kafka_check")
K = harness.kafka_cluster


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


class KafkaClients:
    """kafka_check, kcat, the console consumer and kafka-consumer-groups
    against self.kafka (a harness.start_kafka cluster)."""

    def check(self, *args, env=None, expect_rc=0, timeout=120):
        full_env = dict(os.environ)
        full_env.update(env or {})
        r = subprocess.run([CHECK, args[0], self.kafka.bootstrap] + list(args[1:]), capture_output=True,
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
        r = subprocess.run(["kcat", "-C", "-b", self.kafka.bootstrap, "-t", topic, "-e", "-q"] + list(extra),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.splitlines()

    def kcat_json(self, topic, *extra):
        return [json.loads(line) for line in self.kcat(topic, "-J", *extra)]

    def console(self, topic, isolation="read_committed"):
        """Kafka's console consumer (the Java client) from the beginning of
        topic until 3 s pass without a record: [(partition, headers, key, value)]."""
        r = self.kafka.tool(K.MAIN_CONSOLE_CONSUMER, "--bootstrap-server", self.kafka.bootstrap,
                            "--topic", topic, "--from-beginning", "--timeout-ms", "3000",
                            "--isolation-level", isolation,
                            "--property", "print.partition=true", "--property", "print.headers=true",
                            "--property", "print.key=true")
        out = []
        for line in r.stdout.splitlines():
            part, headers, key, value = line.split("\t", 3)
            out.append((int(part.split(":")[1]), headers, key, value))
        return out

    def committed(self, group):
        """{(topic, partition): committed offset} as kafka-consumer-groups
        --describe shows it ("-" for none is left out)."""
        r = self.kafka.tool(K.MAIN_CONSUMER_GROUPS, "--bootstrap-server", self.kafka.bootstrap,
                            "--describe", "--group", group)
        offsets = {}
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) >= 4 and f[0] == group and f[3] != "-":
                offsets[(f[1], int(f[2]))] = int(f[3])
        return offsets


class BusKafkaTest(KafkaClients, harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.kafka, _ = harness.start_kafka(cls, topics=[
            "kc:4", "tin:1", "tout:1", "ein:1", "eout:1", "ain:1", "aout:1", "fin:1", "fout:1"])

    def test_kcat_and_java_read_what_the_bus_wrote(self):
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
        # The Java client reads the same records, headers and partitions.
        java = self.console("kc")
        self.assertEqual(sorted(java), sorted(
            (by_key["k%d" % i]["partition"], "mf.seq:%d,mf.kind:test" % i, "k%d" % i, "v%d" % i)
            for i in range(20)))

    def test_transaction_commit_then_abort(self):
        self.check("produce", "tin", "1")
        got = self.relay("g-txn", "tin", "tout", 1, txn_id="mf-test-txn")
        self.assertEqual([(g["offset"], g["value"]) for g in got], [(0, "v0")])
        committed = self.kcat_json("tout", "-X", "isolation.level=read_committed")
        self.assertEqual([(c["key"], c["payload"]) for c in committed], [("k0", "out:v0")])
        self.assertEqual(committed[0]["headers"], ["mf.source.offset", "0"])
        # TxnOffsetCommit: the input's offset went to the group with the output.
        self.assertEqual(self.committed("g-txn"), {("tin", 0): 1})

        r = self.check("txn-abort", "mf-test-txn", "g-txn-abort", "tin", "tout",
                       env={"CHECK_DEBUG": "eos"})
        self.assertIn("aborted: kafka: produce to tout: Broker: Message size too large", r.stdout)
        self.assertIn("committed after abort", r.stdout)
        self.assertIn("Transaction successfully aborted", r.stderr)
        # The first output was written before the failure: the abort, not
        # an early return, is what keeps it from read_committed readers.
        uncommitted = self.kcat_json("tout", "-X", "isolation.level=read_uncommitted")
        self.assertIn(("aborted", "written-then-aborted"),
                      [(u["key"], u["payload"]) for u in uncommitted])
        want = [("k0", "out:v0"), ("retried", "committed-after-abort")]
        after = [(c["key"], c["payload"]) for c in
                 self.kcat_json("tout", "-X", "isolation.level=read_committed")]
        self.assertEqual(after, want)
        self.assertEqual([(key, value) for _, _, key, value in self.console("tout")], want)
        self.assertEqual(self.committed("g-txn-abort"), {("tin", 0): 1})

    def test_fenced_zombie_cannot_commit(self):
        """A newer producer with the same transactional id fences the older
        one (a zombie: a process thought dead, or a pod's previous
        container): the zombie's commit fails, its output never reaches
        read_committed readers, and the newer one commits the same input
        once."""
        self.check("produce", "fin", "1")
        r = self.check("fence", "mf-test-fence", "g-fence", "fin", "fout", timeout=120)
        self.assertIn("zombie fenced: kafka: ", r.stdout)
        self.assertIn("fenced", r.stdout)
        self.assertIn("fencer committed offset 0", r.stdout)
        self.assertEqual([(key, value) for _, _, key, value in self.console("fout")],
                         [("fencer", "from-the-fencer")])
        self.assertEqual(self.committed("g-fence"), {("fin", 0): 1})

    def test_exactly_once_resumes_after_restart(self):
        """The offsets a transaction commits are where the group's next
        process starts: no input twice, no output twice."""
        self.check("produce", "ein", "6")
        first = self.relay("g-eos", "ein", "eout", 3, txn_id="mf-test-eos")
        self.assertEqual([g["offset"] for g in first], [0, 1, 2])
        self.assertEqual(self.committed("g-eos"), {("ein", 0): 3})
        second = self.relay("g-eos", "ein", "eout", 3, txn_id="mf-test-eos")
        self.assertEqual([g["offset"] for g in second], [3, 4, 5])
        self.assertEqual(self.committed("g-eos"), {("ein", 0): 6})
        self.assertEqual([value for _, _, _, value in self.console("eout")],
                         ["out:v%d" % i for i in range(6)])

    def test_at_least_once_resumes_after_restart(self):
        self.check("produce", "ain", "6")
        first = self.relay("g-alo", "ain", "aout", 3)
        self.assertEqual([g["offset"] for g in first], [0, 1, 2])
        self.assertEqual(self.committed("g-alo"), {("ain", 0): 3})
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
        self.assertEqual(self.committed("g-alo"), {("ain", 0): 6})
        again = self.relay("g-alo", "ain", "aout", 2)
        self.assertEqual([g["offset"] for g in again], [6, 7])
        out = self.kcat_json("aout")
        self.assertEqual([o["headers"][1] for o in out][6:], ["6", "6", "7"])


class BusKafkaThreeNodesTest(KafkaClients, harness.TestCase):
    """A 3-node cluster: partition leaders on different brokers, replication
    3, min.insync.replicas 2 (as ops/k8s/base/topics.yaml).  The broker
    creates topics on first use here because the contract suite names its
    topics at run time (pid and time), so that it can share a cluster."""

    @classmethod
    def setUpClass(cls):
        cls.kafka, _ = harness.start_kafka(cls, nodes=3, auto_create=True,
                                           topics=["main:3:min.insync.replicas=2", "one:1"])

    def test_api_against_three_brokers(self):
        """Produce/consume with headers and a tombstone, commit and
        redelivery on reopen, seek, stats, read_at, group offsets, concurrent
        producers, produce timeout and config errors (see kafka_check.c)."""
        r = self.check("check", "main", "one", timeout=240)
        self.assertEqual(r.stdout.strip(), "ok")
        self.assertIn("redelivery ok", r.stderr)

    def test_shared_contract_suite(self):
        """The same cmocka contract suite the local queue passes
        (tests/unit/test_bus_contract.c): the backends keep one contract.
        With a transactional id, as the consume-produce workers run."""
        r = subprocess.run([os.path.join(harness.BUILD, "tests", "test_bus_contract")],
                           env=dict(os.environ, MF_BUS_URI="kafka:" + self.kafka.bootstrap,
                                    MF_BUS_TRANSACTIONAL="1"),
                           capture_output=True, text=True, errors="replace", timeout=600)
        self.assertEqual(r.returncode, 0, r.stdout[-4000:] + r.stderr[-4000:])
        self.assertRegex(r.stdout + r.stderr, r"\[  PASSED  \] 1[0-9] test\(s\)\.")

    def test_writes_go_on_with_one_node_killed(self):
        """Replication 3, min.insync.replicas 2, acks=all: with one node
        killed (-9) every write is still acknowledged, and nothing
        acknowledged is lost when the node comes back.  Runs last in the
        class (name order): it restarts the node it killed."""
        self.kafka.create_topics(["down:3:min.insync.replicas=2"])
        self.check("produce", "down", "10")
        self.kafka.kill(2)
        self.check("produce", "down", "10")
        self.assertEqual(len(self.kcat_json("down")), 20)
        self.kafka.start_node(2)
        self.kafka.create_topics([])   # waits until all 3 brokers are registered again
        self.check("produce", "down", "10")
        recs = self.kcat_json("down")
        self.assertEqual(len(recs), 30)
        self.assertEqual(sorted(r["key"] for r in recs), sorted("k%d" % (i % 10) for i in range(30)))


if __name__ == "__main__":
    unittest.main()
