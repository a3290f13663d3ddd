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


class DevSecretsTest(harness.TestCase):
    """The development secrets published in ops/ (token key, API token, the
    device user) are refused on any listener beyond loopback, and only there:
    `make run`'s config on 127.0.0.1 starts."""

    def dev_config(self, ingest_host="127.0.0.1", **replace):
        """ops/mailfleet.dev.ini with free ports and this test's dirs;
        replace: {key: new value} for token_keys, api_token, users_file."""
        import re
        text = open(os.path.join(harness.ROOT, "ops", "mailfleet.dev.ini")).read()
        self.ports = {}

        def port(m):
            p = harness.free_port()
            self.ports.setdefault(m.group(1), p)
            return "%s = 127.0.0.1:%d" % (m.group(1), p)
        text = re.sub(r"^(\w+) = 127\.0\.0\.1:\d+$", port, text, flags=re.M)
        text = re.sub(r"^listen = 127\.0\.0\.1:", "listen = %s:" % ingest_host, text, flags=re.M)
        text = text.replace("var/", self.path("var") + "/")
        text = text.replace("ops/dev.users", os.path.join(harness.ROOT, "ops", "dev.users"))
        for key, value in replace.items():
            text, n = re.subn(r"^%s = .*$" % key, "%s = %s" % (key, value), text, flags=re.M)
            self.assertEqual(n, 1, key)
        return self.write("mf.ini", text)

    def refused(self, cfg, *args):
        r = self.mailfleet(*(args or ("run",)), "-c", cfg, check=False, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("refusing to start", r.stderr)
        self.assertIn("[ingest] listen = 0.0.0.0:", r.stderr)
        return r.stderr

    def own_users(self):
        r = self.mailfleet("users", "add", "ops", "-c", self.write("u.ini", "[ingest]\nusers_file = %s\n"
                                                                    % self.path("users")),
                           input="a-password-of-our-own\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        return self.path("users")

    def test_dev_config_on_loopback_starts(self):
        p = self.start([harness.MAILFLEET, "run", "-c", self.dev_config()], "run")
        harness.wait_port(self.ports["listen"], proc=p.p)
        harness.wait_port(self.ports["http_listen"], proc=p.p)

    def test_each_dev_secret_beyond_loopback_is_refused_by_name(self):
        own_key = "prod1:" + "c3" * 32
        rows = [
            ({}, "[mailfleet] token_keys"),
            ({"token_keys": own_key, "users_file": self.own_users()}, "[feedback] api_token"),
            ({"token_keys": own_key, "api_token": "a-token-of-our-own-1234"}, "[ingest] users_file"),
            # a renamed key id is still the published key
            ({"token_keys": own_key + ",old:" + "6d61696c666c6565742d6465762d6b65792d6f6e652d646f2d6e6f742d757365",
              "api_token": "a-token-of-our-own-1234", "users_file": self.own_users()}, "[mailfleet] token_keys"),
        ]
        for replace, named in rows:
            err = self.refused(self.dev_config("0.0.0.0", **replace))
            self.assertIn(named, err)
            self.assertNotIn("6d61696c666c6565742d", err)   # the secret itself is never printed
        # a single worker refuses the same way
        self.assertIn("[mailfleet] token_keys", self.refused(self.dev_config("0.0.0.0"), "ingest"))

    def test_own_secrets_beyond_loopback_start(self):
        cfg = self.dev_config("0.0.0.0", token_keys="prod1:" + "c3" * 32, api_token="a-token-of-our-own-1234",
                              users_file=self.own_users())
        p = self.start([harness.MAILFLEET, "run", "-c", cfg], "run")
        harness.wait_port(self.ports["listen"], proc=p.p)
        harness.wait_port(self.ports["http_listen"], proc=p.p)
