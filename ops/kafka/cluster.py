#!/usr/bin/env python3
"""A real Apache Kafka cluster (KRaft, no ZooKeeper) on 127.0.0.1, for the
tests, the benches and `make run-kafka`.  Kafka itself is the pinned version
of ops/kafka/pom.xml, fetched by `ops/deps.sh kafka` into var/kafka-<version>/.

Every node is a combined broker + controller with its own free ports and data
directory under the cluster's directory; a 3-node cluster is a 3-voter quorum
and survives one node down.  Topics come from the Strimzi manifest
(ops/k8s/base/topics.yaml, the same partitions and configs as production)
with replication min(3, nodes), and min.insync.replicas at most the
replication, so 1 node takes writes with acks=all.

  cluster.py start DIR [--nodes N] [--manifest] [--topic NAME[:PARTITIONS[:K=V,...]]]...
                       [--port P] [--keep]
      formats and starts the nodes (detached), creates the topics, waits until
      every partition has a leader, prints the bootstrap list (also in DIR/bootstrap).
      --port: node i listens on P+2(i-1) (its controller on the next port)
      instead of free ports; --keep: a DIR from an earlier start is started
      again with its data instead of being wiped.
  cluster.py topics DIR [--manifest] [--topic ...]...   creates more topics
  cluster.py stop DIR        stops the nodes by their PIDs (DIR/node-<id>/pid)
  cluster.py run DIR [...]   start, then stay in the foreground; SIGINT/SIGTERM stops

As a module (tests/integration/harness.py): Cluster(dir, nodes).start(),
create_topics(), kill(node), stop_node(node), start_node(node), stop(), tool().
"""
import argparse
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import base64

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MANIFEST = os.path.join(ROOT, "ops", "k8s", "base", "topics.yaml")


def kafka_version():
    with open(os.path.join(HERE, "pom.xml")) as f:
        return re.search(r"<kafka.version>([^<]+)</kafka.version>", f.read()).group(1)


KAFKA_HOME = os.environ.get("MF_KAFKA_HOME", os.path.join(ROOT, "var", "kafka-" + kafka_version()))
LIB = os.path.join(KAFKA_HOME, "lib")

# A small machine runs several of these next to the fleet: a small heap, the
# serial collector and only the first JIT tier (a node starts in ~2.5 s on
# 2 cores instead of ~5 s; throughput is not what the tests measure).
JVM_FLAGS = ["-Xms32m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
             "-Djava.awt.headless=true"]
BROKER_HEAP = "-Xmx256m"
TOOL_HEAP = "-Xmx128m"

# Kafka main classes (4.x): the broker and storage tool live in the core jar,
# the command-line tools in kafka-tools.
MAIN_BROKER = "kafka.Kafka"
MAIN_STORAGE = "kafka.tools.StorageTool"
MAIN_TOPICS = "org.apache.kafka.tools.TopicCommand"
MAIN_CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
MAIN_CONSUMER_GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def free_ports(n):
    """n distinct free ports (held open together so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def manifest_topics(path=MANIFEST):
    """[(name, partitions, {config})] of every KafkaTopic in a Strimzi manifest."""
    import yaml   # python3-yaml (ops/deps.sh test)
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "KafkaTopic"]
    return [(d["spec"].get("topicName", d["metadata"]["name"]), int(d["spec"]["partitions"]),
             {k: str(v) for k, v in (d["spec"].get("config") or {}).items()}) for d in docs]


def parse_topic(spec):
    """NAME[:PARTITIONS[:K=V,K=V]] -> (name, partitions, {config})."""
    parts = spec.split(":", 2)
    config = dict(kv.split("=", 1) for kv in parts[2].split(",")) if len(parts) > 2 and parts[2] else {}
    return parts[0], int(parts[1]) if len(parts) > 1 and parts[1] else 1, config


def java(main, args, heap, log_file, classpath=None):
    cp = classpath or os.path.join(LIB, "*")
    return (["java", heap] + JVM_FLAGS +
            ["-Dlog4j2.configurationFile=" + os.path.join(HERE, "log4j2.properties"),
             "-Dkafka.logs.file=" + log_file, "-cp", cp, main] + list(args))


def _die_with_parent():
    """A node of a cluster owned by a Python process (a test) is killed with
    it, even when that process is killed before its cleanup runs."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Node:
    def __init__(self, cluster, node_id, port, controller_port):
        self.id = node_id
        self.dir = os.path.join(cluster.dir, "node-%d" % node_id)
        self.port = port
        self.controller_port = controller_port
        self.proc = None

    @property
    def pid_file(self):
        return os.path.join(self.dir, "pid")

    @property
    def log(self):
        return os.path.join(self.dir, "server.log")


class Cluster:
    def __init__(self, directory, nodes=1, auto_create=False, settings=None, port=None, detached=False):
        """detached: the nodes outlive this process (cluster.py start)."""
        self.dir = os.path.abspath(directory)
        self.detached = detached
        ports = list(range(port, port + 2 * nodes)) if port else free_ports(2 * nodes)
        self.nodes = [Node(self, i + 1, ports[2 * i], ports[2 * i + 1]) for i in range(nodes)]
        self.replicas = min(3, nodes)
        self.auto_create = auto_create
        self.settings = settings or {}
        if not os.path.isdir(LIB):
            raise RuntimeError("Kafka is not installed in %s: run ops/deps.sh kafka" % KAFKA_HOME)

    @property
    def bootstrap(self):
        return ",".join("127.0.0.1:%d" % n.port for n in self.nodes)

    def _properties(self, n):
        voters = ",".join("%d@127.0.0.1:%d" % (m.id, m.controller_port) for m in self.nodes)
        s = {
            "process.roles": "broker,controller",
            "node.id": n.id,
            "controller.quorum.voters": voters,
            "listeners": "PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d" % (n.port, n.controller_port),
            "advertised.listeners": "PLAINTEXT://127.0.0.1:%d" % n.port,
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": os.path.join(n.dir, "data"),
            # internal topics fit the node count; few partitions start quicker
            "offsets.topic.replication.factor": self.replicas,
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": self.replicas,
            "transaction.state.log.min.isr": min(2, self.replicas),
            "transaction.state.log.num.partitions": 1,
            "min.insync.replicas": min(2, self.replicas),
            "default.replication.factor": self.replicas,
            # a group's first member need not wait for others to join
            "group.initial.rebalance.delay.ms": 0,
            # a killed node loses its leaderships after 3 s, not 9
            "broker.session.timeout.ms": 3000,
            "broker.heartbeat.interval.ms": 500,
            # the open transaction of a producer killed -9 is aborted within
            # ~1 s of its transaction.timeout.ms (10 s), not 10 s after it
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": 1000,
            # topics come from the manifest or are named by the test
            "auto.create.topics.enable": str(self.auto_create).lower(),
            "num.partitions": 3,
            "num.network.threads": 2,
            "num.io.threads": 2,
            "log.segment.bytes": 16 * 1024 * 1024,
            "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        }
        s.update(self.settings)
        return "".join("%s=%s\n" % kv for kv in s.items())

    def start(self, topics=(), manifest=False, timeout=90):
        """Formats every node's storage with one cluster id, starts them,
        creates the topics (see create_topics) once all brokers are
        registered.  Returns self."""
        os.makedirs(self.dir, exist_ok=True)
        # one id in 64 would start with "-", which the format tool's argument
        # parser takes for an option ("--cluster-id: expected one argument")
        cluster_id = "-"
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        formats = []
        for n in self.nodes:
            os.makedirs(n.dir, exist_ok=True)
            with open(os.path.join(n.dir, "server.properties"), "w") as f:
                f.write(self._properties(n))
            formats.append(subprocess.Popen(
                java(MAIN_STORAGE, ["format", "-t", cluster_id, "-c", os.path.join(n.dir, "server.properties")],
                     TOOL_HEAP, os.path.join(n.dir, "format.log")),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for p in formats:
            out = p.communicate(timeout=timeout)[0]
            if p.returncode != 0:
                raise RuntimeError("kafka-storage format failed: %s" % out.decode(errors="replace"))
        for n in self.nodes:
            self.start_node(n.id)
        self.create_topics(topics, manifest=manifest, timeout=timeout)
        with open(os.path.join(self.dir, "bootstrap"), "w") as f:
            f.write(self.bootstrap + "\n")
        return self

    def node(self, node_id):
        return self.nodes[node_id - 1]

    def start_node(self, node_id):
        """Starts (or restarts, same ports and data) one node."""
        n = self.node(node_id)
        with open(os.path.join(n.dir, "stdout.log"), "ab") as out:
            n.proc = subprocess.Popen(
                java(MAIN_BROKER, [os.path.join(n.dir, "server.properties")], BROKER_HEAP, n.log),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=None if self.detached else _die_with_parent)
        with open(n.pid_file, "w") as f:
            f.write("%d\n" % n.proc.pid)

    def kill(self, node_id, sig=signal.SIGKILL):
        """kill -9 (or sig) one node and reaps it."""
        n = self.node(node_id)
        if n.proc and n.proc.poll() is None:
            n.proc.send_signal(sig)
            n.proc.wait()

    def stop_node(self, node_id, timeout=30):
        """A controlled shutdown (SIGTERM), SIGKILL after timeout."""
        n = self.node(node_id)
        if n.proc and n.proc.poll() is None:
            n.proc.terminate()
            try:
                n.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(node_id)
        if os.path.exists(n.pid_file):
            os.unlink(n.pid_file)

    def stop(self):
        # all at once: a quorum shutting down node by node waits for itself
        for n in self.nodes:
            if n.proc and n.proc.poll() is None:
                n.proc.terminate()
        for n in self.nodes:
            self.stop_node(n.id, timeout=20)

    def alive(self, node_id):
        n = self.node(node_id)
        return n.proc is not None and n.proc.poll() is None

    def create_topics(self, topics, timeout=60, manifest=False):
        """topics: [(name, partitions, {config})] or "NAME[:P[:K=V,...]]"
        strings; manifest=True adds every topic of ops/k8s/base/topics.yaml
        (a topic also in topics takes its partitions and config from there).
        Waits for all registered brokers first and for every partition's
        leader after.  Existing topics are left as they are."""
        topics = [parse_topic(t) if isinstance(t, str) else t for t in topics]
        if manifest:
            topics = manifest_topics() + topics
        # a topic named again (a test's settings over the manifest's) wins
        topics = list({t[0]: t for t in topics}.values())
        lines = []
        for name, partitions, config in topics:
            config = dict(config)
            if "min.insync.replicas" in config:
                config["min.insync.replicas"] = str(min(int(config["min.insync.replicas"]), self.replicas))
            lines.append(" ".join([name, str(partitions), str(self.replicas)] +
                                  ["%s=%s" % kv for kv in config.items()]))
        classes = self._topics_classes()
        p = subprocess.run(java("Topics", [self.bootstrap, str(len(self.nodes)), str(int(timeout))], TOOL_HEAP,
                                os.path.join(self.dir, "tools.log"),
                                classpath=classes + os.pathsep + os.path.join(LIB, "*")),
                           input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=timeout + 30)
        if p.returncode != 0:
            dead = [n.id for n in self.nodes if n.proc and n.proc.poll() is not None]
            raise RuntimeError("creating topics on %s failed (nodes exited: %s; logs in %s): %s"
                               % (self.bootstrap, dead, self.dir, p.stdout + p.stderr))

    def _topics_classes(self):
        """Topics.java compiled once into var/kafka-<version>/classes."""
        src = os.path.join(HERE, "Topics.java")
        out = os.path.join(KAFKA_HOME, "classes")
        cls = os.path.join(out, "Topics.class")
        if not os.path.exists(cls) or os.path.getmtime(cls) < os.path.getmtime(src):
            os.makedirs(out, exist_ok=True)
            subprocess.run(["javac", "-nowarn", "-cp", os.path.join(LIB, "*"), "-d", out, src], check=True,
                           capture_output=True)
        return out

    def tool(self, main, *args, timeout=60, check=True):
        """Runs one of Kafka's command-line tools (a MAIN_* class) against this
        cluster; returns the CompletedProcess (text)."""
        p = subprocess.run(java(main, args, TOOL_HEAP, os.path.join(self.dir, "tools.log")),
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError("%s %s exited %d: %s" % (main, " ".join(args), p.returncode, p.stderr[-3000:]))
        return p


def stop_dir(directory, timeout=30):
    """Stops the nodes a detached `start` left running, by their PIDs (only
    a Kafka broker: a stale PID file may name another process by now)."""
    pids = []
    for name in sorted(os.listdir(directory)):
        pid_file = os.path.join(directory, name, "pid")
        if name.startswith("node-") and os.path.exists(pid_file):
            with open(pid_file) as f:
                pid = int(f.read())
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    ours = MAIN_BROKER.encode() in f.read().split(b"\0")
            except OSError:
                ours = False
            if ours:
                pids.append((pid, pid_file))
            else:
                os.unlink(pid_file)
    for pid, _ in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + timeout
    for pid, pid_file in pids:
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.unlink(pid_file)


def reattach(directory):
    """A Cluster for a directory a detached `start` made (ports from its properties)."""
    ids = sorted(int(d[5:]) for d in os.listdir(directory) if d.startswith("node-"))
    c = Cluster.__new__(Cluster)
    c.dir, c.auto_create, c.settings, c.detached = os.path.abspath(directory), False, {}, True
    c.nodes = []
    for i in ids:
        with open(os.path.join(c.dir, "node-%d" % i, "server.properties")) as f:
            m = re.search(r"^listeners=PLAINTEXT://127.0.0.1:(\d+),CONTROLLER://127.0.0.1:(\d+)", f.read(), re.M)
        c.nodes.append(Node(c, i, int(m.group(1)), int(m.group(2))))
    c.replicas = min(3, len(ids))
    return c


def main():
    ap = argparse.ArgumentParser(description="A local Apache Kafka cluster (KRaft) on 127.0.0.1.")
    ap.add_argument("command", choices=["start", "run", "topics", "stop"])
    ap.add_argument("dir")
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--manifest", action="store_true", help="create every topic of " + MANIFEST)
    ap.add_argument("--topic", action="append", default=[], help="NAME[:PARTITIONS[:K=V,...]]")
    ap.add_argument("--auto-create", action="store_true", help="let the broker create unknown topics")
    ap.add_argument("--port", type=int, help="node i on PORT+2(i-1), its controller on the next")
    ap.add_argument("--keep", action="store_true", help="start an existing DIR again with its data")
    ap.add_argument("--timeout", type=int, default=90)
    a = ap.parse_args()

    if a.command == "stop":
        stop_dir(a.dir)
        return 0
    if a.command == "topics":
        reattach(a.dir).create_topics(a.topic, manifest=a.manifest, timeout=a.timeout)
        return 0
    resume = a.keep and os.path.exists(os.path.join(a.dir, "node-1", "server.properties"))
    if os.path.isdir(a.dir):
        stop_dir(a.dir)
        if not resume:
            import shutil
            shutil.rmtree(a.dir)
    c = reattach(a.dir) if resume else Cluster(a.dir, nodes=a.nodes, auto_create=a.auto_create, port=a.port,
                                               detached=a.command == "start")
    c.detached = a.command == "start"
    t0 = time.time()
    try:
        if resume:
            for n in c.nodes:
                c.start_node(n.id)
            c.create_topics(a.topic, manifest=a.manifest, timeout=a.timeout)
        else:
            c.start(a.topic, manifest=a.manifest, timeout=a.timeout)
    except BaseException:
        c.stop()
        raise
    print(c.bootstrap, flush=True)
    print("kafka %s: %d node(s) ready in %.1f s, logs in %s" % (kafka_version(), len(c.nodes), time.time() - t0, a.dir),
          file=sys.stderr, flush=True)
    if a.command == "start":
        return 0
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping and all(c.alive(n.id) for n in c.nodes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
