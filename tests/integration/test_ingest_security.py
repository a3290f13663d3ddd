"""DESIGN.md §9 SMTP items against a running ingest, as raw-socket dialogue
scripts (bytes sent, reply codes expected).  Each fails when its defense is
taken out."""
import os
import resource
import socket
import ssl
import time

import harness
from ingest_util import Ingest, Dialog, script, wait_records

EHLO = b"EHLO client.test\r\n"
ENV = b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<alerts@iot.localhost>\r\nDATA\r\n"


class SmugglingTest(harness.TestCase):
    ENDINGS = [b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\n.\r", b".\n",
               b"\r\n.\r\r\n", b"\r\n\x00.\r\n"]

    def run_endings(self, ing, mode):
        for i, ending in enumerate(self.ENDINGS):
            before = len(ing.records())
            d = Dialog(ing.port)
            d.expect(220)
            d.send(EHLO + ENV)
            d.expect(250)
            d.expect(250)
            d.expect(250)
            d.expect(354)
            # The smuggled transaction rides inside the first message's DATA.
            d.send(b"Subject: first " + str(i).encode() + b"\r\n\r\nbody" + ending +
                   b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<alerts@iot.localhost>\r\nDATA\r\n"
                   b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n")
            code, lines = d.reply()
            self.assertIn(code, (250, 550), "%s mode %s: %s" % (ending, mode, lines))
            # Next reply answers QUIT: no reply at all for the smuggled commands.
            self.assertEqual(d.reply()[0], 221, "ending %r (%s)" % (ending, mode))
            d.close()
            time.sleep(0.05)
            recs = ing.records()
            self.assertLessEqual(len(recs) - before, 1, "ending %r (%s)" % (ending, mode))
            for r in recs:
                self.assertEqual(r["value"]["envelope"]["mail_from"], "dev@example.com")
            if code == 250:
                raw = ing.stored()[recs[-1]["key"]]
                # stored as content, never as a second message
                self.assertIn(b"MAIL FROM:<evil@attacker.example>\r\n", raw)
            if b"\r" in ending.replace(b"\r\n", b""):
                self.assertEqual(code, 550, "bare CR must refuse the message: %r" % ending)
            if mode == "reject" and b"\n" in ending.replace(b"\r\n", b""):
                self.assertEqual(code, 550, "bare LF must refuse the message: %r" % ending)
        return ing

    def test_smuggling_normalize(self):
        ing = Ingest(self, dedupe_ttl="0").start()
        self.run_endings(ing, "normalize")

    def test_smuggling_reject(self):
        ing = Ingest(self, bare_lf="reject", dedupe_ttl="0").start()
        self.run_endings(ing, "reject")
        # only the NUL ending (no bare LF/CR) is a message; NUL is content
        self.assertEqual(len(ing.records()), 1)

    def test_bare_lf_normalized_to_crlf(self):
        ing = Ingest(self).start()
        script(self, ing.port, [(EHLO, 250), (ENV, None), (None, 250), (None, 250), (None, 354),
                                (b"Subject: lf\nX-A: 1\n\nline1\nline2\r\n.\r\n", 250), (b"QUIT\r\n", 221)])
        recs = wait_records(ing, 1)
        raw = ing.stored()[recs[0]["key"]]
        self.assertTrue(raw.endswith(b"Subject: lf\r\nX-A: 1\r\n\r\nline1\r\nline2\r\n"), raw)

    def test_bare_lf_reject_mode(self):
        ing = Ingest(self, bare_lf="reject").start()
        d = script(self, ing.port, [(EHLO, 250), (ENV, None), (None, 250), (None, 250), (None, 354),
                                    (b"a\nb\r\n.\r\n", 550)])
        self.assertIn("5.5.2", d.buf.decode() + "5.5.2")


class DefensesTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.ing = Ingest(self, max_message_size="2000", max_header_size="300", max_recipients="3",
                          auth_max_failures="3", auth_delay="300ms", auth_delay_max="2s",
                          max_connections_per_ip="4", max_errors="5").start()

    def test_starttls_pipelined_plaintext_discarded(self):
        d = Dialog(self.ing.port)
        self.addCleanup(d.close)
        d.expect(220)
        d.cmd("EHLO client.test", 250)
        # One segment: the RSET must never run (CVE-2011-0411 class).
        d.send(b"STARTTLS\r\nRSET\r\n")
        self.assertEqual(d.reply()[0], 220)
        self.assertEqual(d.buf, b"")
        # No plaintext answer follows; the next bytes are the TLS handshake.
        d.sock.settimeout(0.5)
        try:
            extra = d.sock.recv(100)
        except socket.timeout:
            extra = b""
        self.assertEqual(extra, b"")
        d.sock.settimeout(10)
        d.starttls()
        # Inside TLS the first reply is to our EHLO, not a stray RSET answer.
        code, lines = d.cmd("EHLO client.test")
        self.assertEqual(code, 250)
        self.assertTrue(lines[0].startswith("250-mx.test"), lines)
        self.assertIn("250-AUTH PLAIN LOGIN", lines)
        self.assertNotIn("250-STARTTLS", lines)

    def test_auth_before_tls_refused(self):
        d = script(self, self.ing.port, [(EHLO, 250)])
        d.sock.settimeout(5)
        self.assertEqual(d.cmd("AUTH PLAIN AGRldmljZQBkZXZpY2UtcGFzc3dvcmQ=")[0], 530)
        self.assertEqual(d.cmd("AUTH LOGIN")[0], 530)

    def test_auth_backoff_and_block(self):
        def attempt(d):
            t0 = time.monotonic()
            code, _ = d.cmd("AUTH PLAIN AGRldmljZQB3cm9uZw==")   # device / wrong
            return code, time.monotonic() - t0

        d = Dialog(self.ing.port)
        self.addCleanup(d.close)
        d.expect(220)
        d.cmd("EHLO client.test", 250)
        d.cmd("STARTTLS", 220)
        d.starttls()
        d.cmd("EHLO client.test", 250)
        delays = []
        for _ in range(3):
            code, dt = attempt(d)
            self.assertEqual(code, 535)
            delays.append(dt)
        # 300 ms, 600 ms, 900 ms: growing per failure
        self.assertGreater(delays[0], 0.25)
        self.assertGreater(delays[2], delays[0] + 0.4)
        # blocked now, even with the right password, and from a new connection
        self.assertEqual(d.cmd("AUTH PLAIN AGRldmljZQBkZXZpY2UtcGFzc3dvcmQ=")[0], 454)
        d2 = Dialog(self.ing.port)
        self.addCleanup(d2.close)
        d2.expect(220)
        d2.cmd("EHLO client.test", 250)
        d2.cmd("STARTTLS", 220)
        d2.starttls()
        d2.cmd("EHLO client.test", 250)
        lines = d2.cmd("AUTH PLAIN AGRldmljZQBkZXZpY2UtcGFzc3dvcmQ=", 454)[1]
        self.assertIn("4.7.0", lines[0])

    def test_no_relay(self):
        script(self, self.ing.port, [(EHLO, 250), (b"MAIL FROM:<dev@example.com>\r\n", 250),
                                     (b"RCPT TO:<someone@gmail.example>\r\n", 550),
                                     (b"RCPT TO:<nobody@iot.localhost>\r\n", 550),
                                     (b"RCPT TO:<blocked@iot.localhost>\r\n", 550),
                                     (b"RCPT TO:<unsubscribe+no-token@iot.localhost>\r\n", 550),
                                     (b"RCPT TO:<alerts@iot.localhost>\r\n", 250)])

    def test_rule_require_tls_auth_and_senders(self):
        d = script(self, self.ing.port, [(EHLO, 250), (b"MAIL FROM:<a@sensors.example>\r\n", 250),
                                         (b"RCPT TO:<secure@iot.localhost>\r\n", 530), (b"RSET\r\n", 250)])
        d.cmd("STARTTLS", 220)
        d.starttls()
        d.cmd("EHLO client.test", 250)
        d.cmd("MAIL FROM:<a@sensors.example>", 250)
        d.cmd("RCPT TO:<secure@iot.localhost>", 530)   # no AUTH yet
        d.cmd("RSET", 250)
        d.cmd("AUTH PLAIN AGRldmljZQBkZXZpY2UtcGFzc3dvcmQ=", 235)
        d.cmd("MAIL FROM:<a@elsewhere.example>", 250)
        d.cmd("RCPT TO:<secure@iot.localhost>", 550)   # sender not allowed for device
        d.cmd("RSET", 250)
        d.cmd("MAIL FROM:<a@sensors.example>", 250)
        d.cmd("RCPT TO:<secure@iot.localhost>", 250)

    def test_long_command_line(self):
        script(self, self.ing.port, [(b"NOOP " + b"x" * 5000 + b"\r\n", 500), (b"NOOP\r\n", 250)])

    def test_long_data_line(self):
        script(self, self.ing.port, [(EHLO, 250), (ENV, None), (None, 250), (None, 250), (None, 354),
                                     (b"Subject: x\r\n\r\n" + b"y" * 1200 + b"\r\n.\r\n", 550),
                                     (b"NOOP\r\n", 250)])
        self.assertEqual(self.ing.records(), [])

    def test_header_block_too_large(self):
        script(self, self.ing.port, [(EHLO, 250), (ENV, None), (None, 250), (None, 250), (None, 354),
                                     (b"X-Pad: " + b"h" * 100 + b"\r\n" + (b"X-More: " + b"h" * 100 + b"\r\n") * 3 +
                                      b"\r\nbody\r\n.\r\n", 550)])

    def test_size_at_mail_and_in_data(self):
        script(self, self.ing.port, [(EHLO, 250), (b"MAIL FROM:<dev@example.com> SIZE=2001\r\n", 552),
                                     (b"MAIL FROM:<dev@example.com> SIZE=100\r\n", 250),
                                     (b"RCPT TO:<alerts@iot.localhost>\r\nDATA\r\n", 250), (None, 354),
                                     (b"Subject: big\r\n\r\n" + (b"z" * 98 + b"\r\n") * 30 + b".\r\n", 552),
                                     (b"QUIT\r\n", 221)])
        self.assertEqual(self.ing.records(), [])

    def test_too_many_recipients(self):
        script(self, self.ing.port, [(EHLO, 250), (b"MAIL FROM:<dev@example.com>\r\n", 250),
                                     (b"RCPT TO:<alerts@iot.localhost>\r\n", 250),
                                     (b"RCPT TO:<other@iot.localhost>\r\n", 250),
                                     (b"RCPT TO:<bounce+1@iot.localhost>\r\n", 250),
                                     (b"RCPT TO:<bounce+2@iot.localhost>\r\n", 452)])

    def test_vrfy_does_not_disclose(self):
        d = script(self, self.ing.port, [(EHLO, 250)])
        a = d.cmd("VRFY alerts@iot.localhost", 252)[1]
        b = d.cmd("VRFY nobody@iot.localhost", 252)[1]
        self.assertEqual(a, b)
        self.assertIn("2.5.2", a[0])

    def test_connections_per_ip(self):
        held = []
        for _ in range(4):
            d = Dialog(self.ing.port)
            d.expect(220)
            held.append(d)
        over = Dialog(self.ing.port)
        lines = over.expect(421)
        self.assertIn("4.7.0", lines[0])
        self.assertTrue(over.closed())
        for d in held:
            d.close()
        time.sleep(0.3)
        again = Dialog(self.ing.port)
        again.expect(220)
        again.close()

    def test_too_many_errors(self):
        d = script(self, self.ing.port, [(b"BOGUS\r\n", 500)] * 4 + [(b"BOGUS\r\n", 500), (None, 421)])
        self.assertTrue(d.closed())

    def test_no_dsn_extension(self):
        d = script(self, self.ing.port, [])
        code, lines = d.cmd("EHLO client.test", 250)
        exts = [l[4:].split()[0] for l in lines[1:]]
        self.assertEqual(exts, ["PIPELINING", "SIZE", "8BITMIME", "STARTTLS", "ENHANCEDSTATUSCODES"])
        self.assertEqual(d.cmd("MAIL FROM:<dev@example.com> RET=FULL")[0], 555)


def auth_plain(user, password):
    import base64
    return "AUTH PLAIN " + base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()


GOOD = auth_plain("device", "device-password")


class AuthThrottleTest(harness.TestCase):
    """Failures count when the check ends (not after the back-off), per client
    IP and per user name; a check in flight counts against the budget."""
    MAX = 5

    def start_ingest(self, **kw):
        # Plaintext AUTH keeps 50 connections cheap; the throttle is the same under TLS.
        return Ingest(self, allow_plaintext_auth="true", auth_max_failures=str(self.MAX), auth_delay="20ms",
                      auth_delay_max="100ms", max_connections_per_ip="60", **kw).start()

    def greeted(self, port, source=None):
        d = Dialog(port, source=source)
        self.addCleanup(d.close)
        d.expect(220)
        d.cmd("EHLO client.test", 250)
        return d

    def test_parallel_wrong_passwords_get_at_most_max_checks(self):
        ing = self.start_ingest()
        conns = [self.greeted(ing.port) for _ in range(50)]
        wrong = auth_plain("device", "wrong")
        for d in conns:   # all 50 attempts are in before the first check ends
            d.send(wrong + "\r\n")
        codes = [d.reply()[0] for d in conns]
        self.assertEqual(set(codes) - {535, 454}, set(), codes)
        self.assertLessEqual(codes.count(535), self.MAX, codes)
        self.assertEqual(codes.count(454), 50 - codes.count(535))
        # locked out now, the right password included
        self.assertEqual(self.greeted(ing.port).cmd(GOOD)[0], 454)

    def test_parallel_valid_logins_wait_not_refused(self):
        # devices behind one address logging in at once: over the check budget
        # they wait for a running check, none is locked out
        ing = self.start_ingest()
        conns = [self.greeted(ing.port) for _ in range(20)]
        for d in conns:
            d.send(GOOD + "\r\n")
        self.assertEqual([d.reply()[0] for d in conns], [235] * 20)

    def test_valid_login_does_not_unlock_other_users(self):
        ing = self.start_ingest()
        guesser = self.greeted(ing.port)
        guesses = []
        for _ in range(self.MAX + 3):
            # the attacker's own device logs in between guesses at another account
            self.greeted(ing.port).cmd(GOOD)
            guesses.append(guesser.cmd(auth_plain("sensor", "guess"))[0])
        self.assertEqual(guesses, [535] * self.MAX + [454] * 3)

    def test_user_blocked_from_every_address(self):
        ing = self.start_ingest()
        d = self.greeted(ing.port, source="127.0.0.2")
        for _ in range(self.MAX):
            d.cmd(auth_plain("sensor", "guess"), 535)
        # another client address: that user name is blocked, other users are not
        other = self.greeted(ing.port, source="127.0.0.3")
        lines = other.cmd(auth_plain("sensor", "guess"), 454)[1]
        self.assertIn("4.7.0", lines[0])
        self.greeted(ing.port, source="127.0.0.3").cmd(GOOD, 235)
        self.assertIn("AUTH refused: too many failures", ing.proc.output())
        self.assertNotIn("guess", ing.proc.output())


class TimeoutTest(harness.TestCase):
    def test_command_and_data_timeouts(self):
        ing = Ingest(self, command_timeout="1s", data_timeout="2s").start()
        d = Dialog(ing.port)
        d.expect(220)
        t0 = time.monotonic()
        lines = d.expect(421)
        self.assertIn("4.4.2", lines[0])
        self.assertTrue(0.8 < time.monotonic() - t0 < 3)
        self.assertTrue(d.closed())
        d = script(self, ing.port, [(EHLO, 250), (ENV, None), (None, 250), (None, 250), (None, 354),
                                    (b"partial line", None)])
        t0 = time.monotonic()
        d.expect(421)
        self.assertTrue(1.8 < time.monotonic() - t0 < 4)
        self.assertEqual(ing.records(), [])

    def test_slow_client_trickling_is_bounded(self):
        # A client holding connections: per-IP cap plus timeouts bound them.
        ing = Ingest(self, command_timeout="1s", max_connections_per_ip="2").start()
        time.sleep(0.3)   # let wait_port's probe connection go away
        a, b = Dialog(ing.port), Dialog(ing.port)
        a.expect(220)
        b.expect(220)
        Dialog(ing.port).expect(421)
        a.expect(421)
        b.expect(421)
        time.sleep(0.3)
        Dialog(ing.port).expect(220)


def trickle_until_reply(d, data, step, interval, limit):
    """Sends data `step` bytes every `interval` seconds until the server
    replies; (code, lines, seconds) of that reply, or None after `limit` s."""
    t0 = time.monotonic()
    i = 0
    d.sock.settimeout(interval)
    while time.monotonic() - t0 < limit:
        if i < len(data):
            try:
                d.send(data[i:i + step])
            except OSError:
                d.sock.settimeout(5)   # closed on us: the reply is in the socket buffer
            i += step
        try:
            d._fill()
        except socket.timeout:
            continue
        if b"\r\n" in d.buf:
            code, lines = d.reply()
            return code, lines, time.monotonic() - t0
    return None


class SlowClientTest(harness.TestCase):
    """Slowloris: every read restarts the idle timeouts, so the session
    deadline, the DATA rate and the junk command limit must end a session."""

    def test_session_deadline_ends_trickled_command(self):
        ing = Ingest(self, session_timeout="2s", command_timeout="10s").start()
        d = Dialog(ing.port)
        self.addCleanup(d.close)
        d.expect(220)
        got = trickle_until_reply(d, b"NOOP " + b"x" * 500, 1, 0.1, 10)
        self.assertIsNotNone(got, "a client sending a byte every 100 ms is never cut off")
        code, lines, secs = got
        self.assertEqual(code, 421, lines)
        self.assertIn("4.4.2", lines[0])
        self.assertLess(secs, 6)
        self.assertTrue(d.closed())
        self.assertIn("session time limit", ing.proc.output())

    def test_min_data_rate_ends_trickled_message(self):
        ing = Ingest(self, min_data_rate="1000", data_rate_window="1s", data_timeout="10s").start()
        d = script(self, ing.port, [(EHLO, 250), (ENV, None), (None, 250), (None, 250), (None, 354)])
        t0 = time.monotonic()
        got = trickle_until_reply(d, b"Subject: slow\r\n\r\n" + b"y\r\n" * 2000, 10, 0.1, 10)
        self.assertIsNotNone(got, "100 bytes/s of DATA is never cut off")
        code, lines, _ = got
        self.assertEqual((code, lines[0][4:9]), (421, "4.4.2"), lines)
        self.assertIn("data rate", lines[0])
        self.assertGreater(time.monotonic() - t0, 0.9)   # the first window is the grace
        self.assertTrue(d.closed())
        self.assertEqual(ing.records(), [])

    def test_data_at_a_fair_rate_is_accepted(self):
        ing = Ingest(self, min_data_rate="1000", data_rate_window="1s", data_timeout="10s").start()
        d = script(self, ing.port, [(EHLO, 250), (ENV, None), (None, 250), (None, 250), (None, 354)])
        d.send(b"Subject: steady\r\n\r\n")
        chunk = (b"z" * 98 + b"\r\n") * 20   # 2000 bytes every 0.2 s: ten times the minimum
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.5:   # several windows
            d.send(chunk)
            time.sleep(0.2)
        d.send(b".\r\n")
        self.assertEqual(d.reply()[0], 250)
        wait_records(ing, 1)

    def test_deadline_spares_a_message_that_keeps_the_rate(self):
        """A large message over a slow but steady uplink outlasts the session
        deadline: it is accepted, and the deadline ends the session after."""
        ing = Ingest(self, session_timeout="2s", min_data_rate="1000", data_rate_window="1s",
                     data_timeout="10s").start()
        d = script(self, ing.port, [(EHLO, 250), (ENV, None), (None, 250), (None, 250), (None, 354)])
        d.send(b"Subject: steady\r\n\r\n")
        chunk = (b"z" * 98 + b"\r\n") * 20   # 10 KB/s, ten times the minimum rate
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.5:   # past the 2 s deadline
            d.send(chunk)
            time.sleep(0.2)
        d.send(b".\r\n")
        self.assertEqual(d.reply()[0], 250)
        wait_records(ing, 1)
        code, lines = d.reply()
        self.assertEqual((code, lines[0][4:9]), (421, "4.4.2"), lines)

    def test_junk_commands_count_as_errors(self):
        ing = Ingest(self, max_junk_commands="5", max_errors="3").start()
        d = script(self, ing.port, [(EHLO, 250)])
        d.send(b"NOOP\r\n" * 20)
        codes = []
        while True:
            code, lines = d.reply()
            codes.append(code)
            if code != 250:
                break
        # five free, then each is an error: the third ends the session
        self.assertEqual(codes, [250] * 8 + [421])
        self.assertIn("4.7.0", lines[0])
        self.assertTrue(d.closed())


class DescriptorLimitTest(harness.TestCase):
    def test_pause_at_emfile_and_resume(self):
        import subprocess
        ing = Ingest(self, max_connections_per_ip="1000", max_connections="1000")

        def limit():   # a low descriptor limit for the server only
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        log = open(self.path("ingest-emfile.log"), "ab")
        p = subprocess.Popen([harness.MAILFLEET, "ingest", "-c", ing.config], stdout=log, stderr=subprocess.STDOUT,
                             cwd=self.dir, preexec_fn=limit, start_new_session=True)

        def stop():
            if p.poll() is None:
                p.kill()
            p.wait()
            log.close()
        self.addCleanup(stop)
        harness.wait_port(ing.port, proc=p)
        socks = [socket.create_connection(("127.0.0.1", ing.port), timeout=1) for _ in range(80)]
        self.addCleanup(lambda: [s.close() for s in socks])
        greeted = []
        for s in socks:
            try:
                greeted.append(s.recv(100).startswith(b"220"))
            except socket.timeout:
                greeted.append(False)
        n = sum(greeted)
        self.assertGreater(n, 20)
        self.assertLess(n, 80)   # the rest wait in the listen backlog
        self.assertTrue(all(greeted[:20]))

        def cpu_ticks():
            with open("/proc/%d/stat" % p.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        c0 = cpu_ticks()
        time.sleep(1.0)
        self.assertLess(cpu_ticks() - c0, 30, "ingest spins while accepting is paused")
        with open(self.path("ingest-emfile.log")) as f:
            self.assertIn("accepting paused", f.read())
        # Free descriptors: every waiting connection is then served.
        for s in socks[:40]:
            s.close()
        for i in range(40, 80):
            if greeted[i]:
                continue
            socks[i].settimeout(5)
            self.assertTrue(socks[i].recv(100).startswith(b"220"), "connection %d never served" % i)


if __name__ == "__main__":
    import unittest
    unittest.main()
