"""The links gateway as a process: the bytes it serves equal what Python's
email package decodes from the original mail, Range/HEAD/ETag, tampered,
expired and revoked tokens (403), missing objects (404), Download events.

With the attachments on S3 (s3rver): slow readers of a 30 MB object cost
the gateway a bounded buffer each and no temp file while other requests are
answered; downloads are limited per client address (loopback sources
127.0.0.x, or X-Forwarded-For from a trusted proxy) and in total; ranges
across the 1 MiB fetch boundary; an object replaced mid-download ends the
connection short; a stalled store (s3rver frozen) cuts the download after
15 s and costs a refused request nothing."""
import base64
import email
import email.policy
import glob
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import harness
from test_store_s3 import start_s3rver
from test_transform import DATA, TOKEN_SECRET, Pipeline, corpus, uuid7, validate


def get(url, headers=None, method="GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def curl(url, *args):
    """curl is the real HTTP client here (and checks our framing)."""
    r = subprocess.run(["curl", "-sS", "-f", "-o", "-"] + list(args) + [url], capture_output=True, timeout=60)
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


MiB = 1 << 20


class SlowReader:
    """One GET on a raw socket bound to source (the gateway sees that
    address), with a 4 KiB receive buffer.  That bounds only this side: on
    loopback the gateway's send buffer grows to a few MiB, so a reader that
    stops still lets the gateway read that much ahead before the socket is
    full and its reader stops being called; past that the body moves only
    as fast as read() is called."""

    def __init__(self, port, path, source="127.0.0.1", headers=()):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        extra = "".join("%s: %s\r\n" % h for h in headers)
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (path, extra)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.sock.recv(4096)
            if not d:
                raise AssertionError("connection closed before the response headers")
            buf += d
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        self.received = len(body)
        self.eof = False

    def read(self, n=4096):
        """Reads up to n more bytes; returns how many came (0 at EOF)."""
        try:
            d = self.sock.recv(n)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
        self.received += len(d)
        return len(d)

    def read_until(self, total):
        while self.received < total and self.read(65536):
            pass

    def close(self):
        self.sock.close()


class Trickle(threading.Thread):
    """Keeps a SlowReader reading a few KB per second until stopped."""

    def __init__(self, reader, chunk=4096, every=0.5):
        super().__init__(daemon=True)
        self.reader, self.chunk, self.every = reader, chunk, every
        self.halt = threading.Event()

    def run(self):
        while not self.halt.wait(self.every) and not self.reader.eof:
            self.reader.read(self.chunk)


def proc_status(pid, field):
    """A /proc/<pid>/status figure in bytes (VmRSS, VmHWM: resident now, peak)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no %s for %d" % (field, pid))


class LinksS3Test(harness.TestCase, Pipeline):
    """The gateway with store_attachments on s3rver and redirect off (the
    production default): objects are put straight into the bucket and linked
    with tokens signed here, as transform would."""

    def setUp(self):
        super().setUp()
        start_s3rver(self)   # self.port, self.uri: s3://bkt/mf?...

    def start_gateway(self, extra=""):
        self.setup_pipeline(extra=extra)
        with open(self.cfg) as f:
            cfg = f.read()
        cfg = cfg.replace("store_attachments = file:%s" % self.att, "store_attachments = " + self.uri)
        cfg += "\n[s3]\naccess_key = S3RVER\nsecret_key = S3RVER\n"
        with open(self.cfg, "w") as f:
            f.write(cfg)
        self.metrics_port = int(re.search(r"\[links\]\nmetrics_listen = 127\.0\.0\.1:(\d+)", cfg).group(1))
        self.tmpdir = self.path("tmp")
        os.makedirs(self.tmpdir)
        self.links = self.start([harness.MAILFLEET, "links", "-c", self.cfg], "links", env={"TMPDIR": self.tmpdir})
        harness.wait_port(self.pub_port, proc=self.links.p)
        harness.wait_for(lambda: get("http://127.0.0.1:%d/a/x" % self.pub_port)[0] == 403, what="links ready")

    def put_object(self, name, data, content_type="application/octet-stream", key=None):
        """Puts data into the bucket (s3rver takes unsigned PUTs); returns
        (link path, key, sha256) for a fresh token naming it."""
        iid = uuid7()
        key = key or "attachments/2026-12-03/%s/1-%s" % (iid, name)
        req = urllib.request.Request("http://127.0.0.1:%d/bkt/mf/%s" % (self.port, key), data=data, method="PUT",
                                     headers={"Content-Type": content_type})
        urllib.request.urlopen(req, timeout=60).read()
        sha = hashlib.sha256(data).hexdigest()
        token = forge(("%s|%s|%s|%s" % (key, iid, sha, name)).encode(), int(time.time()) + 3600)
        return "/a/" + token, key, sha

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.pub_port, path)

    def metric(self, name, labels=""):
        _, _, body = get("http://127.0.0.1:%d/metrics" % self.metrics_port)
        m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), body.decode(), re.M)
        return float(m.group(1)) if m else None

    def wait_downloads(self, n):
        harness.wait_for(lambda: self.metric("mailfleet_links_downloads_inflight") == n,
                         what="%d downloads in flight" % n)

    def temp_files(self):
        """What the gateway holds that looks like a temp copy: a descriptor on
        an unlinked file or anything in its TMPDIR or /tmp/mf-link-*."""
        found = []
        fd_dir = "/proc/%d/fd" % self.links.pid
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.endswith("(deleted)") or target.startswith((self.tmpdir, "/tmp/mf-link-")):
                found.append(target)
        return found + os.listdir(self.tmpdir)

    def test_slow_readers_bounded_and_others_answered(self):
        """Six clients of a 30 MB attachment that read a few KB/s (one not at
        all): the gateway's peak RSS grows by far less than one copy, it holds
        no temp file, and a bad token, another link and a full download of
        the big one are answered while the slow readers hang on."""
        self.start_gateway()
        big = os.urandom(30 * MiB)
        big_path, _, big_sha = self.put_object("big.bin", big)
        small = b"small attachment\n" * 100
        small_path, _, _ = self.put_object("small.txt", small, "text/plain")
        self.assertEqual(get(self.url(small_path))[2], small)   # curl handle, buffers warmed up
        with open("/proc/%d/clear_refs" % self.links.pid, "w") as f:
            f.write("5")   # VmHWM := VmRSS: the peak from here on
        rss0 = proc_status(self.links.pid, "VmRSS")

        readers = [SlowReader(self.pub_port, big_path) for _ in range(6)]
        trickles = [Trickle(r) for r in readers[1:]]   # readers[0] stops reading after the headers
        for r, t in zip(readers[1:], trickles):
            t.start()
        try:
            for r in readers:
                self.assertEqual(r.status, 200)
                self.assertEqual(r.headers["content-length"], str(len(big)))
            self.wait_downloads(6)
            for what, path, want in (("bad token", "/a/garbage", 403), ("another link", small_path, 200)):
                t0 = time.monotonic()
                st, _, body = get(self.url(path))
                self.assertEqual(st, want, what)
                # generous: s3rver and a 30 MB curl share two loaded cores
                self.assertLess(time.monotonic() - t0, 20, what + " answered while slow readers hang on")
            self.assertEqual(hashlib.sha256(curl(self.url(big_path))).hexdigest(), big_sha)
            self.assertEqual(self.temp_files(), [])
            self.assertTrue(all(not r.eof for r in readers), "the slow readers are still being served")
            grown = proc_status(self.links.pid, "VmHWM") - rss0
            self.assertLess(grown, 24 * MiB, "peak RSS grew by %d bytes for 7 downloads of 30 MB" % grown)
        finally:
            for t in trickles:
                t.halt.set()
                t.join()
            for r in readers:
                r.close()
        self.wait_downloads(0)   # every slot given back when the clients went away

    def test_full_download_and_ranges_across_chunks(self):
        """Whole object (sha256) and ranges across the 1 MiB fetch boundary."""
        self.start_gateway()
        data = os.urandom(3 * MiB + 123)
        path, _, sha = self.put_object("r.bin", data)
        body = curl(self.url(path))
        self.assertEqual(hashlib.sha256(body).hexdigest(), sha)
        served = len(body)
        for rng, want in (("bytes=%d-%d" % (MiB - 10, MiB + 9), data[MiB - 10:MiB + 10]),
                          ("bytes=1000000-", data[1000000:]),
                          ("bytes=%d-%d" % (2 * MiB, 2 * MiB), data[2 * MiB:2 * MiB + 1]),
                          ("bytes=-5", data[-5:])):
            st, h, part = get(self.url(path), {"Range": rng})
            self.assertEqual(st, 206, rng)
            self.assertEqual(part, want, rng)
            self.assertEqual(h["Content-Length"], str(len(want)))
            served += len(part)
        st, h, empty = get(self.url(path), method="HEAD")
        self.assertEqual((st, empty, h["Content-Length"]), (200, b"", str(len(data))))
        self.assertEqual(self.metric("mailfleet_links_bytes_total"), served)
        self.assertEqual(self.metric("mailfleet_links_downloads_cut_total"), 0)

    def test_replaced_object_ends_the_download(self):
        """The key is overwritten while a client is part-way through: the
        next fetch sees another ETag and the connection ends short of
        Content-Length, instead of splicing the two objects."""
        self.start_gateway()
        old = os.urandom(30 * MiB)
        path, key, _ = self.put_object("v.bin", old)
        r = SlowReader(self.pub_port, path)
        try:
            self.assertEqual(r.status, 200)
            r.read_until(64 * 1024)
            self.put_object("v.bin", os.urandom(30 * MiB), key=key)
            r.read_until(len(old))
        finally:
            r.close()
        self.assertTrue(r.eof)
        self.assertLess(r.received, len(old))
        self.assertEqual(self.metric("mailfleet_links_downloads_cut_total"), 1)
        self.assertIn("download cut short", self.links.output())
        self.wait_downloads(0)

    def test_stalled_store_cuts_the_download(self):
        """s3rver is frozen (SIGSTOP) while a client holds its only slot: a
        second GET from the address is refused 429 without asking the store
        (a HEAD would hang), and once the client reads on, the chunk fetch
        that hangs is given up after 15 s (not curl's 60 s low-speed limit):
        the connection ends short, counted as cut, and bytes_total holds
        what was read into the response, not the whole object."""
        self.start_gateway("max_downloads_per_ip = 1\n")
        data = os.urandom(16 * MiB)   # well past what socket buffers hold ahead
        path, _, _ = self.put_object("stall.bin", data)
        r = SlowReader(self.pub_port, path)
        r.sock.settimeout(90)
        frozen = False
        try:
            self.assertEqual(r.status, 200)
            self.wait_downloads(1)
            os.kill(self.s3.pid, signal.SIGSTOP)
            frozen = True
            req = urllib.request.Request(self.url(path))
            with self.assertRaises(urllib.error.HTTPError) as refused:
                # a fetch that was under way when s3rver froze may hold this
                # connection's thread for its 15 s
                urllib.request.urlopen(req, timeout=40).read()
            self.assertEqual(refused.exception.code, 429)
            t0 = time.monotonic()
            r.read_until(len(data))
            stalled = time.monotonic() - t0
        finally:
            if frozen:
                os.kill(self.s3.pid, signal.SIGCONT)
            r.close()
        self.assertTrue(r.eof)
        self.assertLess(r.received, len(data))
        self.assertLess(stalled, 40, "the hung fetch was given up after %.1f s" % stalled)
        self.assertEqual(self.metric("mailfleet_links_downloads_cut_total"), 1)
        self.assertRegex(self.links.output(), r"download cut short.*timed out")
        sent = self.metric("mailfleet_links_bytes_total")
        self.assertLessEqual(r.received, sent)
        self.assertLess(sent, len(data))
        self.wait_downloads(0)

    def test_limits_per_ip_and_total(self):
        """Two downloads per address, three in all: the third from one
        address gets 429, another address is served until the process is
        full (503), both with Retry-After; HEAD takes no slot; a slot comes
        back when its client disconnects."""
        self.start_gateway("max_downloads = 3\nmax_downloads_per_ip = 2\n")
        path, _, sha = self.put_object("big.bin", os.urandom(30 * MiB))
        held = [SlowReader(self.pub_port, path), SlowReader(self.pub_port, path)]
        try:
            self.assertEqual([r.status for r in held], [200, 200])
            self.wait_downloads(2)
            for _ in range(2):
                st, h, _ = get(self.url(path))
                self.assertEqual(st, 429)
                self.assertEqual(h["Retry-After"], "10")
            self.assertEqual(get(self.url(path), method="HEAD")[0], 200)
            held.append(SlowReader(self.pub_port, path, source="127.0.0.2"))
            self.assertEqual(held[-1].status, 200)
            self.wait_downloads(3)
            other = SlowReader(self.pub_port, path, source="127.0.0.3")
            other.close()
            self.assertEqual(other.status, 503)
            self.assertEqual(other.headers["retry-after"], "10")
            self.assertEqual(self.metric("mailfleet_links_downloads_refused_total", '{limit="per_ip"}'), 2)
            self.assertEqual(self.metric("mailfleet_links_downloads_refused_total", '{limit="total"}'), 1)
            # logged once for 127.0.0.1 although refused twice
            self.assertEqual(len(re.findall(r"download refused.*127\.0\.0\.1", self.links.output())), 1)
            held.pop(0).close()
            self.wait_downloads(2)
            self.assertEqual(hashlib.sha256(curl(self.url(path))).hexdigest(), sha)
        finally:
            for r in held:
                r.close()

    def test_client_behind_trusted_proxy(self):
        """Behind a trusted proxy (127.0.0.1 here) the client is the rightmost
        X-Forwarded-For hop: it is charged and named in the Download event;
        from an untrusted peer the header is ignored."""
        self.start_gateway("max_downloads_per_ip = 1\ntrusted_proxies = 127.0.0.1\n")
        path, _, _ = self.put_object("big.bin", os.urandom(30 * MiB))
        a = [("X-Forwarded-For", "203.0.113.50, 198.51.100.7")]
        held = SlowReader(self.pub_port, path, headers=a)
        try:
            self.assertEqual(held.status, 200)
            self.assertEqual(get(self.url(path), {"X-Forwarded-For": "198.51.100.7"})[0], 429)
            self.assertEqual(get(self.url(path), {"X-Forwarded-For": "198.51.100.7, 127.0.0.1"})[0], 429)
            self.assertEqual(get(self.url(path), {"X-Forwarded-For": "198.51.100.8"})[0], 200)
            other = SlowReader(self.pub_port, path, source="127.0.0.2", headers=a)
            other.close()
            self.assertEqual(other.status, 200)
        finally:
            held.close()
        # events are published off the request path: wait for the three 200s
        served = lambda: [e for e in (json.loads(r["value"]) for r in self.read("mailfleet.events"))
                          if e["download"]["status"] == 200]
        evs = harness.wait_for(lambda: (lambda e: e if len(e) >= 3 else None)(served()), what="download events")
        self.assertEqual([e["download"]["ipAddress"] for e in evs], ["198.51.100.7", "198.51.100.8", "127.0.0.2"])
