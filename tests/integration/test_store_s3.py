"""store s3:// against real peers, through tests/tools/store_tool.

- s3rver (npm) for the protocol: put/get/head/delete/list (paging), ranges,
  binary and 20 MB objects, path-style and virtual-host, pre-signed GETs
  fetched with curl, errors.  s3rver does not check signatures, so:
- python3-botocore is the reference signer: the tool's Authorization values
  and pre-signed URLs must equal botocore's for the same inputs, and every
  request the store puts on the wire (captured by a small recording server)
  must carry the signature botocore computes for that exact request.

s3rver 3.7 makes continuation tokens with DES, which OpenSSL 3 only offers in
its legacy provider: hence NODE_OPTIONS=--openssl-legacy-provider.
"""
import calendar
import hashlib
import http.server
import json
import os
import subprocess
import threading
import time
import unittest
import urllib.parse

import harness
import sigv4_botocore as ref

STORE_TOOL = os.path.join(harness.TOOLS, "store_tool")
S3RVER = os.path.join(harness.NODE_BIN, "s3rver")
AK, SK = "S3RVER", "S3RVER"   # s3rver's default account
ENOENT, EIO, EINVAL, ECONNREFUSED = 2, 5, 22, 111


def tool_env(ak=AK, sk=SK, token=None):
    env = dict(os.environ)
    env["AWS_ACCESS_KEY_ID"] = ak
    env["AWS_SECRET_ACCESS_KEY"] = sk
    env.pop("AWS_SESSION_TOKEN", None)
    if token is not None:
        env["AWS_SESSION_TOKEN"] = token
    return env


def tool(*args, env=None, input=None, stdout=None, timeout=120):
    return subprocess.run([STORE_TOOL] + [str(a) for a in args], env=env or tool_env(), input=input,
                          stdout=stdout if stdout is not None else subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


def amz_date(epoch):
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def query_dict(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))


def start_s3rver(test):
    """s3rver on a free port with buckets bkt and vhb.localhost; sets
    test.port, test.s3, test.endpoint and test.uri (s3://bkt/mf...)."""
    test.port = harness.free_port()
    os.makedirs(test.path("s3data"))
    test.s3 = test.start([S3RVER, "--directory", test.path("s3data"), "--port", str(test.port),
                          "--address", "127.0.0.1", "--configure-bucket", "bkt",
                          "--configure-bucket", "vhb.localhost"],
                         "s3rver", env={"NODE_OPTIONS": "--openssl-legacy-provider"})
    harness.wait_port(test.port, timeout=30, proc=test.s3.p)
    test.endpoint = "http://127.0.0.1:%d" % test.port
    test.uri = "s3://bkt/mf?endpoint=%s&region=us-east-1&path_style=1" % test.endpoint


class S3rverTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        start_s3rver(self)

    def ok(self, *args, **kw):
        r = tool(*args, **kw)
        if r.returncode != 0:
            self.fail("store_tool %s exited %d: %s" % (" ".join(map(str, args)), r.returncode,
                                                      r.stderr.decode(errors="replace")))
        return r

    def put_bytes(self, key, data, content_type=None, uri=None):
        p = self.path("in-" + key.replace("/", "_"))
        with open(p, "wb") as f:
            f.write(data)
        args = ["put", uri or self.uri, key, p] + ([content_type] if content_type else [])
        size, sha = self.ok(*args).stdout.decode().split()
        self.assertEqual(int(size), len(data))
        self.assertEqual(sha, hashlib.sha256(data).hexdigest())

    def test_put_get_head_delete_binary(self):
        data = bytes(range(256)) * 300 + b"\r\n.\r\n\x00tail"
        self.put_bytes("a/b/bin.dat", data, "application/x-test")
        self.assertEqual(self.ok("get", self.uri, "a/b/bin.dat").stdout, data)
        size, ctype, mtime = self.ok("head", self.uri, "a/b/bin.dat").stdout.decode().split()
        self.assertEqual(int(size), len(data))
        self.assertEqual(ctype, "application/x-test")
        self.assertLess(abs(int(mtime) / 1000 - time.time()), 300)
        # the object sits under the URI's prefix, byte for byte
        with open(self.path("s3data", "bkt", "mf", "a", "b", "bin.dat._S3rver_object"), "rb") as f:
            self.assertEqual(f.read(), data)
        self.ok("delete", self.uri, "a/b/bin.dat")
        self.assertEqual(tool("get", self.uri, "a/b/bin.dat").returncode, ENOENT)
        r = tool("head", self.uri, "a/b/bin.dat")
        self.assertEqual(r.returncode, ENOENT)
        # deleting again is not an error (S3 semantics)
        self.ok("delete", self.uri, "a/b/bin.dat")

    def test_range_get(self):
        data = bytes((i * 31) & 0xFF for i in range(10000))
        self.put_bytes("r", data)
        for off, ln in [(0, 1), (0, 10000), (1, 9999), (9999, 1), (5000, 0), (123, 4567), (9990, 100)]:
            got = self.ok("get", self.uri, "r", off, ln).stdout
            want = data[off:off + ln] if ln else data[off:]
            self.assertEqual(got, want, "range %d+%d" % (off, ln))
        r = tool("get", self.uri, "r", 10000, 5)
        self.assertEqual(r.returncode, EINVAL)
        self.assertIn(b"416", r.stderr)

    def test_list_paging_small_pages(self):
        # max_keys=7 forces ListObjectsV2 to page with continuation tokens
        self.ok("fill", self.uri, "p/", 25)
        self.put_bytes("q/outside", b"x")
        self.put_bytes("p0", b"y")
        out = self.ok("list", self.uri + "&max_keys=7", "p/").stdout.decode().splitlines()
        self.assertEqual(out, ["p/%05d 7" % i for i in range(25)])
        out = self.ok("list", self.uri + "&max_keys=2", "p").stdout.decode().splitlines()
        self.assertEqual(len(out), 26)
        self.assertEqual(out[-1], "p0 1")
        self.assertEqual(self.ok("list", self.uri, "nothing/").stdout, b"")
        # the URI's prefix is not part of the keys we see
        everything = self.ok("list", "s3://bkt?endpoint=%s&path_style=1" % self.endpoint, "").stdout.decode()
        self.assertIn("mf/q/outside 1", everything)

    def test_list_more_than_1000(self):
        self.ok("fill", self.uri, "many/", 1100, timeout=300)
        out = self.ok("list", self.uri, "many/").stdout.decode().splitlines()
        self.assertEqual(len(out), 1100)
        self.assertEqual(out, sorted(out))
        self.assertEqual(out[1099], "many/01099 10")

    def test_big_object_streamed(self):
        data = os.urandom(20 * 1024 * 1024)
        src = self.path("big.bin")
        with open(src, "wb") as f:
            f.write(data)
        want = hashlib.sha256(data).hexdigest()
        # from a seekable file (hashed, rewound) and from a pipe (spooled)
        for key, args, stdin in [("big-file", [src], None), ("big-pipe", ["-"], data)]:
            r = subprocess.run(["/usr/bin/time", "-f", "maxrss=%M", STORE_TOOL, "put", self.uri, key] + args,
                               env=tool_env(), input=stdin, capture_output=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.decode().split(), [str(len(data)), want])
            rss_kb = int(r.stderr.decode().rsplit("maxrss=", 1)[1].split()[0])
            self.assertLess(rss_kb, 32 * 1024, "put of 20 MB used %d KB" % rss_kb)
        out = self.path("big.out")
        with open(out, "wb") as f:
            r = tool("get", self.uri, "big-pipe", stdout=f)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), want)
        size = self.ok("head", self.uri, "big-file").stdout.split()[0]
        self.assertEqual(int(size), len(data))

    def test_presigned_get_with_curl(self):
        data = b"pre-signed \x00\xff bytes"
        self.put_bytes("att/x.bin", data, "application/octet-stream")
        now = int(time.time())
        url = self.ok("presign", self.uri, "att/x.bin", 3600, now).stdout.decode().strip()
        self.assertTrue(url.startswith(self.endpoint + "/bkt/mf/att/x.bin?"), url)
        # the same URL botocore signs for the same instant
        base = url.split("?", 1)[0]
        want = ref.presign_url(base, amz_date(now), AK, SK, "us-east-1", 3600)
        self.assertEqual(query_dict(url), query_dict(want))
        r = subprocess.run(["curl", "-sS", "--fail", "--max-time", "20", url], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, data)
        self.assertEqual(tool("presign", self.uri, "att/x.bin", 604801, now).returncode, EINVAL)
        self.assertEqual(tool("presign", self.uri, "att/x.bin", 0, now).returncode, EINVAL)

    def test_threads_share_one_store(self):
        # 8 threads through one store handle (the curl handle pool) at once.
        # s3rver removes a directory once a delete empties it, racing its own
        # mkdir for a concurrent put (then it answers 500 and may die): an
        # object that stays keeps the directory alive.
        self.put_bytes("st/keep", b"k")
        self.assertEqual(self.ok("stress", self.uri, "st/", 8, 15, timeout=300).stdout, b"ok\n")
        self.assertEqual(self.ok("list", self.uri, "st/").stdout, b"st/keep 1\n")

    def test_virtual_host_style(self):
        # <bucket>.localhost: curl resolves *.localhost to 127.0.0.1 itself
        # (no DNS); s3rver takes the whole host name as the bucket.
        uri = "s3://vhb?endpoint=http://localhost:%d&path_style=0" % self.port
        self.put_bytes("v/1", b"virtual", "text/plain", uri=uri)
        self.assertEqual(self.ok("get", uri, "v/1").stdout, b"virtual")
        self.assertEqual(self.ok("list", uri, "").stdout, b"v/1 7\n")
        self.assertTrue(os.path.exists(self.path("s3data", "vhb.localhost", "v", "1._S3rver_object")))
        now = int(time.time())
        url = self.ok("presign", uri, "v/1", 60, now).stdout.decode().strip()
        self.assertTrue(url.startswith("http://vhb.localhost:%d/v/1?" % self.port), url)
        want = ref.presign_url(url.split("?", 1)[0], amz_date(now), AK, SK, "us-east-1", 60)
        self.assertEqual(query_dict(url), query_dict(want))
        r = subprocess.run(["curl", "-sS", "--fail", "--max-time", "20", url], capture_output=True, timeout=30)
        self.assertEqual(r.stdout, b"virtual")

    def test_missing_bucket_is_an_error_with_s3_code(self):
        uri = "s3://nobucket?endpoint=%s&path_style=1" % self.endpoint
        p = self.path("f")
        with open(p, "wb") as f:
            f.write(b"x")
        r = tool("put", uri, "k", p)
        self.assertEqual(r.returncode, ENOENT)
        self.assertIn(b"HTTP 404 NoSuchBucket", r.stderr)

    def test_endpoint_down_refuses_writes(self):
        self.s3.stop()
        p = self.path("f")
        with open(p, "wb") as f:
            f.write(b"x" * 1000)
        for args in [("put", self.uri, "k", p), ("get", self.uri, "k"), ("head", self.uri, "k"),
                     ("list", self.uri, ""), ("delete", self.uri, "k")]:
            r = tool(*args, timeout=60)
            self.assertEqual(r.returncode, ECONNREFUSED, (args, r.stderr))
            self.assertIn(b"store_tool: store: s3", r.stderr)
        # a put from a pipe (spooled first) fails the same way
        r = tool("put", self.uri, "k", "-", input=b"y" * 100000, timeout=60)
        self.assertEqual(r.returncode, ECONNREFUSED, r.stderr)

    def test_bad_keys_refused_before_the_network(self):
        for key in ["../x", "/abs", "a//b", "sp ace", "x~ct"]:
            r = tool("get", self.uri, key)
            self.assertEqual(r.returncode, EINVAL, key)


class BotocoreSignatureTest(unittest.TestCase):
    """tests/tools/store_tool sign / presign-query against botocore."""

    def sign_tool(self, method, host, path, params, date, region, service, payload, headers, token=None):
        raw_query = "&".join("%s=%s" % kv for kv in params) if params else "-"
        args = ["sign", method, host, path, raw_query, date, region, service, payload]
        args += ["%s:%s" % kv for kv in headers.items()]
        r = tool(*args, env=tool_env("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token))
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.decode().rstrip("\n")

    def test_header_signing_matches_botocore(self):
        cases = [
            # method, host, path, params, body, headers, token, region, service, s3
            ("GET", "127.0.0.1:4568", "/bkt/some/key.txt", [], b"", {}, None, "us-east-1", "s3", True),
            ("PUT", "127.0.0.1:4568", "/bkt/att/file.bin", [], b"hello \x00 world" * 100,
             {"Content-Type": "application/pdf"}, None, "eu-west-1", "s3", True),
            ("GET", "127.0.0.1:4568", "/bkt", [("list-type", "2"), ("prefix", "a/b c"), ("max-keys", "5"),
                                               ("continuation-token", "1ABc+/xyz==")],
             b"", {}, None, "us-east-1", "s3", True),
            ("GET", "bkt.s3.amazonaws.com", "/k%20with%20space", [("versionId", "v1")], b"",
             {"Range": "bytes=0-99"}, "FwoGZXIvYXdzEJr//////////session+token=", "us-east-1", "s3", True),
            ("DELETE", "127.0.0.1:4568", "/bkt/x", [], b"", {}, "tok", "ap-southeast-2", "s3", True),
            ("POST", "email.us-east-1.amazonaws.com", "/", [], b"Action=SendRawEmail&Version=2010-12-01",
             {"Content-Type": "application/x-www-form-urlencoded", "X-Custom": "  a   b\tc  "},
             None, "us-east-1", "ses", False),
            ("GET", "example.amazonaws.com", "/", [("Param2", "value2"), ("Param1", "value1"),
                                                   ("utf8", "caf\u00e9 \u2603")],
             b"", {}, None, "us-east-1", "service", False),
        ]
        for method, host, path, params, body, headers, token, region, service, s3 in cases:
            for date in ["20150830T123600Z", "20261126T235959Z"]:
                url = "http://%s%s" % (host, path)
                want, signed_headers = ref.sign_headers(
                    method, url, date, "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region,
                    service, token=token, headers=headers, params=dict(params), body=body, s3=s3)
                payload = signed_headers.get("X-Amz-Content-SHA256", ref.payload_hash(body))
                got = self.sign_tool(method, host, path, params, date, region, service, payload,
                                     signed_headers, token)
                self.assertEqual(got, want, "%s %s%s" % (method, host, path))

    def test_presign_matches_botocore(self):
        ak, sk = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
        for host, path in [("127.0.0.1:4568", "/bkt/att/x.pdf"), ("bkt.s3.amazonaws.com", "/a/b/c"),
                           ("localhost:9000", "/b/k%20sp")]:
            for expires in [1, 60, 3600, 86400, 604800]:
                for token in [None, "sess/token+with=chars"]:
                    date = "20261126T101500Z"
                    r = tool("presign-query", "GET", host, path, expires, date, "us-east-1", "s3",
                             env=tool_env(ak, sk, token))
                    self.assertEqual(r.returncode, 0, r.stderr)
                    got = r.stdout.decode().strip()
                    want = ref.presign_url("http://%s%s" % (host, path), date, ak, sk, "us-east-1", expires,
                                           token=token)
                    self.assertEqual(query_dict("http://x/?" + got), query_dict(want), (host, expires, token))
        for bad in [0, -5, 604801]:
            r = tool("presign-query", "GET", "h", "/k", bad, "20261126T101500Z", "us-east-1", "s3",
                     env=tool_env(ak, sk))
            self.assertEqual(r.returncode, EINVAL)
            self.assertEqual(r.stdout, b"")


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records each request; answers like a (tiny) S3 or with a canned error."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        self.on_conn = getattr(self, "on_conn", 0) + 1
        if self.server.drop_reused and self.on_conn > 1:
            # a keep-alive connection the server dropped under a request: the
            # client must resend the whole request (body included) elsewhere
            self.server.dropped += 1
            self.close_connection = True
            return
        self.server.requests.append((self.command, self.path, dict(self.headers.items()), body))
        status, reply = self.server.reply(self.command, self.path, body)
        rng = self.headers.get("Range")
        content_range = None
        if status == 200 and self.command == "GET" and rng:
            a, b = rng[len("bytes="):].split("-")
            a, b = int(a), (int(b) if b else len(reply) - 1)
            content_range = "bytes %d-%d/%d" % (a, b, len(reply))
            status, reply = 206, reply[a:b + 1]
        self.send_response(status)
        if content_range:
            self.send_header("Content-Range", content_range)
        self.send_header("Content-Length", str(len(reply)))
        self.send_header("Content-Type", "application/xml" if reply.startswith(b"<") else "text/plain")
        self.send_header("Last-Modified", "Thu, 26 Nov 2026 10:00:00 GMT")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply)

    do_GET = do_PUT = do_HEAD = do_DELETE = handle_one


class WireSignatureTest(harness.TestCase):
    """What the store sends is what botocore would sign for that request."""

    def setUp(self):
        super().setUp()
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        self.srv.requests = []
        self.srv.reply = self.reply
        self.srv.drop_reused = False
        self.objects = {}
        self.srv.dropped = 0
        self.failing = False
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.port = self.srv.server_address[1]

    def tearDown(self):
        self.srv.shutdown()
        self.srv.server_close()
        super().tearDown()

    def reply(self, method, path, body):
        if self.failing:
            return 500, (b"<?xml version=\"1.0\"?><Error><Code>InternalError</Code>"
                         b"<Message>We &amp; you</Message></Error>")
        if "list-type=2" in path:
            return 200, (b"<?xml version=\"1.0\"?><ListBucketResult><IsTruncated>false</IsTruncated>"
                         b"<Contents><Key>pfx/p/a&amp;b</Key><Size>3</Size>"
                         b"<LastModified>2026-11-26T10:00:00.000Z</LastModified></Contents>"
                         b"<Contents><Key>other/p/x</Key><Size>3</Size></Contents>"
                         b"<Contents><Key>pfx/p/ok&#45;k&#x65;y</Key><Size>12</Size>"
                         b"<LastModified>2026-11-26T10:00:00.000Z</LastModified></Contents>"
                         b"</ListBucketResult>")
        if path in self.objects:   # objects put by this test (stress)
            if method == "DELETE":
                del self.objects[path]
                return 204, b""
            return 200, self.objects[path]
        if method == "PUT" and "/st/" in path:
            self.objects[path] = body
            return 200, b""
        return 200, (b"object-bytes" if method in ("GET", "HEAD") else b"")

    def verify(self, token):
        self.assertTrue(self.srv.requests)
        for method, path, headers, body in self.srv.requests:
            h = {k.lower(): v for k, v in headers.items()}
            self.assertEqual(h["host"], "127.0.0.1:%d" % self.port)
            self.assertEqual(h["x-amz-content-sha256"], hashlib.sha256(body).hexdigest())
            auth = h["authorization"]
            signed = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
            want_signed = ["host", "x-amz-content-sha256", "x-amz-date"] + (["x-amz-security-token"] if token else [])
            self.assertEqual(signed, want_signed)
            if token:
                self.assertEqual(h["x-amz-security-token"], token)
            date = h["x-amz-date"]
            self.assertLess(abs(calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ")) - time.time()), 300)
            # botocore signs the request exactly as it arrived (raw path and query)
            want, _ = ref.sign_headers(method, "http://127.0.0.1:%d%s" % (self.port, path), date, "AKIDWIRE",
                                       "wire/secret+key", "eu-central-1", "s3", token=token,
                                       headers={"X-Amz-Content-SHA256": h["x-amz-content-sha256"]}, body=body)
            self.assertEqual(auth, want, "%s %s" % (method, path))

    def run_verbs(self, env):
        uri = "s3://bkt/pfx?endpoint=http://127.0.0.1:%d&region=eu-central-1&path_style=1" % self.port
        src = self.path("src")
        with open(src, "wb") as f:
            f.write(b"payload \x00\x01\x02" * 5000)
        for args, stdin in [(("put", uri, "dir/obj.bin", src, "application/pdf"), None),
                            (("put", uri, "piped", "-"), b"from a pipe"),
                            (("get", uri, "dir/obj.bin"), None), (("get", uri, "dir/obj.bin", 5, 10), None),
                            (("get", uri, "dir/obj.bin", 0, 1), None),
                            (("head", uri, "dir/obj.bin"), None), (("delete", uri, "dir/obj.bin"), None),
                            (("list", uri, "p/"), None)]:
            r = tool(*args, env=env, input=stdin)
            self.assertEqual(r.returncode, 0, (args, r.stderr))
            if args[0] == "list":
                # entities are decoded; keys outside our key rule or prefix are skipped
                self.assertEqual(r.stdout, b"p/ok-key 12\n")
            if args[0] == "get" and len(args) == 5:
                self.assertEqual(r.stdout, b"object-bytes"[args[3]:args[3] + args[4]])
            if args[0] == "head":
                self.assertEqual(r.stdout.split()[:2], [b"12", b"text/plain"])
        methods = [m for m, _, _, _ in self.srv.requests]
        self.assertEqual(methods, ["PUT", "PUT", "GET", "GET", "GET", "HEAD", "DELETE", "GET"])
        self.assertEqual(self.srv.requests[0][1], "/bkt/pfx/dir/obj.bin")
        self.assertEqual(self.srv.requests[0][2]["Content-Type"], "application/pdf")
        self.assertEqual(self.srv.requests[3][2]["Range"], "bytes=5-14")
        self.assertEqual(self.srv.requests[4][2]["Range"], "bytes=0-0")
        self.assertIn("prefix=pfx%2Fp%2F", self.srv.requests[7][1])

    def test_requests_signed_like_botocore(self):
        self.run_verbs(tool_env("AKIDWIRE", "wire/secret+key"))
        self.verify(None)

    def test_requests_with_session_token(self):
        token = "FQoGZXIvYXdzE//token+with/odd=chars"
        self.run_verbs(tool_env("AKIDWIRE", "wire/secret+key", token))
        self.verify(token)

    def test_put_resent_after_dropped_keepalive(self):
        self.srv.drop_reused = True
        uri = "s3://bkt?endpoint=http://127.0.0.1:%d&region=eu-central-1&path_style=1" % self.port
        r = tool("stress", uri, "st/", 1, 3, env=tool_env("AKIDWIRE", "wire/secret+key"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(self.srv.dropped, 0)
        puts = [(p, b) for m, p, _, b in self.srv.requests if m == "PUT"]
        self.assertEqual(len(puts), 3)
        for path, body in puts:
            key = path[len("/bkt/"):]
            self.assertTrue(body.startswith(key.encode() + b":0;"), body[:40])
        self.assertEqual(self.objects, {})
        self.verify(None)

    def test_http_error_maps_to_eio_with_s3_code(self):
        self.failing = True
        uri = "s3://bkt?endpoint=http://127.0.0.1:%d&path_style=1" % self.port
        r = tool("get", uri, "k")
        self.assertEqual(r.returncode, EIO)
        self.assertIn(b"HTTP 500 InternalError: We & you", r.stderr)
        r = tool("put", uri, "k", "-", input=b"abc")
        self.assertEqual(r.returncode, EIO)
        self.assertIn(b"HTTP 500 InternalError", r.stderr)


if __name__ == "__main__":
    unittest.main()


class SendStoreCredentialsTest(harness.TestCase):
    """send reads a message body kept in the incoming store (outbound.v1
    body.encoding = store) with the [s3] credentials of its config, like every
    other worker, and no AWS_* variables in its environment.  It used to open
    its stores without options, so the [s3] keys were ignored and send could
    not read S3 at all unless the AWS_* variables happened to be set."""

    def test_send_uses_s3_section_credentials(self):
        import test_send
        start_s3rver(self)
        bus = "local:" + self.path("queue")
        metrics = harness.free_port()
        rec = test_send.outbound(["s3@example.com"])
        body = rec["body"]["data"].encode()
        key = "outbound/2026-12-03/%s.eml" % rec["id"]
        src = self.write("body.eml", rec["body"]["data"])
        self.assertEqual(tool("put", self.uri, key, src).returncode, 0)   # the tool signs with AWS_* env
        rec["body"] = {"encoding": "store", "store": "incoming", "key": key, "size": len(body),
                       "sha256": hashlib.sha256(body).hexdigest()}
        line = "%s\t%s\n" % (rec["inbound_id"], json.dumps(rec, separators=(",", ":")))
        r = subprocess.run([test_send.SEND_TOOL, "produce", bus, "mailfleet.outbound"], input=line, text=True,
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        cfg = self.write("mf.ini", """[mailfleet]
bus = %s
state_dir = %s
store_incoming = %s
store_attachments = file:%s
token_keys = %s
[s3]
access_key = %s
secret_key = %s
[send]
metrics_listen = 127.0.0.1:%d
transport = outbox:%s
""" % (bus, self.path("state"), self.uri, self.path("att"), test_send.TOKEN_KEYS, AK, SK, metrics,
            self.path("outbox")))
        no_aws = {k: None for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                    "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")}
        p = self.start([harness.MAILFLEET, "send", "-c", cfg], "send", env=no_aws)
        out = self.path("outbox", "s3@example.com", rec["id"] + ".eml")
        try:
            harness.wait_for(lambda: os.path.exists(out), timeout=30, what="the message in the outbox")
        except TimeoutError:
            self.fail("send did not deliver the stored body:\n" + p.output()[-3000:])
        with open(out, "rb") as f:
            self.assertTrue(f.read().endswith(body))
        self.assertNotIn("cannot open the message store", p.output())
        self.assertEqual(p.stop(), 0)
