"""transform and links with both stores on S3 (s3rver): the raw mail is read
from S3 (downloaded to a temp file first), attachments are put to S3,
link_mode = presigned gives S3 pre-signed GETs that serve the same bytes as
Python's email package decodes, and links with redirect = true answers 302
to a short pre-signed URL."""
import hashlib
import json
import os
import re
import urllib.parse
import urllib.request

import harness
from test_links import expected_attachments, get
from test_transform import DATA, Pipeline, corpus, uuid7, validate

S3RVER = os.path.join(harness.NODE_BIN, "s3rver")


def golden(name):
    """(name, sha256) of the corpus mail's linked attachments, from its
    golden file (Python's reading, checked by test_transform_golden.py)."""
    with open(os.path.join(DATA, "expected", name + ".json")) as f:
        return expected_attachments(json.load(f))


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


class TransformS3Test(harness.TestCase, Pipeline):
    def start_s3(self):
        self.s3port = harness.free_port()
        os.makedirs(self.path("s3data"))
        return self.run_s3()

    def run_s3(self):
        self.s3 = self.start([S3RVER, "--directory", self.path("s3data"), "--port", str(self.s3port),
                              "--address", "127.0.0.1", "--configure-bucket", "bkt"],
                             "s3rver", env={"NODE_OPTIONS": "--openssl-legacy-provider"})
        harness.wait_port(self.s3port, timeout=30, proc=self.s3.p)
        ep = "http://127.0.0.1:%d" % self.s3port
        return ("s3://bkt/in?endpoint=%s&region=us-east-1&path_style=1" % ep,
                "s3://bkt/att?endpoint=%s&region=us-east-1&path_style=1" % ep)

    def setup_s3(self, transform_extra, links_extra=""):
        inc, att = self.start_s3()
        self.setup_pipeline(extra=links_extra)
        with open(self.cfg) as f:
            cfg = f.read()
        cfg = cfg.replace("store_incoming = file:%s" % self.incoming, "store_incoming = " + inc)
        cfg = cfg.replace("store_attachments = file:%s" % self.att, "store_attachments = " + att)
        cfg = cfg.replace("[transform]\n", "[transform]\n" + transform_extra)
        cfg += "\n[s3]\naccess_key = S3RVER\nsecret_key = S3RVER\n"
        with open(self.cfg, "w") as f:
            f.write(cfg)

    def submit_s3(self, raw):
        """Puts the raw mail into the incoming bucket prefix (s3rver takes
        unsigned PUTs) and publishes its inbound.v1 record."""
        iid = uuid7()
        key = "incoming/%s.eml" % iid
        req = urllib.request.Request("http://127.0.0.1:%d/bkt/in/%s" % (self.s3port, key), data=raw,
                                     method="PUT")
        urllib.request.urlopen(req, timeout=10).read()
        return self.publish_inbound(iid, key, raw, "d@devices.example")

    def test_store_outage_is_retried_not_dead_lettered(self):
        """An incoming store that is down is the machine's fault, not the
        mail's: transform retries past its record retries (2 here) without
        dead-lettering, and the mail goes out once the store is back."""
        self.setup_s3("link_mode = presigned\n")
        iid = self.submit_s3(corpus("demo"))
        self.s3.stop()
        self.start_transform()
        port = int(re.search(r"metrics_listen = 127\.0\.0\.1:(\d+)", open(self.cfg).read()).group(1))   # [transform] comes first

        def environment_retries():
            try:
                st, _, body = get("http://127.0.0.1:%d/metrics" % port)
            except OSError:
                return None   # not listening yet
            m = re.search(r'mailfleet_loop_records_total\{[^}]*outcome="environment"[^}]*\} (\d+)',
                          body.decode()) if st == 200 else None
            return m and int(m.group(1)) >= 4
        harness.wait_for(environment_retries, timeout=60, what="retries while the store is down")
        self.assertEqual(self.read("mailfleet.inbound.dlq"), [])
        self.run_s3()
        ob = self.outbound_for(iid)
        self.assertEqual(ob["inbound_id"], iid)
        self.assertEqual(self.read("mailfleet.inbound.dlq"), [])

    def test_presigned_links(self):
        self.setup_s3("link_mode = presigned\nlink_expiry = 2h\n")
        self.start_transform()
        for name in ("demo", "nested_multipart", "rfc822_attachment"):
            raw = corpus(name)
            ob = self.outbound_for(self.submit_s3(raw))
            validate("outbound", ob)
            got = []
            for l in ob["links"]:
                q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(l["url"]).query))
                self.assertEqual(q["X-Amz-Expires"], "7200")
                self.assertEqual(q["X-Amz-Algorithm"], "AWS4-HMAC-SHA256")
                self.assertTrue(l["url"].startswith("http://127.0.0.1:%d/bkt/att/attachments/" % self.s3port))
                st, _, body = get(l["url"])
                self.assertEqual(st, 200)
                got.append((l["name"], hashlib.sha256(body).hexdigest()))
            self.assertEqual(got, golden(name), name)

    def test_gateway_redirect(self):
        self.setup_s3("", links_extra="redirect = true\n")
        self.start_transform()
        self.start_links()
        ob = self.outbound_for(self.submit_s3(corpus("demo")))
        link = ob["links"][0]
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(link["url"], timeout=10)
            self.fail("expected a redirect")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 302)
            loc = e.headers["Location"]
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))
        self.assertEqual(q["X-Amz-Expires"], "60")
        st, _, body = get(loc)
        self.assertEqual(hashlib.sha256(body).hexdigest(), link["sha256"])

    def test_gateway_streams_from_s3(self):
        self.setup_s3("")
        self.start_transform()
        self.start_links()
        raw = corpus("nested_multipart")
        ob = self.outbound_for(self.submit_s3(raw))
        got = []
        for l in ob["links"]:
            st, h, body = get(l["url"])
            self.assertEqual(st, 200)
            self.assertEqual(h["ETag"], '"%s"' % l["sha256"])
            got.append((l["name"], hashlib.sha256(body).hexdigest()))
            st, h, part = get(l["url"], {"Range": "bytes=100-199"})
            self.assertEqual((st, part), (206, body[100:200]))
        self.assertEqual(got, golden("nested_multipart"))
