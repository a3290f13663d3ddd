"""Golden corpus: the transform core (tests/tools/transform_tool) over every
tests/data/*.eml, compared with tests/data/expected/<name>.json (recipients,
fallback reasons, body text, attachment names and SHA-256 as Python's email
package decodes them)."""
import glob
import hashlib
import json
import os
import subprocess
import sys

import harness

DATA = os.path.join(harness.ROOT, "tests", "data")
TOOL = os.path.join(harness.TOOLS, "transform_tool")
MARKER = ":Email_Rxers_Code:"


def run_tool(store, path, *extra):
    r = subprocess.run([TOOL, "--store", store, *extra, path], capture_output=True, timeout=60)
    if r.returncode not in (0, 1):
        raise AssertionError("transform_tool crashed on %s: rc=%d %s" % (path, r.returncode, r.stderr[-2000:]))
    return json.loads(r.stdout.decode().splitlines()[0])


class TransformGoldenTest(harness.TestCase):
    def test_corpus_has_enough_cases(self):
        self.assertGreaterEqual(len(glob.glob(os.path.join(DATA, "*.eml"))), 25)

    def test_expected_files_are_pythons_reading(self):
        """Each expected file's attachments are what Python's email package
        (this interpreter, Debian's /usr/bin/python3) decodes from the .eml
        today, through make_corpus.py: a golden file cannot drift from the
        oracle, and a case that departs from it says so in make_corpus.py."""
        sys.path.insert(0, DATA)
        try:
            import make_corpus
        finally:
            sys.path.remove(DATA)
        self.assertEqual(sorted(make_corpus.CASES),
                         sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(DATA, "*.eml"))))
        for name, c in sorted(make_corpus.CASES.items()):
            with self.subTest(case=name):
                with open(os.path.join(DATA, name + ".eml"), "rb") as f:
                    self.assertEqual(f.read(), c["raw"])
                with open(os.path.join(DATA, "expected", name + ".json")) as f:
                    exp = json.load(f)
                self.assertEqual(exp["attachments"], make_corpus.expected_attachments(c))

    def test_golden(self):
        store = os.path.join(self.dir, "att")
        os.makedirs(store)
        for path in sorted(glob.glob(os.path.join(DATA, "*.eml"))):
            name = os.path.basename(path)[:-4]
            with self.subTest(case=name):
                with open(os.path.join(DATA, "expected", name + ".json")) as f:
                    exp = json.load(f)
                out = run_tool(store, path)
                self.assertEqual(out["rc"], 0, out["error"])
                res = out["result"]
                self.assertEqual(sorted(res["reasons"]), exp["reasons"])
                self.assertEqual(res["recipients"], exp["recipients"])
                self.assertEqual(res["mime_len"] > 0, exp["sent"])
                if "invalid" in exp:
                    self.assertEqual(res["invalid"], exp["invalid"])
                if "subject" in exp:
                    self.assertEqual(res["subject"], exp["subject"])
                for s in exp["body_has"]:
                    self.assertIn(s, res["body_text"])
                for s in exp["body_not"]:
                    self.assertNotIn(s, res["body_text"])
                got = [{"name": a["name"], "sha256": a["sha256"], "size": a["size"], "blocked": a["blocked"]}
                       for a in res["attachments"]]
                self.assertEqual(got, exp["attachments"])
                for a in res["attachments"]:
                    if a["blocked"]:
                        self.assertIsNone(a["key"])
                        self.assertIsNone(a["url"])
                        continue
                    # The key is ours, never the sender's: safe alphabet only.
                    self.assertRegex(a["key"], r"^attachments/\d{4}-\d{2}-\d{2}/01/msg-001-\d+-[A-Za-z0-9._-]{1,80}$")
                    with open(os.path.join(store, a["key"]), "rb") as f:
                        self.assertEqual(hashlib.sha256(f.read()).hexdigest(), a["sha256"])
                    self.assertTrue(a["url"].startswith("http://127.0.0.1:8025/a/"))

    def test_outbound_mime(self):
        """The demo's outgoing mail, read back by Python: headers and both alternatives."""
        import email
        import email.policy
        store = os.path.join(self.dir, "att")
        os.makedirs(store)
        mime = os.path.join(self.dir, "out.eml")
        run_tool(store, os.path.join(DATA, "demo.eml"), "--mime-out", mime)
        with open(mime, "rb") as f:
            raw = f.read()
        self.assertNotIn(b"\n", raw.replace(b"\r\n", b""))
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(msg["Auto-Submitted"], "auto-generated")
        self.assertEqual(str(msg["From"]), "mailfleet <noreply@iot.localhost>")
        self.assertEqual(msg["To"].addresses[0].addr_spec, "a@x.com")
        self.assertEqual(len(msg["To"].addresses), 2)
        self.assertEqual(msg["Subject"], "Demo alert")
        self.assertEqual(msg["Reply-To"], "device@example.com")   # the envelope sender the tool gives
        self.assertRegex(msg["Message-ID"], r"^<msg-001@iot\.localhost>$")
        self.assertEqual(msg.get_content_type(), "multipart/alternative")
        plain = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        self.assertNotIn(MARKER, plain)
        self.assertIn("report.csv", plain)
        self.assertIn("http://127.0.0.1:8025/a/", plain)
        self.assertIn("\n-- \nSent by device@example.com via mailfleet\n", plain.replace("\r\n", "\n"))
        self.assertIn("Sent by device@example.com via mailfleet", html)
        self.assertIn("<table", html)
        self.assertIn("report.csv", html)

    def test_hostile_names_are_escaped_in_html(self):
        store = os.path.join(self.dir, "att")
        os.makedirs(store)
        p = self.write("x.eml", (
            "From: a@b.example\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
            ":Email_Rxers_Code:[a@x.com]:Email_Rxers_Code: <script>alert(1)</script>\r\n--B\r\n"
            "Content-Type: application/octet-stream\r\n"
            "Content-Disposition: attachment; filename=\"<img src=x onerror=alert(1)>.txt\"\r\n\r\nhi\r\n--B--\r\n"))
        mime = os.path.join(self.dir, "out.eml")
        run_tool(store, p, "--mime-out", mime)
        import email
        import email.policy
        with open(mime, "rb") as f:
            msg = email.message_from_bytes(f.read(), policy=email.policy.default)
        html = msg.get_body(("html",)).get_content()
        self.assertNotIn("<script>", html)
        self.assertNotIn("<img", html)
        self.assertIn("&lt;img src=x onerror=alert(1)&gt;.txt", html)
