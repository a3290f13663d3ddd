"""A full disk under a running fleet (local mode, one process per worker):
the queue, the stores, the state and the outbox live on a small tmpfs of
their own.  Mail accepted before the disk fills waits in the queue while
transform meets ENOSPC; nothing is dead-lettered for it, transform reports
not ready with the reason, ingest refuses new mail at MAIL FROM with
452 4.3.1 (Postfix's answer for queue_minfree) and is not ready either; once
the space is back every accepted mail is delivered and ingest takes mail
again, without an operator.

Descriptors running out (EMFILE) are the same kind of fault: transform,
limited to the three standard descriptors while it holds mail, retries
without dead-lettering and delivers once the limit is back."""
import errno
import os
import resource
import smtplib
import subprocess
import urllib.error
import urllib.request

import harness
from e2e_util import CAPTURE, MARKER, Fleet

FS_SIZE = "48m"
MIN_FREE = "8M"


def mail(i):
    return ("From: sensor%d@devices.example\r\nTo: %s\r\nSubject: disk-%02d\r\n"
            "Message-ID: <disk-%d@devices.example>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n"
            "Content-Type: text/plain\r\n\r\nReading %d.\r\n%s[r%d@x.example]%s\r\n--b\r\n"
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"d%d.bin\"\r\n\r\n%s\r\n--b--\r\n"
            % (i, CAPTURE, i, i, i, MARKER, i, MARKER, i, "\r\n".join(["QUJD" * 19] * 60))).encode()


def readyz(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def fill(path):
    """Writes path until the file system has no block left."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 4096, 512):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise


def send(test, fleet, i, expect=250):
    """Mail i through fleet's ingest; asserts the answer to MAIL FROM (when
    it refuses) or to the end of DATA is expect."""
    with smtplib.SMTP("127.0.0.1", fleet.smtp_port, local_hostname="resources.test", timeout=20) as s:
        s.ehlo()
        code, msg = s.mail("sensor%d@devices.example" % i)
        if code != 250:
            test.assertEqual(code, expect, msg)
            return code, msg
        s.rcpt(CAPTURE)
        code, msg = s.data(mail(i))
        test.assertEqual(code, expect, msg)
        return code, msg


class DiskFullTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        fs = self.path("fs")
        os.makedirs(fs)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + FS_SIZE + ",mode=0755", "tmpfs", fs], check=True)
        # runs after the processes are stopped (cleanups run last-in first)
        self.addCleanup(subprocess.run, ["umount", "-l", fs], check=False)
        for d in ("queue", "store", "state", "outbox"):
            os.makedirs(os.path.join(fs, d))
            os.symlink(os.path.join(fs, d), self.path(d))
        self.fs = fs

    def send(self, i, expect=250):
        return send(self, self.fleet, i, expect)

    def test_full_disk_pauses_and_resumes_without_loss(self):
        self.fleet = fleet = Fleet(self, "local", per_worker=True, workers=("ingest", "transform", "send"),
                                   settings={"ingest": {"min_free": MIN_FREE},
                                             "transform": {"retry_backoff": "200ms"}})
        fleet.start()
        self.send(0)
        harness.wait_for(lambda: fleet.outbox_mail("r0@x.example"), timeout=30, what="mail 0 delivered")

        # Mails accepted while transform is paused wait in the queue ...
        transform = fleet.procs["transform"]
        transform.signal(19)   # SIGSTOP
        for i in range(1, 11):
            self.send(i)
        # ... then the disk fills up under everyone.
        filler = os.path.join(self.fs, "filler")
        fill(filler)
        transform.signal(18)   # SIGCONT

        tport, iport = fleet.metrics["transform"], fleet.metrics["ingest"]
        code, why = harness.wait_for(lambda: (lambda r: r if r[0] == 503 and "space" in r[1].lower() else None)(
            readyz(tport)), timeout=30, what="transform not ready for lack of space")
        self.assertIn("transform loop held back", why)
        code, why = harness.wait_for(lambda: (lambda r: r if r[0] == 503 else None)(readyz(iport)), timeout=10,
                                     what="ingest not ready")
        self.assertIn("min_free", why)
        code, msg = self.send(99, expect=452)
        self.assertIn(b"4.3.1 Insufficient system storage", msg)

        # Space back: everything accepted goes out, nobody restarted.
        os.unlink(filler)
        for i in range(1, 11):
            harness.wait_for(lambda: fleet.outbox_mail("r%d@x.example" % i), timeout=60,
                             what="mail %d delivered after the disk freed" % i)
        harness.wait_for(lambda: readyz(tport)[0] == 200 and readyz(iport)[0] == 200, timeout=30,
                         what="both ready again")
        self.send(11)
        harness.wait_for(lambda: fleet.outbox_mail("r11@x.example"), timeout=30, what="mail 11 delivered")
        self.assertEqual(fleet.dlq_list(), [])
        self.assertEqual(fleet.read("mailfleet.inbound.dlq"), [])
        for i in range(12):
            self.assertEqual(len(fleet.outbox_mail("r%d@x.example" % i)), 1, i)
        self.assertIn("No space left on device", transform.output())
        self.assertTrue(fleet.alive(), fleet.logs())


class DescriptorsTest(harness.TestCase):
    def test_descriptor_limit_holds_mail_back_without_loss(self):
        fleet = Fleet(self, "local", per_worker=True, workers=("ingest", "transform", "send"),
                      settings={"transform": {"retry_backoff": "200ms"}})
        fleet.start()
        transform = fleet.procs["transform"]
        transform.signal(19)   # SIGSTOP: the mails wait in the queue
        for i in range(5):
            send(self, fleet, i)
        # Descriptors 0-2 only: every open(), socket() and accept() fails
        # with EMFILE; those already open stay usable.
        soft, hard = resource.prlimit(transform.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(transform.pid, resource.RLIMIT_NOFILE, (3, hard))
        transform.signal(18)
        harness.wait_for(lambda: "Too many open files" in transform.output(), timeout=30,
                         what="transform meets EMFILE")
        # more tries than max_attempts (3): an environment error is never
        # dead-lettered
        harness.wait_for(lambda: transform.output().count("Too many open files") >= 5, timeout=30,
                         what="transform retries while the limit holds")
        self.assertIn('"cause":"environment"', transform.output())
        self.assertEqual(fleet.outbox_mail("r0@x.example"), [])
        resource.prlimit(transform.pid, resource.RLIMIT_NOFILE, (soft, hard))
        for i in range(5):
            harness.wait_for(lambda: fleet.outbox_mail("r%d@x.example" % i), timeout=60,
                             what="mail %d delivered once descriptors are back" % i)
        harness.wait_for(lambda: readyz(fleet.metrics["transform"])[0] == 200, timeout=30,
                         what="transform ready again")
        self.assertEqual(fleet.read("mailfleet.inbound.dlq"), [])
        for i in range(5):
            self.assertEqual(len(fleet.outbox_mail("r%d@x.example" % i)), 1, i)
        self.assertTrue(fleet.alive(), fleet.logs())
