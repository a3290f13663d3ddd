"""The links gateway as a process: the bytes it serves equal what Python's
email package decodes from the original mail, Range/HEAD/ETag, tampered,
expired and revoked tokens (403), missing objects (404), Download events."""
import base64
import email
import email.policy
import glob
import hashlib
import hmac
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import harness
from test_transform import DATA, TOKEN_SECRET, Pipeline, corpus, validate


def get(url, headers=None, method="GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def curl(url):
    """curl is the real HTTP client here (and checks our framing)."""
    r = subprocess.run(["curl", "-sS", "-f", "-o", "-", url], capture_output=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError("curl %s: %s" % (url, r.stderr))
    return r.stdout


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def forge(payload, expires, secret=TOKEN_SECRET, kid="tkey"):
    first = b64u(("%s.%d." % (kid, expires)).encode() + payload)
    mac = hmac.new(secret.encode(), first.encode(), hashlib.sha256).digest()
    return first + "." + b64u(mac)


def expected_attachments(exp):
    """(name, sha256) of each linked attachment in the golden file: Python's
    email package decoding, or the exact embedded bytes where Python keeps
    none (tests/data/make_corpus.py; test_transform_golden.py checks the
    golden files against Python on every run)."""
    return [(a["name"], a["sha256"]) for a in exp["attachments"] if not a["blocked"]]


class LinksTest(harness.TestCase, Pipeline):
    def setUp(self):
        super().setUp()
        self.setup_pipeline()
        self.start_transform()
        self.start_links()
        harness.wait_for(lambda: get("http://127.0.0.1:%d/a/x" % self.pub_port)[0] == 403, what="links ready")

    def test_served_bytes_equal_python_decoding(self):
        """Every linked attachment of the corpus, fetched with curl."""
        checked = expected = 0
        for path in sorted(glob.glob(os.path.join(DATA, "*.eml"))):
            name = os.path.basename(path)[:-4]
            with open(os.path.join(DATA, "expected", name + ".json")) as f:
                exp = json.load(f)
            if not exp["sent"] or not exp["attachments"]:
                continue
            expected += len([a for a in exp["attachments"] if not a["blocked"]])
            raw = corpus(name)
            iid = self.submit(raw)
            ob = self.outbound_for(iid)
            want = expected_attachments(exp)
            got = [(l["name"], hashlib.sha256(curl(l["url"])).hexdigest()) for l in ob["links"]]
            self.assertEqual(got, want, name)
            checked += len(got)
        self.assertEqual(checked, expected)
        self.assertGreaterEqual(checked, 15)

    def test_headers_range_head_etag(self):
        iid = self.submit(corpus("rfc2047_name"))
        link = self.outbound_for(iid)["links"][0]
        st, h, body = get(link["url"])
        self.assertEqual(st, 200)
        self.assertEqual(h["Content-Length"], str(len(body)))
        self.assertEqual(h["ETag"], '"%s"' % link["sha256"])
        self.assertEqual(h["Content-Type"], "text/plain")
        self.assertEqual(h["X-Content-Type-Options"], "nosniff")
        self.assertTrue(h["Content-Disposition"].startswith("attachment; "))
        self.assertIn("filename*=UTF-8''Pr%C3%BCfbericht%20%E2%84%962.txt", h["Content-Disposition"])
        st, h, part = get(link["url"], {"Range": "bytes=3-9"})
        self.assertEqual(st, 206)
        self.assertEqual(part, body[3:10])
        self.assertEqual(h["Content-Range"], "bytes 3-9/%d" % len(body))
        st, h, part = get(link["url"], {"Range": "bytes=-5"})
        self.assertEqual((st, part), (206, body[-5:]))
        st, h, _ = get(link["url"], {"Range": "bytes=%d-" % (len(body) + 10)})
        self.assertEqual(st, 416)
        self.assertEqual(h["Content-Range"], "bytes */%d" % len(body))
        st, h, empty = get(link["url"], method="HEAD")
        self.assertEqual((st, empty), (200, b""))
        self.assertEqual(h["Content-Length"], str(len(body)))
        st, _, _ = get(link["url"], {"If-None-Match": '"%s"' % link["sha256"]})
        self.assertEqual(st, 304)
        st, _, _ = get(link["url"], method="POST")
        self.assertEqual(st, 405)

    def test_tampered_expired_unknown_key_are_forbidden(self):
        iid = self.submit(corpus("demo"))
        link = self.outbound_for(iid)["links"][0]
        url = link["url"]
        token = url.rsplit("/a/", 1)[1]
        base = url[:len(url) - len(token)]
        self.assertEqual(get(url)[0], 200)
        # One flipped character in the payload part, then in the MAC.
        flipped = ("A" if token[5] != "A" else "B")
        self.assertEqual(get(base + token[:5] + flipped + token[6:])[0], 403)
        self.assertEqual(get(base + token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))[0], 403)
        self.assertEqual(get(base + "garbage")[0], 403)
        # Same payload, correctly signed but expired: 403 (not 410, by design).
        payload = "%s|%s|%s|%s" % (link["key"], iid, link["sha256"], link["name"])
        self.assertEqual(get(base + forge(payload.encode(), int(time.time()) + 60))[0], 200)
        self.assertEqual(get(base + forge(payload.encode(), int(time.time()) - 1))[0], 403)
        self.assertEqual(get(base + forge(payload.encode(), int(time.time()) + 60, secret="another-secret-0123456789"))[0], 403)
        self.assertEqual(get(base + forge(payload.encode(), int(time.time()) + 60, kid="other"))[0], 403)
        # A valid token for a key that is gone: 404.
        gone = "%s|%s|%s|x.bin" % ("attachments/2026-01-01/none/1-x.bin", iid, "0" * 64)
        self.assertEqual(get(base + forge(gone.encode(), int(time.time()) + 60))[0], 404)

    def test_revoke_by_link_and_by_message(self):
        a = self.outbound_for(self.submit(corpus("nested_multipart")))["links"]
        b_iid = self.submit(corpus("demo"))
        b = self.outbound_for(b_iid)["links"]
        self.assertEqual(get(a[0]["url"])[0], 200)
        self.assertEqual(get(a[1]["url"])[0], 200)
        self.mailfleet("links", "revoke", "--link", a[0]["url"], "-c", self.cfg)
        harness.wait_for(lambda: get(a[0]["url"])[0] == 403, timeout=5, what="link revoked")
        self.assertEqual(get(a[1]["url"])[0], 200)
        self.mailfleet("links", "revoke", "--message", b_iid, "--reason", "test", "-c", self.cfg)
        harness.wait_for(lambda: get(b[0]["url"])[0] == 403, timeout=5, what="message revoked")
        self.assertEqual(get(a[1]["url"])[0], 200)
        revs = self.read("mailfleet.revocations")
        for r in revs:
            validate("revocation", json.loads(r["value"]))
        # A restarted gateway rebuilds the copy from the topic.
        self.links.stop()
        self.start_links()
        harness.wait_for(lambda: get(a[1]["url"])[0] == 200, what="links back")
        self.assertEqual(get(a[0]["url"])[0], 403)
        self.assertEqual(get(b[0]["url"])[0], 403)
        # Lifting it (tombstone) restores access.
        self.mailfleet("links", "unrevoke", "--message", b_iid, "-c", self.cfg)
        harness.wait_for(lambda: get(b[0]["url"])[0] == 200, timeout=5, what="unrevoked")

    def test_download_events(self):
        iid = self.submit(corpus("demo"))
        link = self.outbound_for(iid)["links"][0]
        body = curl(link["url"])
        get(link["url"], {"Range": "bytes=0-0"})
        evs = harness.wait_for(lambda: (lambda e: e if len(e) >= 2 else None)(
            [json.loads(r["value"]) for r in self.read("mailfleet.events")]), what="download events")
        for e in evs:
            validate("event", e)
            self.assertEqual(e["eventType"], "Download")
            self.assertEqual(e["inbound_id"], iid)
            self.assertEqual(e["download"]["name"], "report.csv")
            self.assertEqual(e["download"]["ipAddress"], "127.0.0.1")
        self.assertEqual([(e["download"]["status"], e["download"]["bytes"]) for e in evs[:2]],
                         [(200, len(body)), (206, 1)])


class AllInOneTest(harness.TestCase, Pipeline):
    def test_mailfleet_run_serves_links(self):
        """`mailfleet run`: transform and links share one process and the
        public server; SIGTERM stops it cleanly."""
        self.setup_pipeline()
        with open(self.cfg) as f:
            cfg = f.read()
        cfg = cfg.replace("[mailfleet]\n", "[mailfleet]\nhttp_listen = 127.0.0.1:%d\npublic_listen = 127.0.0.1:%d\n"
                          % (harness.free_port(), self.pub_port))
        # every worker runs: ingest and send need their own ports and dirs
        cfg += "\n[ingest]\nlisten = 127.0.0.1:%d\nlisten_tls =\ntls_cert = %s\ntls_key = %s\ntls_generate = true\n" \
               "\n[send]\ntransport = outbox:%s\n" % (harness.free_port(), self.path("cert.pem"),
                                                       self.path("key.pem"), self.path("outbox"))
        with open(self.cfg, "w") as f:
            f.write(cfg)
        p = self.start([harness.MAILFLEET, "run", "-c", self.cfg], "run")
        harness.wait_port(self.pub_port, proc=p.p)
        raw = corpus("demo")
        link = self.outbound_for(self.submit(raw))["links"][0]
        harness.wait_for(lambda: get(link["url"])[0] == 200, what="link served")
        self.assertEqual(hashlib.sha256(get(link["url"])[2]).hexdigest(), link["sha256"])
        self.assertEqual(p.stop(), 0)
