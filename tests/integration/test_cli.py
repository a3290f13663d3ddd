"""The mailfleet binary itself: version, config check, config errors."""
import os
import harness


class CliTest(harness.TestCase):
    def test_version(self):
        r = self.mailfleet("version")
        self.assertRegex(r.stdout, r"^mailfleet \d+\.\d+\.\d+")

    def test_example_config_checks(self):
        r = self.mailfleet("config", "check", "-c", os.path.join(harness.ROOT, "ops", "mailfleet.example.ini"))
        self.assertIn("ok", r.stdout)

    def test_example_documents_every_key(self):
        """ops/mailfleet.example.ini is `mailfleet config example` plus a header."""
        gen = self.mailfleet("config", "example").stdout
        text = open(os.path.join(harness.ROOT, "ops", "mailfleet.example.ini")).read()
        self.assertTrue(text.endswith(gen), "regenerate: see the header of ops/mailfleet.example.ini")

    def test_dev_config_checks(self):
        self.mailfleet("config", "check", "-c", os.path.join(harness.ROOT, "ops", "mailfleet.dev.ini"))

    def test_unknown_key_names_file_line_key(self):
        path = self.write("bad.ini", "[mailfleet]\nlog_level = info\n\nbogus_key = 1\n")
        r = self.mailfleet("config", "check", "-c", path, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("bad.ini:4:", r.stderr)
        self.assertIn("bogus_key", r.stderr)
        self.assertIn("unknown key", r.stderr)

    def test_unknown_section(self):
        path = self.write("bad.ini", "[nosuch]\nx = 1\n")
        r = self.mailfleet("config", "check", "-c", path, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("bad.ini:2:", r.stderr)
        self.assertIn("unknown section", r.stderr)

    def test_bad_value(self):
        path = self.write("bad.ini", "[mailfleet]\nqueue_retention = forever\n")
        r = self.mailfleet("config", "check", "-c", path, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("bad.ini:2:", r.stderr)
        self.assertIn("queue_retention", r.stderr)
        self.assertIn("duration", r.stderr)

    def test_env_override_is_validated(self):
        path = self.write("ok.ini", "[mailfleet]\nlog_level = info\n")
        r = self.mailfleet("config", "check", "-c", path, check=False,
                           env={"MAILFLEET__MAILFLEET__QUEUE_RETENTION": "never"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("queue_retention", r.stderr)
        r = self.mailfleet("config", "check", "-c", path, check=False,
                           env={"MAILFLEET__NOSUCH__KEY": "1"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("MAILFLEET__NOSUCH__KEY", r.stderr)

    def test_secret_file(self):
        self.write("secret", "s3cr3t\n", 0o600)
        path = self.write("ok.ini", "[s3]\nsecret_key_file = %s\n" % self.path("secret"))
        self.mailfleet("config", "check", "-c", path)
        path = self.write("bad.ini", "[s3]\nsecret_key_file = %s\n" % self.path("missing"))
        r = self.mailfleet("config", "check", "-c", path, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("secret_key_file", r.stderr)

    def test_kafka_properties_reach_every_worker(self):
        """[kafka] is handed to librdkafka by every worker and admin verb (TLS
        and SASL settings must reach them all): a bogus property is refused
        by name before any broker is contacted."""
        cfg = self.write("k.ini", "[mailfleet]\nbus = kafka:127.0.0.1:9\ntoken_keys = k1:%s\n"
                         "state_dir = %s\n[kafka]\nno.such.property = 1\n" % ("ab" * 32, self.path("state")))
        for w in ("transform", "send", "feedback", "monitor", "links"):
            port = harness.free_port()
            env = {"MAILFLEET__%s__METRICS_LISTEN" % w.upper(): "127.0.0.1:%d" % port}
            if w in ("feedback", "links"):
                env["MAILFLEET__%s__PUBLIC_LISTEN" % w.upper()] = "127.0.0.1:%d" % harness.free_port()
            r = self.mailfleet(w, "-c", cfg, check=False, env=env, timeout=60)
            self.assertNotEqual(r.returncode, 0, w)
            self.assertIn("no.such.property", r.stderr, w)
        r = self.mailfleet("alarms", "-c", cfg, check=False)
        self.assertIn("no.such.property", r.stderr)
