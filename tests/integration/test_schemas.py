"""schemas/*.v1.json: valid JSON Schema 2020-12, and the examples under
schemas/examples/<name>/{valid,invalid}/ pass and fail as their folder says.

Uses python3-jsonschema's Draft202012Validator with a FormatChecker.  Debian's
jsonschema has no date-time checker unless rfc3339-validator is installed, so
one is added here (a real calendar check: 2026-13-45 fails)."""
import datetime
import glob
import json
import os
import re
import subprocess
import unittest

import harness
import jsonschema
from jsonschema import Draft202012Validator

SCHEMAS = os.path.join(harness.ROOT, "schemas")
NAMES = ["inbound", "outbound", "fallback", "event", "feedback", "suppression", "revocation", "alarm"]
RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def format_checker():
    fc = jsonschema.FormatChecker()

    @fc.checks("date-time", raises=ValueError)
    def is_datetime(value):
        if not isinstance(value, str):
            return True
        m = RFC3339.match(value)
        if not m:
            raise ValueError("not RFC 3339: %r" % value)
        datetime.datetime(*(int(g) for g in m.groups()[:6]))  # raises on 2026-13-45
        return True

    return fc


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def examples(name, kind):
    return sorted(glob.glob(os.path.join(SCHEMAS, "examples", name, kind, "*.json")))


class SchemaTest(unittest.TestCase):
    def validator(self, name):
        schema = load(os.path.join(SCHEMAS, name + ".v1.json"))
        return Draft202012Validator(schema, format_checker=format_checker())

    def test_every_schema_is_valid_2020_12(self):
        files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(SCHEMAS, "*.v1.json")))
        self.assertEqual(files, sorted(n + ".v1.json" for n in NAMES))
        for name in NAMES:
            with self.subTest(schema=name):
                schema = load(os.path.join(SCHEMAS, name + ".v1.json"))
                Draft202012Validator.check_schema(schema)
                self.assertEqual(schema["$schema"], "https://json-schema.org/draft/2020-12/schema")
                self.assertEqual(schema["title"], "mailfleet.%s.v1" % name)
                # every record names its schema with a const
                self.assertEqual(schema["properties"]["schema"], {"const": "mailfleet.%s.v1" % name})
                self.assertIn("schema", schema["required"])
                self.assertIs(schema["additionalProperties"], False)
                self.assertTrue(schema.get("description"))

    def test_examples_exist(self):
        for name in NAMES:
            with self.subTest(schema=name):
                self.assertGreaterEqual(len(examples(name, "valid")), 2)
                self.assertGreaterEqual(len(examples(name, "invalid")), 2)
        # no stray example folders for schemas that do not exist
        dirs = sorted(os.listdir(os.path.join(SCHEMAS, "examples")))
        self.assertEqual(dirs, sorted(NAMES))

    def test_valid_examples_pass(self):
        for name in NAMES:
            v = self.validator(name)
            for path in examples(name, "valid"):
                with self.subTest(example=os.path.relpath(path, SCHEMAS)):
                    errors = [e.message for e in v.iter_errors(load(path))]
                    self.assertEqual(errors, [])

    def test_invalid_examples_fail(self):
        for name in NAMES:
            v = self.validator(name)
            for path in examples(name, "invalid"):
                with self.subTest(example=os.path.relpath(path, SCHEMAS)):
                    doc = load(path)
                    self.assertFalse(v.is_valid(doc), "accepted: " + json.dumps(doc)[:300])

    def test_an_example_fails_only_its_own_schema_const(self):
        # A valid record of one schema is not a valid record of any other.
        for name in NAMES:
            doc = load(examples(name, "valid")[0])
            for other in NAMES:
                if other != name:
                    with self.subTest(record=name, schema=other):
                        self.assertFalse(self.validator(other).is_valid(doc))

    def test_date_time_format_is_checked(self):
        v = self.validator("revocation")
        good = {"schema": "mailfleet.revocation.v1", "kind": "message",
                "target": "019ac0f2-3b4c-7d5e-8f60-1a2b3c4d5e6f", "revoked_at": "2026-02-28T00:00:00.000Z"}
        self.assertTrue(v.is_valid(good))
        for bad in ("2026-02-30T00:00:00.000Z", "2026-11-26T24:00:00.000Z", "2026-11-26T10:60:00.000Z",
                    "2026-11-26 10:00:00.000Z", "2026-11-26T10:00:00.000z"):
            with self.subTest(ts=bad):
                self.assertFalse(v.is_valid(dict(good, revoked_at=bad)))

    def test_record_builders_pass_their_schemas(self):
        # common/'s builders (tests/tools/record_tool prints one record of
        # each shape they make): what the workers produce, not hand-written
        # examples.
        out = subprocess.run([os.path.join(harness.TOOLS, "record_tool")], check=True,
                             capture_output=True, text=True, timeout=30).stdout
        seen = set()
        for n, line in enumerate(out.splitlines()):
            name, value = line.split(" ", 1)
            seen.add(name)
            with self.subTest(line=n, schema=name):
                errors = [e.message for e in self.validator(name).iter_errors(json.loads(value))]
                self.assertEqual(errors, [], value[:300])
        self.assertEqual(seen, {"event", "inbound", "feedback", "fallback", "suppression"})

    def test_readme_documents_every_schema_and_dlq_headers(self):
        with open(os.path.join(SCHEMAS, "README.md"), encoding="utf-8") as f:
            text = f.read()
        for name in NAMES:
            self.assertIn("%s.v1.json" % name, text)
        for header in ("mf.error.stage", "mf.error.class", "mf.error.message", "mf.source.topic",
                       "mf.source.partition", "mf.source.offset", "mf.attempts"):
            self.assertIn(header, text)


if __name__ == "__main__":
    unittest.main()
