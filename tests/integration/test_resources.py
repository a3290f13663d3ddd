"""A full disk under a running fleet (local mode, one process per worker):
the queue, the stores, the state and the outbox live on a small tmpfs of
their own.  Mail accepted before the disk fills waits in the queue while
transform meets ENOSPC; nothing is dead-lettered for it, transform reports
not ready with the reason, ingest refuses new mail at MAIL FROM with
452 4.3.1 (Postfix's answer for queue_minfree) and is not ready either; once
the space is back every accepted mail is delivered and ingest takes mail
again, without an operator."""
import errno
import os
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
        with smtplib.SMTP("127.0.0.1", self.fleet.smtp_port, local_hostname="disk.test", timeout=20) as s:
            s.ehlo()
            code, msg = s.mail("sensor%d@devices.example" % i)
            if code != 250:
                self.assertEqual(code, expect, msg)
                return code, msg
            s.rcpt(CAPTURE)
            code, msg = s.data(mail(i))
            self.assertEqual(code, expect, msg)
            return code, msg

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
