"""ingest with real clients: swaks (plain, STARTTLS, AUTH PLAIN/LOGIN, implicit
TLS), openssl s_client speaking the reference dialogue, Python smtplib;
records and raw mail checked in the queue and the store, records validated
against schemas/."""
import base64
import json
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time

import harness
from ingest_util import Ingest, wait_records

QUEUED = re.compile(r"250 2\.0\.0 Ok: queued as ([0-9a-f-]{36})")


def swaks(*args, timeout=30):
    r = subprocess.run(["swaks", "--timeout", "10"] + list(args), capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


class IngestClientsTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.ing = Ingest(self).start()

    def check_one(self, qid, *, tls, auth_user, rcpts=("alerts@iot.localhost",), mail_from="dev@example.com"):
        recs = [r for r in wait_records(self.ing, 1) if r["key"] == qid]
        self.assertEqual(len(recs), 1)
        v = recs[0]["value"]
        self.assertEqual(v["schema"], "mailfleet.inbound.v1")
        self.assertEqual(v["id"], qid)
        self.assertEqual(v["rule"], "capture")
        self.assertEqual(v["envelope"]["mail_from"], mail_from)
        self.assertEqual(v["envelope"]["rcpt_to"], list(rcpts))
        self.assertEqual(v["envelope"]["tls"], tls)
        self.assertEqual(v["envelope"]["auth_user"], auth_user)
        raw = self.ing.stored()[qid]
        self.assertEqual(v["store"]["size"], len(raw))
        self.assertTrue(v["store"]["key"].endswith(qid + ".eml"))
        import hashlib
        self.assertEqual(v["store"]["sha256"], hashlib.sha256(raw).hexdigest())
        self.assertTrue(raw.startswith(b"Received: from "))
        self.assertIn(("id " + qid).encode(), raw)
        with_ = b"ESMTPSA" if tls and auth_user else b"ESMTPS" if tls else b"ESMTP"
        self.assertIn(b" with " + with_ + b" id", raw)
        self.validate(v, "inbound")
        return v, raw

    def validate(self, value, name):
        import jsonschema
        with open(os.path.join(harness.ROOT, "schemas", "%s.v1.json" % name)) as f:
            schema = json.load(f)
        jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(value)

    def test_swaks_plain(self):
        rc, out = swaks("--server", "127.0.0.1:%d" % self.ing.port, "--to", "alerts@iot.localhost", "--from",
                        "dev@example.com")
        self.assertEqual(rc, 0, out)
        qid = QUEUED.search(out).group(1)
        self.check_one(qid, tls=False, auth_user=None)

    def test_swaks_starttls_auth_plain(self):
        rc, out = swaks("--server", "127.0.0.1:%d" % self.ing.port, "--to", "alerts@iot.localhost", "--from",
                        "dev@example.com", "--tls", "--auth", "PLAIN", "--auth-user", "device",
                        "--auth-password", "device-password")
        self.assertEqual(rc, 0, out)
        self.assertIn("235 2.7.0", out)
        v, _ = self.check_one(QUEUED.search(out).group(1), tls=True, auth_user="device")
        self.assertRegex(v["envelope"]["tls_version"], r"^TLSv1\.[23]$")

    def test_swaks_starttls_auth_login(self):
        rc, out = swaks("--server", "127.0.0.1:%d" % self.ing.port, "--to", "alerts@iot.localhost", "--from",
                        "dev@example.com", "--tls", "--auth", "LOGIN", "--auth-user", "device",
                        "--auth-password", "device-password")
        self.assertEqual(rc, 0, out)
        self.check_one(QUEUED.search(out).group(1), tls=True, auth_user="device")

    def test_swaks_wrong_password(self):
        rc, out = swaks("--server", "127.0.0.1:%d" % self.ing.port, "--to", "alerts@iot.localhost", "--from",
                        "dev@example.com", "--tls", "--auth", "PLAIN", "--auth-user", "device",
                        "--auth-password", "wrong")
        self.assertNotEqual(rc, 0)
        self.assertIn("535 5.7.8", out)
        self.assertNotIn("wrong", self.ing.proc.output())   # never logged

    def test_swaks_tls_on_connect(self):
        rc, out = swaks("--server", "127.0.0.1:%d" % self.ing.tls_port, "--tls-on-connect", "--to",
                        "alerts@iot.localhost", "--from", "dev@example.com", "--auth", "LOGIN", "--auth-user",
                        "device", "--auth-password", "device-password")
        self.assertEqual(rc, 0, out)
        self.check_one(QUEUED.search(out).group(1), tls=True, auth_user="device")

    def test_openssl_s_client_reference_dialogue(self):
        attachment = base64.encodebytes(os.urandom(3000)).decode()   # LF lines: s_client -crlf makes CRLF
        lines = [
            "EHLO sensor-17.example",
            "AUTH LOGIN",
            base64.b64encode(b"device").decode(),
            base64.b64encode(b"device-password").decode(),
            "MAIL FROM:<sensor-17@sensors.example>",
            "RCPT TO:<alerts@iot.localhost>",
            "DATA",
            "From: sensor-17@sensors.example",
            "To: alerts@iot.localhost",
            "Subject: Alarm: temperature",
            "Message-ID: <alarm-17@sensors.example>",
            "MIME-Version: 1.0",
            'Content-Type: multipart/mixed; boundary="b1"',
            "",
            "--b1",
            "Content-Type: text/plain",
            "",
            ":Email_Rxers_Code:[ops@example.com]:Email_Rxers_Code:",
            ".leading dot line",
            "--b1",
            'Content-Type: application/octet-stream; name="diag.bin"',
            "Content-Transfer-Encoding: base64",
            'Content-Disposition: attachment; filename="diag.bin"',
            "",
            attachment.rstrip("\n"),
            "--b1--",
            ".",
            "QUIT",
        ]
        # s_client sends what it reads from stdin; dot-stuff like a client must.
        text = "\n".join(("." + l) if l.startswith(".") and l != "." else l for l in lines) + "\n"
        r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % self.ing.port,
                            "-crlf", "-quiet"], input=text, capture_output=True, text=True, timeout=30)
        self.assertIn("235 2.7.0", r.stdout, r.stdout + r.stderr)
        qid = QUEUED.search(r.stdout).group(1)
        self.assertIn("221 2.0.0", r.stdout)
        v, raw = self.check_one(qid, tls=True, auth_user="device", mail_from="sensor-17@sensors.example")
        self.assertEqual(v["message_id"], "<alarm-17@sensors.example>")
        self.assertIn(b"\r\n.leading dot line\r\n", raw)   # unstuffed
        self.assertIn(attachment.replace("\n", "\r\n").encode(), raw)

    def test_smtplib_multi_rcpt_and_actions(self):
        with smtplib.SMTP("127.0.0.1", self.ing.port, timeout=10) as s:
            s.starttls(context=ssl._create_unverified_context())
            s.login("device", "device-password")
            refused = s.sendmail("dev@example.com", ["alerts@iot.localhost", "other@iot.localhost",
                                                     "bounce+abc@iot.localhost", "unsubscribe+tok.sig@iot.localhost"],
                                 b"Subject: mixed\r\n\r\nbody\r\n")
            self.assertEqual(refused, {})
        inbound = wait_records(self.ing, 1)
        self.assertEqual(inbound[0]["value"]["envelope"]["rcpt_to"], ["alerts@iot.localhost", "other@iot.localhost"])
        fb = wait_records(self.ing, 2, "mailfleet.feedback")
        kinds = sorted(r["value"]["kind"] for r in fb)
        self.assertEqual(kinds, ["dsn", "unsubscribe"])
        for r in fb:
            self.validate(r["value"], "feedback")
            self.assertEqual(r["value"]["store"]["key"], inbound[0]["value"]["store"]["key"])
            if r["value"]["kind"] == "unsubscribe":
                self.assertEqual(r["value"]["unsubscribe"], {"method": "mailto", "token": "tok.sig"})
                self.assertEqual(r["value"]["envelope"]["rcpt_to"], ["unsubscribe+tok.sig@iot.localhost"])
            else:
                self.assertEqual(r["value"]["envelope"]["rcpt_to"], ["bounce+abc@iot.localhost"])
        self.assertEqual(len(self.ing.stored()), 1)

    def test_feedback_only_null_sender(self):
        with smtplib.SMTP("127.0.0.1", self.ing.port, timeout=10) as s:
            s.sendmail("", ["bounce+v1@iot.localhost"], b"Subject: Undelivered\r\n\r\nreport\r\n")
        fb = wait_records(self.ing, 1, "mailfleet.feedback")
        self.assertEqual(fb[0]["value"]["envelope"]["mail_from"], "")
        self.assertEqual(self.ing.records("mailfleet.inbound"), [])

    def test_smtplib_dedupe_retry(self):
        msg = b"Subject: same\r\nMessage-ID: <same@x.example>\r\n\r\nidentical body\r\n"
        ids = []
        for _ in range(2):
            with smtplib.SMTP("127.0.0.1", self.ing.port, timeout=10) as s:
                s.ehlo("client")
                s.mail("dev@example.com")
                s.rcpt("alerts@iot.localhost")
                code, text = s.data(msg)
                self.assertEqual(code, 250)
                ids.append(re.search(rb"queued as ([0-9a-f-]{36})", text).group(1).decode())
        self.assertEqual(ids[0], ids[1])
        time.sleep(0.3)
        self.assertEqual(len(self.ing.records()), 1)
        self.assertEqual(len(self.ing.stored()), 1)
        # A different envelope is a different message.
        with smtplib.SMTP("127.0.0.1", self.ing.port, timeout=10) as s:
            s.sendmail("other@example.com", ["alerts@iot.localhost"], msg)
        wait_records(self.ing, 2)
        self.assertIn('mailfleet_ingest_messages_total{result="duplicate",reason="dedupe"} 1', self.ing.metrics())

    def test_metrics_and_readyz(self):
        with smtplib.SMTP("127.0.0.1", self.ing.port, timeout=10) as s:
            s.sendmail("dev@example.com", ["alerts@iot.localhost"], b"Subject: m\r\n\r\nx\r\n")
        # a session is counted when its socket is closed, just after the 221
        m = harness.wait_for(lambda: (lambda t: t if 'sessions_total{outcome="quit"} 1' in t else None)(
            self.ing.metrics()), 5, what="session counted")
        # wait_port's probe is a connection too
        self.assertRegex(m, r"mailfleet_ingest_connections_total [12]\n")
        self.assertIn('mailfleet_ingest_sessions_total{outcome="quit"} 1', m)
        self.assertIn('mailfleet_ingest_messages_total{result="accepted",reason=""} 1', m)
        self.assertRegex(m, r"mailfleet_ingest_data_to_ack_seconds_count 1")
        self.assertIn("mailfleet_spool_backlog_records 0", m)
        self.assertIn("mailfleet_ingest_bytes_total", m)
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % self.ing.http_port, timeout=5) as r:
            self.assertEqual(r.status, 200)
            self.assertIn("ingest: ready", r.read().decode())

    def test_users_add_verb(self):
        cfg = self.write("u.ini", "[ingest]\nusers_file = %s\n" % self.path("users"))
        r = self.mailfleet("users", "add", "alice", "-c", cfg, input="s3cret pass\n")
        self.assertIn("alice", r.stdout)
        with open(self.path("users")) as f:
            line = f.read().strip()
        self.assertRegex(line, r"^alice:\$y\$[^:]+$")
        self.assertEqual(os.stat(self.path("users")).st_mode & 0o777, 0o600)
        self.assertNotIn("s3cret", line)
        # replacing keeps one line per user
        self.mailfleet("users", "add", "alice", "-c", cfg, input="other\n")
        self.mailfleet("users", "add", "bob", "-c", cfg, input="b\n")
        with open(self.path("users")) as f:
            names = [l.split(":")[0] for l in f.read().split()]
        self.assertEqual(names, ["alice", "bob"])
        r = self.mailfleet("users", "add", "bad:name", "-c", cfg, input="x\n", check=False)
        self.assertNotEqual(r.returncode, 0)

    def test_sighup_reloads_users(self):
        users = self.path("users")
        cfg_ing = Ingest(self, name="ingest2", users_file=users)
        cfg_ing.start()
        with smtplib.SMTP("127.0.0.1", cfg_ing.port, timeout=10) as s:
            s.starttls(context=ssl._create_unverified_context())
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                s.login("carol", "pw-carol")
        cfg = self.write("u.ini", "[ingest]\nusers_file = %s\n" % users)
        self.mailfleet("users", "add", "carol", "-c", cfg, input="pw-carol\n")
        cfg_ing.proc.signal(1)   # SIGHUP
        time.sleep(0.5)
        with smtplib.SMTP("127.0.0.1", cfg_ing.port, timeout=10) as s:
            s.starttls(context=ssl._create_unverified_context())
            s.login("carol", "pw-carol")

    def test_sighup_reloads_certificate(self):
        def served_cert():
            import socket as sk
            ctx = ssl._create_unverified_context()
            with sk.create_connection(("127.0.0.1", self.ing.tls_port), timeout=5) as raw:
                with ctx.wrap_socket(raw) as t:
                    return t.getpeercert(binary_form=True)
        before = served_cert()
        cert, key = self.path("tls", "cert.pem"), self.path("tls", "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", key + ".new", "-out", cert + ".new", "-days", "2", "-subj",
                        "/CN=reloaded.test"], check=True, capture_output=True, timeout=30)
        os.rename(key + ".new", key)
        os.rename(cert + ".new", cert)
        self.ing.proc.signal(1)   # SIGHUP
        harness.wait_for(lambda: served_cert() != before, 5, what="new certificate served")
        self.assertIn("TLS certificate reloaded", self.ing.proc.output())



class SecretVolumeReloadTest(harness.TestCase):
    """Certificates and users as a Kubernetes Secret volume lays them out
    (files are symlinks through ..data, which is swapped to a new directory
    on an update): ingest picks up a renewal by itself, without SIGHUP or a
    restart, and keeps the old certificate while a new one does not load."""

    def make_version(self, root, name, cn, days, users_from=None):
        d = os.path.join(root, name)
        os.makedirs(d)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", os.path.join(d, "tls.key"), "-out", os.path.join(d, "tls.crt"),
                        "-days", str(days), "-subj", "/CN=" + cn], check=True, capture_output=True, timeout=30)
        if users_from:
            shutil.copy(users_from, os.path.join(d, "users"))
        else:
            open(os.path.join(d, "users"), "w").close()
        return d

    def swap(self, root, name):
        tmp = os.path.join(root, "..data_tmp")
        os.symlink(name, tmp)
        os.rename(tmp, os.path.join(root, "..data"))   # atomic, as the kubelet does

    def served(self, ing):
        ctx = ssl._create_unverified_context()
        with socket.create_connection(("127.0.0.1", ing.tls_port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as t:
                return t.getpeercert(binary_form=True)

    def expiry_metric(self, ing):
        for line in ing.metrics().splitlines():
            if line.startswith("mailfleet_tls_certificate_expiry_timestamp_seconds "):
                return float(line.split()[1])
        return None

    def not_after(self, path):
        r = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", path], capture_output=True,
                           text=True, check=True, timeout=30)
        import email.utils
        return email.utils.parsedate_to_datetime(r.stdout.strip().split("=", 1)[1].replace(" GMT", " +0000")
                                                 ).timestamp()

    def test_renewal_and_new_users_are_picked_up_without_a_signal(self):
        root = self.path("secret")
        os.makedirs(root)
        self.make_version(root, "..v1", "first.test", 30)
        self.swap(root, "..v1")
        for f in ("tls.crt", "tls.key", "users"):
            os.symlink(os.path.join("..data", f), os.path.join(root, f))
        ing = Ingest(self, tls_cert=os.path.join(root, "tls.crt"), tls_key=os.path.join(root, "tls.key"),
                     tls_generate="false", users_file=os.path.join(root, "users"), tls_watch="200ms").start()
        first = self.served(ing)
        self.assertAlmostEqual(self.expiry_metric(ing), self.not_after(os.path.join(root, "..v1", "tls.crt")),
                               delta=1)
        # a renewal with a new user: a new directory, then the symlink swap
        users = self.path("users.new")
        cfg = self.write("u.ini", "[ingest]\nusers_file = %s\n" % users)
        self.mailfleet("users", "add", "carol", "-c", cfg, input="pw-carol\n")
        v2 = self.make_version(root, "..v2", "renewed.test", 60, users_from=users)
        self.swap(root, "..v2")
        harness.wait_for(lambda: self.served(ing) != first, 10, what="the renewed certificate served")
        self.assertAlmostEqual(self.expiry_metric(ing), self.not_after(os.path.join(v2, "tls.crt")), delta=1)
        harness.wait_for(lambda: "users reloaded" in ing.proc.output(), 10, what="users reloaded")
        with smtplib.SMTP("127.0.0.1", ing.port, timeout=10) as s:
            s.starttls(context=ssl._create_unverified_context())
            s.login("carol", "pw-carol")
        renewed = self.served(ing)
        # a broken update (a key that does not match) keeps the certificate being served
        v3 = self.make_version(root, "..v3", "broken.test", 90)
        shutil.copy(os.path.join(root, "..v1", "tls.key"), os.path.join(v3, "tls.key"))
        self.swap(root, "..v3")
        harness.wait_for(lambda: "TLS reload failed; keeping the old certificate" in ing.proc.output(), 10,
                         what="the failed reload logged")
        self.assertEqual(self.served(ing), renewed)
        self.assertNotIn("SIGHUP", ing.proc.output())


if __name__ == "__main__":
    import unittest
    unittest.main()
