"""Shared helpers for integration tests: real processes on 127.0.0.1.

Each test gets a fresh directory (self.dir), free ports, and processes that
are stopped in tearDown.  Nothing here fakes a peer: it starts real programs
(the mailfleet binary, Apache Kafka, s3rver, smtp-sink...).

How a process ends is part of the test: at tearDown every process a test
started must have exited 0 (our programs, SIGTERM'd if still running) or died
of the SIGTERM tearDown sent (peers that keep the default action).  A crash,
a sanitizer's non-zero exit or a hang past the grace fails the test.  A test
that kills a process on purpose (kill9) or expects it to fail says so:
start(..., expect_exit=N) or None for "any".
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("MAILFLEET_BUILD", os.path.join(ROOT, "build"))
MAILFLEET = os.path.join(BUILD, "mailfleet")
TOOLS = os.path.join(BUILD, "tools")
NODE_BIN = os.path.join(ROOT, "tests", "node_modules", ".bin")

sys.path.insert(0, os.path.join(ROOT, "ops", "kafka"))
import cluster as kafka_cluster  # noqa: E402  (ops/kafka/cluster.py)


# How long tearDown waits after SIGTERM: mailfleet's default shutdown_grace
# (10 s) plus a margin for the sanitizer builds.
STOP_GRACE = float(os.environ.get("MAILFLEET_STOP_GRACE", "15"))


def wait_ready(port, timeout=30.0, proc=None):
    """Waits until GET /readyz on 127.0.0.1:port answers 200: every worker of
    the process has registered its routes and checks (a listening socket
    alone says nothing about routes)."""
    import urllib.request
    import urllib.error

    def ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before /readyz was 200" % proc.returncode)
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False
    wait_for(ready, timeout=timeout, interval=0.05, what="/readyz on port %d" % port)


_ports_given = set()


def free_port():
    """A port free now, and never one this process handed out before: the
    kernel may offer a port again once its socket is closed, and two
    listeners of one test (SMTP and HTTP) were once given the same one."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def wait_port(port, timeout=15.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d" % (proc.returncode, port))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("nothing listening on 127.0.0.1:%d" % port)


def wait_for(pred, timeout=15.0, interval=0.1, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError("timed out waiting for " + what)


def ours(path):
    """True for programs this repository builds (mailfleet, tests/tools)."""
    return os.path.abspath(path).startswith(BUILD + os.sep)


class Proc:
    """A started process whose stdout+stderr go to a log file.

    expect_exit: the exit code tearDown accepts (None: any; kill9 sets it)."""

    def __init__(self, args, log_path, env=None, cwd=None, stdin=None, expect_exit=0):
        self.args = args
        self.expect_exit = expect_exit
        self.terminated = False   # we sent SIGTERM
        self.killed = False       # we had to SIGKILL it after SIGTERM
        self.log_path = log_path
        self.log = open(log_path, "ab")
        full_env = dict(os.environ)
        for k, v in (env or {}).items():   # None: not in the environment at all
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v
        self.started = time.monotonic()
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=full_env,
                                  cwd=cwd, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  start_new_session=True)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            os.killpg(self.p.pid, sig)

    def sigterm_taken(self):
        """True once a thread of the process blocks or catches SIGTERM (our
        workers block it in main before any thread starts, and every thread
        inherits that; main itself unblocks it only inside sigtimedwait), or
        the process has gone."""
        bit = 1 << (signal.SIGTERM - 1)
        try:
            for task in os.listdir("/proc/%d/task" % self.p.pid):
                with open("/proc/%d/task/%s/status" % (self.p.pid, task)) as f:
                    for line in f:
                        if line.startswith(("SigBlk:", "SigCgt:")) and int(line.split()[1], 16) & bit:
                            return True
        except OSError:
            return True
        return not self.alive()

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL; returns the exit code.  A program of ours
        stopped right after its start gets the SIGTERM only once its main has
        taken the signal (a barrier, not a sleep): before that, the default
        action would kill it while the dynamic loader still runs."""
        if self.alive() and ours(self.args[0]):
            while not self.sigterm_taken() and time.monotonic() - self.started < 3.0:
                time.sleep(0.01)
        if self.alive():
            self.terminated = True
            self.signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.signal(signal.SIGKILL)
                self.p.wait()
        self.log.close()
        return self.p.returncode

    def kill9(self):
        """Kills it on purpose: its end is expected, whatever it is."""
        self.expect_exit = None
        if self.alive():
            self.signal(signal.SIGKILL)
            self.p.wait()
        self.log.close()

    def exit_problem(self):
        """None when the process ended as expected, else why not (after stop)."""
        rc = self.p.returncode
        name = os.path.basename(self.args[0])
        if self.expect_exit is None or rc is None:
            return None
        if self.killed:
            return "%s did not stop within the grace after SIGTERM (killed)" % name
        if rc == self.expect_exit:
            return None
        if rc == -signal.SIGTERM and self.terminated and not ours(self.args[0]):
            return None   # a peer that keeps SIGTERM's default action
        if rc < 0:
            return "%s died of %s" % (name, signal.Signals(-rc).name)
        return "%s exited %d (expected %d)" % (name, rc, self.expect_exit)

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class TestCase(unittest.TestCase):
    """Gives self.dir (removed on success, kept on failure for reading logs)."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mf-%s-" % self._testMethodName)
        self.procs = []

    def tearDown(self):
        problems = []
        for p in reversed(self.procs):
            p.stop(STOP_GRACE)
            why = p.exit_problem()
            if why:
                tail = p.output()[-3000:]
                problems.append("%s (log %s):\n%s" % (why, p.log_path, tail))
        # Python 3.11 resets _Outcome.success to True for the tearDown part; the
        # test's own error or failure is already in the result by then
        res = getattr(self._outcome, "result", None)
        ok = getattr(self._outcome, "success", True) and not any(
            t is self for t, _ in getattr(res, "errors", []) + getattr(res, "failures", []))
        if ok and not problems and not os.environ.get("KEEP_TEST_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print("kept test dir:", self.dir)
        if problems:
            self.fail("a process ended badly:\n" + "\n".join(problems))

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def start(self, args, name, env=None, cwd=None, expect_exit=0):
        p = Proc(args, self.path(name + ".log"), env=env, cwd=cwd or self.dir, expect_exit=expect_exit)
        self.procs.append(p)
        return p

    def write(self, name, text, mode=0o644):
        path = self.path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def mailfleet(self, *args, check=True, env=None, timeout=60, input=None):
        """Runs `mailfleet ARGS` to completion; returns CompletedProcess (text)."""
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        r = subprocess.run([MAILFLEET] + list(args), capture_output=True, text=True, env=full_env,
                           cwd=self.dir, timeout=timeout, input=input)
        if check and r.returncode != 0:
            self.fail("mailfleet %s exited %d\nstdout:%s\nstderr:%s" % (" ".join(args), r.returncode,
                                                                      r.stdout, r.stderr))
        return r


def fleet_config(test, http_port=None, public_port=None, extra=""):
    """A config for `mailfleet run` inside test.dir on free ports; workers'
    sections get their own free ports.  Returns the INI text."""
    http_port = http_port or free_port()
    public_port = public_port or free_port()
    test.ports = {"http": http_port, "public": public_port}
    text = f"""[mailfleet]
bus = local:{test.path("queue")}
store_incoming = file:{test.path("store", "incoming")}
store_attachments = file:{test.path("store", "attachments")}
state_dir = {test.path("state")}
http_listen = 127.0.0.1:{http_port}
public_listen = 127.0.0.1:{public_port}
public_base_url = http://127.0.0.1:{public_port}
token_keys = t1:{"5a" * 32}
[ingest]
listen = 127.0.0.1:{free_port()}
listen_tls = 127.0.0.1:{free_port()}
tls_cert = {test.path("tls", "cert.pem")}
tls_key = {test.path("tls", "key.pem")}
tls_generate = true
[send]
transport = outbox:{test.path("outbox")}
"""
    return text + extra


def start_private_postfix(test, main_cf):
    """A private Postfix instance (Debian's postfix; DESIGN.md §7 "Private
    Postfix" has the recipe and how to debug a failed start) listening on
    127.0.0.1:port, chroot off, logging to <dir>/maillog.  main_cf: what this instance is
    for (mydestination, maps, transports); "{d}" in it is the instance dir.
    Returns (dir, port); it is aborted at cleanup."""
    # unix socket paths must stay short: the instance lives in its own /tmp dir
    d = tempfile.mkdtemp(prefix="mfpf-", dir="/tmp")
    os.chmod(d, 0o755)
    test.addCleanup(shutil.rmtree, d, True)
    os.makedirs(d + "/queue")
    os.makedirs(d + "/data")
    subprocess.run(["chown", "postfix", d + "/data"], check=True)
    port = free_port()
    out = []
    with open("/etc/postfix/master.cf") as f:
        for line in f:
            fields = line.split()
            if line[0] not in "# \t\n" and len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = "127.0.0.1:%d" % port
                fields[4] = "n"   # no chroot
                line = "  ".join(fields) + "\n"
            out.append(line)
    with open(d + "/master.cf", "w") as f:
        f.write("".join(out))
    with open(d + "/main.cf", "w") as f:
        f.write("""compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = {d}/maillog
maillog_file_prefixes = /var, {d}
""".format(d=d) + main_cf.replace("{d}", d))
    r = subprocess.run(["postfix", "-c", d, "start"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        # Postfix explains itself only on a terminal
        chk = subprocess.run(["script", "-qc", "postfix -c %s check" % d, "/dev/null"],
                             capture_output=True, text=True, timeout=60)
        test.fail("postfix did not start: %s%s%s" % (r.stdout, r.stderr, chk.stdout))
    test.addCleanup(lambda: subprocess.run(["postfix", "-c", d, "abort"], capture_output=True, timeout=60))
    wait_port(port)
    return d, port


def start_kafka(test, nodes=1, topics=(), manifest=False, auto_create=False):
    """Starts a real Apache Kafka cluster (ops/kafka/cluster.py: KRaft,
    combined broker+controller nodes on free ports, in a directory of its
    own); returns (cluster, bootstrap).  The cluster object kills (-9), stops
    and restarts single nodes, creates topics and runs Kafka's tools.
    test: a TestCase (stopped at its cleanup) or a TestCase class from
    setUpClass (stopped after the class's last test), so that one cluster
    serves a whole file: ~6 s per 1-node start, ~15 s for 3 nodes.
    topics: "name[:partitions[:k=v,...]]" or (name, partitions, {config});
    manifest=True adds every topic of ops/k8s/base/topics.yaml, as Strimzi
    creates them (replication min(3, nodes)).  auto_create lets the broker
    create topics on first use (off otherwise: a misspelt topic must fail)."""
    d = tempfile.mkdtemp(prefix="mf-kafka-")
    c = kafka_cluster.Cluster(d, nodes=nodes, auto_create=auto_create)

    def cleanup():
        c.stop()
        if not os.environ.get("KEEP_TEST_DIRS"):
            shutil.rmtree(d, ignore_errors=True)
    if isinstance(test, type):
        test.addClassCleanup(cleanup)
    else:
        test.addCleanup(cleanup)
    c.start(topics, manifest=manifest)
    return c, c.bootstrap
