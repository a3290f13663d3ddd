"""Ingest behind a load balancer, and the submission port.

PROXY protocol: a real HAProxy (Debian's haproxy, mode tcp) forwards client
connections to ingest with send-proxy (v1) and send-proxy-v2, and the
client's own address (127.0.0.x, picked with the client's source address)
must be what ingest records, limits per IP and writes in Received:.
Headers a balancer would not send (forged, bad, missing, late) are written
by hand on raw sockets: HAProxy cannot be made to send them.

Submission: a listener where MAIL needs AUTH first (530 5.7.0), beside the
relay port where it does not, driven with Python's smtplib."""
import os
import shutil
import smtplib
import socket
import ssl
import struct
import time

import harness
from ingest_util import Dialog, Ingest, eventually, wait_records

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
MAIL = "From: dev@example.com\r\nTo: alerts@iot.localhost\r\nSubject: via proxy\r\n\r\nhello\r\n"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src, dst="127.0.0.1", sport=40000, dport=25, command=1):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIG + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(body)) + body


def start_haproxy(test, backends):
    """backends: {name: (listen port, ingest port, "send-proxy" | "send-proxy-v2", extra server words)}."""
    text = ("global\n  maxconn 200\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n")
    for name, (port, target, proxy, extra) in backends.items():
        text += ("listen %s\n  bind 127.0.0.1:%d\n  server ingest 127.0.0.1:%d %s %s\n"
                 % (name, port, target, proxy, extra))
    cfg = test.write("haproxy.cfg", text)
    check = harness.subprocess.run([HAPROXY, "-c", "-f", cfg], capture_output=True, text=True)
    test.assertEqual(check.returncode, 0, check.stdout + check.stderr)
    # -db: foreground, no daemon; SIGTERM (tearDown) stops it.
    p = test.start([HAPROXY, "-db", "-f", cfg], "haproxy", expect_exit=None)
    for port, _, _, _ in backends.values():
        harness.wait_port(port, proc=p.p)
    return p


def send(port, source, ssl_wrap=False, rcpt="alerts@iot.localhost"):
    """One mail with smtplib from 127.0.0.x; returns the queue id."""
    if ssl_wrap:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = smtplib.SMTP_SSL("127.0.0.1", port, source_address=(source, 0), context=ctx, timeout=10)
    else:
        s = smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=10)
    with s:
        s.ehlo("client.test")
        s.mail("dev@example.com")
        s.rcpt(rcpt)
        # a body of its own: identical mails within dedupe_ttl are one
        code, resp = s.data(MAIL + "from %s\r\n" % source)
        assert code == 250, (code, resp)
    return resp.decode().split()[-1]


class ProxyProtocolTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.sub_port = harness.free_port()
        self.ing = Ingest(self, proxy_protocol="smtp, smtps", max_connections_per_ip="2",
                          listen_submission="127.0.0.1:%d" % self.sub_port).start()
        self.v1, self.v2, self.v2tls = harness.free_port(), harness.free_port(), harness.free_port()
        start_haproxy(self, {
            "v1": (self.v1, self.ing.port, "send-proxy", ""),
            "v2": (self.v2, self.ing.port, "send-proxy-v2", ""),
            "v2tls": (self.v2tls, self.ing.tls_port, "send-proxy-v2", ""),
        })

    def client_of(self, qid):
        rec = [r for r in wait_records(self.ing, 1) if r["key"] == qid]
        self.assertEqual(len(rec), 1)
        raw = self.ing.stored()[qid]
        return rec[0]["value"]["envelope"]["client_ip"], raw

    def test_haproxy_v1_v2_and_tls_carry_the_client_address(self):
        for port, source, tls in ((self.v1, "127.0.0.7", False), (self.v2, "127.0.0.8", False),
                                  (self.v2tls, "127.0.0.9", True)):
            qid = send(port, source, ssl_wrap=tls)
            ip, raw = self.client_of(qid)
            self.assertEqual(ip, source)
            self.assertIn(("[%s]" % source).encode(), raw.split(b"\r\n\r\n")[0])
            self.assertNotIn(b"[127.0.0.1]", raw.split(b"\r\n\r\n")[0])

    def test_per_ip_limit_counts_the_client_not_the_balancer(self):
        held = []
        for _ in range(2):
            d = Dialog(self.v2, source="127.0.0.21")
            d.expect(220)
            held.append(d)
        over = Dialog(self.v2, source="127.0.0.21")
        self.addCleanup(over.close)
        self.assertIn("4.7.0", over.expect(421)[0])
        self.assertTrue(over.closed())
        # every connection comes from HAProxy's 127.0.0.1: other clients still get in
        for src in ("127.0.0.22", "127.0.0.23"):
            d = Dialog(self.v1, source=src)
            d.expect(220)
            held.append(d)
        for d in held:
            d.close()

    def test_connection_without_a_header_is_closed_unanswered(self):
        d = Dialog(self.ing.port)
        self.addCleanup(d.close)
        d.send(b"EHLO client.test\r\n")
        self.assertTrue(d.closed())
        self.assertEqual(d.buf, b"")   # no banner, nothing at all
        eventually(lambda: "PROXY header refused" in self.ing.proc.output()
                   and "no PROXY header where one is required" in self.ing.proc.output(),
                   what="the refusal in the log")

    def test_bad_headers_are_refused(self):
        for bad in (b"PROXY TCP4 127.0.0.5 127.0.0.1 1 25 extra\r\n",
                    b"PROXY TCP4 not-an-ip 127.0.0.1 1 25\r\n",
                    V2_SIG + b"\x22\x11\x00\x0c" + b"\x00" * 12,    # command 2
                    V2_SIG + b"\x21\x11\x04\x00",                   # 1,024 bytes of TLVs: too long
                    b"PROXY " + b"A" * 200):                        # no CRLF in 107 bytes
            d = Dialog(self.ing.port)
            self.addCleanup(d.close)
            d.send(bad)
            self.assertTrue(d.closed(), bad)
            self.assertEqual(d.buf, b"", bad)

    def test_header_that_never_comes_times_out(self):
        d = Dialog(self.ing.port, timeout=20)
        self.addCleanup(d.close)
        d.send(b"PROXY TCP4 127.0.0.5")   # and then nothing
        t0 = time.monotonic()
        self.assertTrue(d.closed(timeout=15))
        self.assertGreater(time.monotonic() - t0, 5)
        self.assertIn("no PROXY header in time", self.ing.proc.output())

    def test_local_and_unknown_keep_the_peer_address(self):
        # a health check from the balancer itself: LOCAL (v2) and UNKNOWN (v1)
        for header in (V2_SIG + b"\x20\x00\x00\x00", b"PROXY UNKNOWN\r\n"):
            d = Dialog(self.ing.port, source="127.0.0.31")
            self.addCleanup(d.close)
            d.send(header)
            d.expect(220)
            d.cmd("EHLO client.test", 250)
            d.cmd("MAIL FROM:<dev@example.com>", 250)
            d.cmd("RCPT TO:<alerts@iot.localhost>", 250)
            d.cmd("DATA", 354)
            d.send(MAIL + ".\r\n")
            qid = d.expect(250)[0].split()[-1]
            self.assertEqual(self.client_of(qid)[0], "127.0.0.31")

    def test_header_and_dialogue_in_one_segment(self):
        # what follows the header in the same read is the session's first input
        d = Dialog(self.ing.port)
        self.addCleanup(d.close)
        d.send(v2_header("127.0.0.41") + b"EHLO client.test\r\nQUIT\r\n")
        d.expect(220)
        self.assertEqual(d.reply()[0], 250)
        self.assertEqual(d.reply()[0], 221)

    def test_forged_header_on_a_listener_without_it(self):
        d = Dialog(self.sub_port, source="127.0.0.51")
        self.addCleanup(d.close)
        d.send(b"PROXY TCP4 6.6.6.6 127.0.0.1 1234 587\r\n")
        d.expect(220)
        lines = d.expect(421)
        self.assertIn("4.7.0", lines[0])
        self.assertIn("PROXY protocol is not enabled", lines[0])
        self.assertTrue(d.closed())
        out = self.ing.proc.output()
        self.assertIn("PROXY header refused: not enabled on this listener", out)
        self.assertIn("127.0.0.51", [l for l in out.splitlines() if "not enabled on this listener" in l][0])
        # a v2 header there reaches no mail either: the binary prefix is bad commands, then QUIT
        d2 = Dialog(self.sub_port)
        self.addCleanup(d2.close)
        d2.expect(220)
        d2.send(v2_header("6.6.6.6"))
        self.assertTrue(d2.closed())


class ProxyFromTest(harness.TestCase):
    def test_only_listed_peers_may_send_headers(self):
        ing = Ingest(self, proxy_protocol="smtp", proxy_from="127.0.0.2, 10.0.0.0/8").start()
        d = Dialog(ing.port, source="127.0.0.3")
        self.addCleanup(d.close)
        lines = d.expect(421)
        self.assertIn("4.7.0", lines[0])
        self.assertIn("not a trusted proxy", lines[0])
        port = harness.free_port()
        start_haproxy(self, {"lb": (port, ing.port, "send-proxy-v2", "source 127.0.0.2")})
        qid = send(port, "127.0.0.61")
        rec = [r for r in wait_records(ing, 1) if r["key"] == qid]
        self.assertEqual(rec[0]["value"]["envelope"]["client_ip"], "127.0.0.61")

    def test_config_errors(self):
        for settings, want in (({"proxy_protocol": "smtp, bogus"}, "'bogus' is not smtp, smtps or submission"),
                               ({"proxy_protocol": "submission"}, "but listen_submission is empty"),
                               ({"require_auth_on": "mx"}, "'mx' is not smtp"),
                               ({"proxy_protocol": "smtp", "proxy_from": "lb.example"},
                                "'lb.example' is neither an address nor a CIDR")):
            ing = Ingest(self, name="bad%d" % len(self.procs), **settings)
            r = self.mailfleet("ingest", "-c", ing.config, check=False, timeout=30)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(want, r.stdout + r.stderr)


class SubmissionTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.sub_port = harness.free_port()
        self.ing = Ingest(self, listen_submission="127.0.0.1:%d" % self.sub_port).start()

    def tls_client(self, port):
        s = smtplib.SMTP("127.0.0.1", port, timeout=10)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s.ehlo("client.test")
        s.starttls(context=ctx)
        s.ehlo("client.test")
        return s

    def test_submission_needs_auth_relay_port_does_not(self):
        with self.tls_client(self.sub_port) as s:
            code, resp = s.mail("dev@example.com")
            self.assertEqual(code, 530)
            self.assertTrue(resp.startswith(b"5.7.0 Authentication required"), resp)
            s.login("device", "device-password")
            self.assertEqual(s.mail("dev@example.com")[0], 250)
            self.assertEqual(s.rcpt("alerts@iot.localhost")[0], 250)
            code, resp = s.data(MAIL)
            self.assertEqual(code, 250)
            qid = resp.decode().split()[-1]
        rec = [r for r in wait_records(self.ing, 1) if r["key"] == qid]
        self.assertEqual(rec[0]["value"]["envelope"]["auth_user"], "device")
        # plaintext on the submission port: no AUTH offered, so no mail at all
        with smtplib.SMTP("127.0.0.1", self.sub_port, timeout=10) as s:
            s.ehlo("client.test")
            self.assertFalse(s.has_extn("auth"))
            self.assertEqual(s.mail("dev@example.com")[0], 530)
        # the relay port keeps its rules: no AUTH needed for a capture rule
        with smtplib.SMTP("127.0.0.1", self.ing.port, timeout=10) as s:
            s.ehlo("client.test")
            self.assertEqual(s.mail("dev@example.com")[0], 250)
        self.assertIn('"listener":"submission","address":"127.0.0.1:%d","auth":"required"' % self.sub_port,
                      self.ing.proc.output())
