"""The HTTP side every worker serves: /metrics (checked by promtool), /healthz,
/readyz on the internal listener only; and a clean exit on SIGTERM."""
import subprocess
import urllib.request
import harness


class HttpTest(harness.TestCase):
    def test_endpoints_and_promtool(self):
        port = harness.free_port()
        cfg = self.write("mf.ini", harness.fleet_config(self, http_port=port))
        p = self.start([harness.MAILFLEET, "run", "-c", cfg], "run")
        harness.wait_port(port, proc=p.p)
        base = "http://127.0.0.1:%d" % port
        body = urllib.request.urlopen(base + "/healthz", timeout=5).read().decode()
        self.assertEqual(body.strip(), "ok")

        def ready():
            try:
                return urllib.request.urlopen(base + "/readyz", timeout=5).status == 200
            except urllib.error.HTTPError:
                return False
        harness.wait_for(ready, what="every worker ready")
        metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read()
        chk = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True)
        self.assertEqual(chk.returncode, 0, chk.stdout + chk.stderr)
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(base + "/nosuch", timeout=5)
        self.assertEqual(cm.exception.code, 404)
        self.assertEqual(p.stop(10), 0)
        self.assertIn('"msg":"mailfleet stopped"', p.output())


def status(url, data=None):
    try:
        with urllib.request.urlopen(url, data=data, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class ExposureTest(harness.TestCase):
    """/metrics, /healthz and /readyz tell anyone queue depths, failures and
    which dependency is down: the public listener must not serve them."""

    def check(self, internal, public):
        harness.wait_for(lambda: status("http://127.0.0.1:%d/readyz" % internal) == 200, what="ready")
        for path in ("/metrics", "/healthz", "/readyz"):
            self.assertEqual(status("http://127.0.0.1:%d%s" % (internal, path)), 200, path)
            self.assertEqual(status("http://127.0.0.1:%d%s" % (public, path)), 404, path)
        # the public listener itself is up and serving its own routes
        self.assertEqual(status("http://127.0.0.1:%d/sns" % public, data=b"{not json"), 400)

    def test_run_all(self):
        cfg = self.write("mf.ini", harness.fleet_config(self))
        p = self.start([harness.MAILFLEET, "run", "-c", cfg], "run")
        harness.wait_port(self.ports["public"], proc=p.p)
        self.check(self.ports["http"], self.ports["public"])

    def test_worker_alone(self):
        met, pub = harness.free_port(), harness.free_port()
        cfg = self.write("mf.ini", harness.fleet_config(self) + "[feedback]\nmetrics_listen = 127.0.0.1:%d\n"
                         "public_listen = 127.0.0.1:%d\n" % (met, pub))
        p = self.start([harness.MAILFLEET, "feedback", "-c", cfg], "feedback")
        harness.wait_port(pub, proc=p.p)
        self.check(met, pub)
