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

import harness

ROUNDS = int(os.environ.get("MAILFLEET_STARTSTOP_ROUNDS", "200"))
# What sanitizers and GLib print when something is wrong.  The sanitizers
# also write to log_path files when run.sh sets one; this catches the rest.
BAD = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer",
       "ThreadSanitizer:", "CRITICAL **", "AddressSanitizer:DEADLYSIGNAL")


class StartStopTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.http_port = harness.free_port()
        self.cfg = self.write("mf.ini", harness.fleet_config(self, http_port=self.http_port))

    def round(self, i, log):
        p = subprocess.Popen([harness.MAILFLEET, "run", "-c", self.cfg], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, cwd=self.dir)
        try:
            harness.wait_ready(self.http_port, timeout=60, proc=p)
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
