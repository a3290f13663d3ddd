"""The HTTP side every worker serves: /metrics (checked by promtool), /healthz,
/readyz; and a clean exit on SIGTERM."""
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
