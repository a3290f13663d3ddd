"""A client that pipelines commands and never reads the replies must not grow
ingest's memory without bound nor hold its connection (and the per-IP and
total slots) forever; SIGTERM still drains in time.  Found by review: before
the fix, NOOPs without reading took ingest from 16 MB to 1.4 GB in 20 s."""
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
