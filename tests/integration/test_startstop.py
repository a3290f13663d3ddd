"""`mailfleet run` started and stopped many times: start-up and shutdown
races (process-wide library set-up, signal delivery, threads joined before
the libraries are torn down) show up as crashes, sanitizer reports or a
non-zero exit once in a while, so one clean start is not evidence.

Each round starts every worker with the dev-like config (harness.fleet_config),
waits until /readyz is 200 (every worker registered its routes and consumers),
sends SIGTERM and requires exit code 0 within the grace and no sanitizer or
GLib critical in the output.  The state directory is kept between rounds, as a
restart would find it.

MAILFLEET_STARTSTOP_ROUNDS sets the number of rounds (default 200); tests/run.sh
runs this file under ASan/UBSan (200 rounds) and under ThreadSanitizer (fewer:
it is much slower), with MAILFLEET_BUILD pointing at that build."""
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import harness

ROUNDS = int(os.environ.get("MAILFLEET_STARTSTOP_ROUNDS", "200"))
# What sanitizers and GLib print when something is wrong.  The sanitizers
# also write to log_path files when run.sh sets one; this catches the rest.
# One route of each worker that adds some: (server, path).
ROUTES = (("public", "/a/x"), ("public", "/u/x"), ("public", "/sns"), ("public", "/v2/email/suppression/x"),
          ("http", "/alarms"))
BAD = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer",
       "ThreadSanitizer:", "CRITICAL **", "AddressSanitizer:DEADLYSIGNAL")


class StartStopTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.http_port = harness.free_port()
        self.cfg = self.write("mf.ini", harness.fleet_config(self, http_port=self.http_port))

    def routed(self, port, path):
        """True unless the server's router answers "no such route" (a
        handler may still say 404 for a missing object: that is routed)."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5):
                return True
        except urllib.error.HTTPError as e:
            return not (e.code == 404 and e.read() == b"not found\n")

    def round(self, i, log):
        p = subprocess.Popen([harness.MAILFLEET, "run", "-c", self.cfg], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, cwd=self.dir)
        try:
            harness.wait_ready(self.http_port, timeout=60, proc=p)
            # /readyz 200 means every worker's routes are served
            for port, path in ROUTES:
                port = self.ports[port]
                self.assertTrue(self.routed(port, path), "round %d: %s not routed at /readyz 200" % (i + 1, path))
            p.send_signal(signal.SIGTERM)
            rc = p.wait(harness.STOP_GRACE)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        return rc

    def test_start_ready_sigterm_many_times(self):
        t0 = time.monotonic()
        for i in range(ROUNDS):
            path = self.path("round-%03d.log" % i)
            with open(path, "wb") as log:
                try:
                    rc = self.round(i, log)
                except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as e:
                    rc = "%s: %s" % (type(e).__name__, e)
            with open(path, "rb") as f:
                out = f.read().decode("utf-8", "replace")
            bad = [b for b in BAD if b in out]
            if rc != 0 or bad:
                self.fail("round %d of %d: exit %s%s\n%s" % (i + 1, ROUNDS, rc,
                                                              " with " + ", ".join(bad) if bad else "",
                                                              out[-6000:]))
            self.assertIn('"msg":"mailfleet stopped"', out, "round %d" % (i + 1))
            os.unlink(path)
        print("%d start/stop rounds in %.1f s" % (ROUNDS, time.monotonic() - t0))


class KafkaDownShutdownTest(harness.TestCase):
    """SIGTERM with every Kafka broker unreachable: the process drains and
    exits 0 within [mailfleet] shutdown_grace (default 10 s), although
    workers are inside broker calls (metadata, consumer close) that would
    otherwise wait for a broker that never answers."""

    def stop_within(self, args, grace_s, settle_s=3.0):
        p = self.start(args, "proc")
        def healthy():
            if not p.alive():
                raise RuntimeError("exited with %s:\n%s" % (p.p.returncode, p.output()[-3000:]))
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % self.http_port, timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        harness.wait_for(healthy, timeout=30, what="/healthz")
        time.sleep(settle_s)   # the workers are now retrying broker calls
        t0 = time.monotonic()
        rc = p.stop(grace_s + 5)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, p.output()[-3000:])
        self.assertLess(took, grace_s, "took %.1f s to stop" % took)
        return p.output()

    def kafka_config(self, extra=""):
        self.http_port = harness.free_port()
        dead = harness.free_port()   # nothing listens there
        text = harness.fleet_config(self, http_port=self.http_port)
        text = text.replace("bus = local:%s\n" % self.path("queue"),
                            "bus = kafka:127.0.0.1:%d\n%s" % (dead, extra))
        self.assertIn("bus = kafka:", text)
        return self.write("mf.ini", text)

    def test_run_all_default_grace(self):
        cfg = self.kafka_config()
        out = self.stop_within([harness.MAILFLEET, "run", "-c", cfg], 10.0)
        self.assertIn('"msg":"mailfleet stopped"', out)

    def test_monitor_short_grace(self):
        # the monitor samples topic offsets: metadata calls that, with no
        # broker, each take their whole timeout
        cfg = self.kafka_config("shutdown_grace = 3s\n")
        with open(cfg, "a") as f:
            f.write("[monitor]\nmetrics_listen = 127.0.0.1:%d\n" % self.http_port)
        self.stop_within([harness.MAILFLEET, "monitor", "-c", cfg], 3.0, settle_s=2.0)
