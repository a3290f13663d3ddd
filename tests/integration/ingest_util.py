"""Helpers for the ingest tests: a config writer, a started ingest, a raw SMTP
dialogue client (lines sent / reply codes expected), and readers for what
ingest wrote (queue records via tests/tools/queue_dump, store files)."""
import json
import os
import socket
import ssl
import subprocess
import time

import harness

DEV_USERS = os.path.join(harness.ROOT, "ops", "dev.users")   # device / device-password
QUEUE_DUMP = os.path.join(harness.TOOLS, "queue_dump")

RULES = """
[rule.blocked]
recipients = blocked@iot.localhost
action = reject

[rule.capture]
recipients = alerts@iot.localhost, other@iot.localhost
action = capture

[rule.secure]
recipients = secure@iot.localhost
action = capture
require_tls = true
require_auth = true
allowed_senders = device:*@sensors.example

[rule.bounces]
recipients = bounce+*@iot.localhost
action = feedback

[rule.unsubscribe]
recipients = unsubscribe+*@iot.localhost
action = unsubscribe
"""


class Ingest:
    """One `mailfleet ingest` in test.dir with free ports; settings override
    the [ingest] defaults of the test config."""

    def __init__(self, test, name="ingest", rules=RULES, mailfleet_extra="", **settings):
        self.test = test
        self.port = harness.free_port()
        self.tls_port = harness.free_port()
        self.http_port = harness.free_port()
        d = test.dir
        self.queue = "local:" + os.path.join(d, "queue")
        self.store_dir = os.path.join(d, "store", "incoming")
        ingest = {
            "listen": "127.0.0.1:%d" % self.port,
            "listen_tls": "127.0.0.1:%d" % self.tls_port,
            "metrics_listen": "127.0.0.1:%d" % self.http_port,
            "hostname": "mx.test",
            "tls_cert": os.path.join(d, "tls", "cert.pem"),
            "tls_key": os.path.join(d, "tls", "key.pem"),
            "tls_generate": "true",
            "users_file": DEV_USERS,
            "command_timeout": "10s",
            "data_timeout": "10s",
            "auth_delay": "50ms",
            "auth_delay_max": "200ms",
            "drain_timeout": "3s",
        }
        ingest.update({k: str(v) for k, v in settings.items()})
        text = "[mailfleet]\nbus = %s\nstore_incoming = file:%s\nstate_dir = %s\nlog_level = info\n%s\n[ingest]\n" % (
            self.queue, self.store_dir, os.path.join(d, "state"), mailfleet_extra)
        text += "".join("%s = %s\n" % kv for kv in ingest.items())
        text += rules
        self.config = test.write(name + ".ini", text)
        self.name = name
        self.proc = None

    def start(self):
        self.proc = self.test.start([harness.MAILFLEET, "ingest", "-c", self.config], self.name)
        harness.wait_port(self.port, proc=self.proc.p)
        time.sleep(0.3)   # let the probe connection close: it counts against per-IP limits
        return self

    def records(self, topic="mailfleet.inbound"):
        r = subprocess.run([QUEUE_DUMP, self.queue, topic], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            # A topic nobody wrote yet does not exist.
            return []
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def stored(self):
        out = {}
        for root, _, files in os.walk(self.store_dir):
            for f in files:
                if f.endswith(".eml"):
                    with open(os.path.join(root, f), "rb") as fh:
                        out[f[:-4]] = fh.read()
        return out

    def metrics(self):
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.http_port, timeout=5) as r:
            return r.read().decode()


class Dialog:
    """A raw SMTP client: send exact bytes, read whole replies."""

    def __init__(self, port, timeout=10.0, source=None):
        """source: a local address to connect from (another 127.x client)."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def reply(self):
        """(code, [lines]) of one reply, multi-line ones included."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def cmd(self, line, expect=None):
        self.send(line + "\r\n")
        code, lines = self.reply()
        if expect is not None and code != expect:
            raise AssertionError("%r -> %s, expected %s" % (line, lines, expect))
        return code, lines

    def expect(self, code):
        got, lines = self.reply()
        if got != code:
            raise AssertionError("got %s, expected %d" % (lines, code))
        return lines

    def starttls(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mx.test")

    def closed(self, timeout=5.0):
        """True when the server closes the connection within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(4096):
                    return True
        except (ConnectionResetError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def script(test, port, steps, timeout=10.0):
    """Runs [(bytes to send or None, expected code or None), ...] after the
    banner; returns the Dialog for more checks."""
    d = Dialog(port, timeout)
    test.addCleanup(d.close)
    d.expect(220)
    for send, code in steps:
        if send is not None:
            d.send(send)
        if code is not None:
            got, lines = d.reply()
            test.assertEqual(got, code, "after %r: %s" % (send, lines))
            if code not in (220, 250, 334, 354) or (got == 250 and not lines[0].startswith("250-")):
                # every reply but the greeting, EHLO, 334 and 354 has an enhanced code
                test.assertRegex(lines[-1], r"^\d{3} [245]\.\d{1,3}\.\d{1,3} ")
    return d


def wait_records(ing, n, topic="mailfleet.inbound", timeout=15.0):
    return harness.wait_for(lambda: (lambda r: r if len(r) >= n else None)(ing.records(topic)), timeout,
                            what="%d records on %s" % (n, topic))


def eventually(pred, timeout=10.0, what="condition"):
    return harness.wait_for(pred, timeout, what=what)


def now():
    return time.monotonic()
