"""A client that pipelines commands and never reads the replies must not grow
ingest's memory without bound nor hold its connection (and the per-IP and
total slots) forever; SIGTERM still drains in time.  Found by review: before
the fix, NOOPs without reading took ingest from 16 MB to 1.4 GB in 20 s."""
import os
import smtplib
import socket
import threading
import time

import harness
from ingest_util import Ingest


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class BackpressureTest(harness.TestCase):
    def test_unread_replies_bound_memory_and_time_out(self):
        ing = Ingest(self, command_timeout="2s", drain_timeout="2s").start()
        base = rss_kb(ing.proc.pid)
        s = socket.create_connection(("127.0.0.1", ing.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.recv(512)                              # the greeting, then never read again
        s.setblocking(False)
        chunk = b"NOOP\r\n" * 4096
        sent, stop = [0], threading.Event()

        def flood():
            while not stop.is_set():
                try:
                    sent[0] += s.send(chunk)
                except BlockingIOError:
                    time.sleep(0.01)             # ingest stopped reading: backpressure
                except OSError:
                    return                       # closed by ingest

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        time.sleep(6)
        grown = rss_kb(ing.proc.pid) - base
        self.assertLess(grown, 64 * 1024, "ingest grew %d KB for a client that does not read" % grown)
        self.assertGreater(sent[0], 0)
        # the command timeout then closes the connection hard: a new client is served
        deadline = time.time() + 15
        closed = False
        while time.time() < deadline and not closed:
            try:
                s.send(b"NOOP\r\n")
                time.sleep(0.2)
            except BlockingIOError:
                time.sleep(0.2)
            except OSError:
                closed = True
        stop.set()
        self.assertTrue(closed, "the non-reading client was never disconnected")
        t0 = time.time()
        self.assertEqual(ing.proc.stop(20), 0)
        self.assertLess(time.time() - t0, 10, "SIGTERM drain took too long")


class ErrorLimitTest(harness.TestCase):
    def test_refused_recipients_count_toward_max_errors(self):
        """Relay probing (RCPT after RCPT refused with 550) ends the session
        at max_errors, like unknown commands do."""
        ing = Ingest(self, max_errors=5).start()
        s = socket.create_connection(("127.0.0.1", ing.port), timeout=10)
        f = s.makefile("rb")

        def reply():
            lines = []
            while True:
                line = f.readline().decode()
                lines.append(line)
                if len(line) < 4 or line[3] != "-":
                    return lines

        reply()
        s.sendall(b"EHLO probe.test\r\n")
        reply()
        s.sendall(b"MAIL FROM:<probe@example.com>\r\n")
        self.assertTrue(reply()[-1].startswith("250"))
        codes = []
        for i in range(6):
            s.sendall(b"RCPT TO:<victim%d@elsewhere.example>\r\n" % i)
            r = reply()
            codes += [l[:3] for l in r]
            if "421" in codes:
                break
        self.assertEqual(codes[:5], ["550"] * 5)
        self.assertIn("421", codes)
        self.assertEqual(f.read(), b"")   # closed
        s.close()


class MemoryLimitTest(harness.TestCase):
    def test_buffers_fit_the_memory_limit(self):
        """In a container the mail ingest holds in memory must fit the memory
        limit, or the kernel kills ingest before its 452 back-pressure
        starts: max_buffered left unset becomes half the cgroup's limit, and
        set above that half it is refused at start.  The cgroup file is a
        stand-in in the test's directory (MAILFLEET_CGROUP_ROOT): a test
        cannot give itself a real memory limit here."""
        cg = os.path.join(self.dir, "cgroup")
        os.makedirs(cg)
        with open(os.path.join(cg, "memory.max"), "w") as f:
            f.write("%d\n" % (16 * 1024 * 1024))
        env = {"MAILFLEET_CGROUP_ROOT": cg}
        nolimit = os.path.join(self.dir, "no-cgroup-limit")   # no memory.max: the 512M default
        os.makedirs(nolimit)

        bad = Ingest(self, name="too-big", max_buffered="512M")
        p = self.start([harness.MAILFLEET, "ingest", "-c", bad.config], "too-big", env=env, expect_exit=1)
        self.assertEqual(p.p.wait(timeout=30), 1)
        with open(p.log_path) as f:
            self.assertIn("is more than half of what fits under a memory limit", f.read())

        big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 10000     # 10 MB
        small = b"Subject: small\r\n\r\nhello\r\n"
        for limited in (True, False):
            ing = Ingest(self, name="limited" if limited else "unlimited")
            ing.proc = self.start([harness.MAILFLEET, "ingest", "-c", ing.config], ing.name,
                                  env=env if limited else {"MAILFLEET_CGROUP_ROOT": nolimit})
            harness.wait_port(ing.port, proc=ing.proc.p)
            with smtplib.SMTP("127.0.0.1", ing.port, timeout=30) as c:
                c.sendmail("dev@x.test", ["alerts@iot.localhost"], small)
                if limited:   # 8 MiB of buffers: the 10 MB mail waits for memory, 452
                    with self.assertRaises(smtplib.SMTPDataError) as e:
                        c.sendmail("dev@x.test", ["alerts@iot.localhost"], big)
                    self.assertEqual(e.exception.smtp_code, 452)
                    self.assertIn(b"4.3.1", e.exception.smtp_error)
                else:
                    c.sendmail("dev@x.test", ["alerts@iot.localhost"], big)
            ing.proc.stop()
