"""Least privilege in ops/k8s, checked offline against the code.

One table (ACCESS) says what each Kafka principal does: the topics it
reads and writes, the consumer groups it uses, whether it has a
transactional id, and what it does in the object store.  The table is
checked against the code (common/bus/topics.h and the sources of each
worker) and against what kubectl kustomize renders: the KafkaUsers' ACLs
allow exactly what the table says, each pod mounts only its own Kafka
certificate and S3 credentials, and ops/README.md lists the same IAM
actions.  Also here: topic retention against the store's lifecycle and
the token lifetime, and the NetworkPolicies (no plain Kafka in prod, SMTP
only from send, no egress to any address in prod, public HTTP only from
the ingress controller)."""
import glob
import ipaddress
import json
import os
import re
import unittest

import harness
from test_ops import K8S, OPS, RENDERS, by_kind, ini_of, parse_ini, render, workloads

ROOT = harness.ROOT
TOPICS_H = os.path.join(ROOT, "common", "bus", "topics.h")
README = os.path.join(OPS, "README.md")
LIFECYCLE = os.path.join(OPS, "s3-lifecycle.json")
DAY_MS = 86400000

# --- the table ----------------------------------------------------------------
#
# Topics and groups are the macros of common/bus/topics.h where the code has
# one; a name ending in "." is a prefix (the retry tiers, per-pod groups).
#   sources   files (globs under the repository) whose bus use runs under
#             this principal: every TOPIC_*/GROUP_* they name must be in
#             reads/writes/groups, and nothing else may be there
#   reads     topics it consumes, follows whole or samples (Read, Describe)
#   writes    topics it produces (Write, Describe)
#   groups    {group: "Read" (joins or commits: Read, Describe) or
#             "Describe" (committed offsets only)}; for a group the code
#             builds with snprintf, the pattern the sources must contain
#   txn       a transactional id mailfleet-<principal>-<instance>
#   loop      topics of its worker loop, whose records it dead-letters
#   replays   writes to every topic a worker loop dead-letters from
#             (`mailfleet dlq replay` re-publishes to mf.source.topic)
#   store     {action: [prefixes]} in the object store, by store key:
#             incoming/..., attachments/... (ops/README.md lists the same)
ACCESS = {
    "ingest": {
        # spool.c: records go to the local queue ingest.spool, the
        # forwarder (group ingest-forwarder, local too) relays them
        "sources": ["workers/ingest/*.[ch]"],
        "reads": [],
        "writes": ["TOPIC_INBOUND", "TOPIC_FEEDBACK"],
        "groups": {},
        "txn": False,
        "store": {"PutObject": ["incoming/*"]},
    },
    "transform": {
        "sources": ["workers/transform/*.[ch]"],
        "reads": ["TOPIC_INBOUND"],
        "writes": ["TOPIC_OUTBOUND", "TOPIC_FALLBACK", "TOPIC_INBOUND_DLQ"],
        "groups": {"GROUP_TRANSFORM": "Read"},
        "txn": True,
        "loop": ["TOPIC_INBOUND"],
        # raw mail in; outbound bodies over inline_max out (outbound/...)
        # and attachments out
        "store": {"GetObject": ["incoming/*"], "PutObject": ["incoming/outbound/*", "attachments/*"]},
    },
    "send": {
        "sources": ["workers/send/*.[ch]", "common/mail/suppression_copy.c"],
        "exclude": ["workers/send/send_admin.c"],
        "reads": ["TOPIC_OUTBOUND", "TOPIC_OUTBOUND_RETRY", "TOPIC_SUPPRESSION"],
        "writes": ["TOPIC_EVENTS", "TOPIC_OUTBOUND_RETRY", "TOPIC_OUTBOUND_DLQ"],
        "groups": {"GROUP_SEND": "Read",
                   "send.retry.": ("Read", r'"%s\.retry\.%s"'),
                   "send.suppression.": ("Read", r'"%s\.suppression\.%s"')},
        "txn": True,
        "loop": ["TOPIC_OUTBOUND", "TOPIC_OUTBOUND_RETRY"],
        # bodies transform stored (body.encoding "store")
        "store": {"GetObject": ["incoming/outbound/*"]},
    },
    "feedback": {
        "sources": ["workers/feedback/*.[ch]", "common/mail/suppression_copy.c", "common/mail/suppression.c"],
        "exclude": ["workers/feedback/suppression_admin.c"],
        # feedback_http.c publishes to mailfleet.feedback, the API to
        # mailfleet.suppression
        "reads": ["TOPIC_FEEDBACK", "TOPIC_EVENTS", "TOPIC_SUPPRESSION"],
        "writes": ["TOPIC_FEEDBACK", "TOPIC_EVENTS", "TOPIC_SUPPRESSION", "TOPIC_FALLBACK"],
        "groups": {"GROUP_FEEDBACK": "Read", "GROUP_FEEDBACK_EVENTS": "Read",
                   "feedback.suppression.": ("Read", r'"feedback\.suppression\.%s"')},
        "txn": True,
        # the DSN / ARF mail ingest stored
        "store": {"GetObject": ["incoming/*"]},
    },
    "monitor": {
        "sources": ["workers/monitor/*.[ch]"],
        "exclude": ["workers/monitor/monitor_admin.c"],
        # the record at each watched group's committed offset (its age)
        "reads": ["TOPIC_INBOUND", "TOPIC_OUTBOUND", "TOPIC_INBOUND_DLQ", "TOPIC_OUTBOUND_DLQ", "TOPIC_EVENTS"],
        "writes": ["TOPIC_ALARMS"],
        "groups": {"GROUP_MONITOR": "Read", "GROUP_TRANSFORM": "Describe", "GROUP_SEND": "Describe",
                   "GROUP_DLQ_OPERATOR": "Describe"},
        "txn": False,
        # deletes old objects of file: stores only (S3: the lifecycle rule)
        "store": {},
    },
    "links": {
        "sources": ["workers/links/*.[ch]"],
        "exclude": ["workers/links/links_admin.c"],
        "reads": ["TOPIC_REVOCATIONS"],
        "writes": ["TOPIC_EVENTS"],
        "groups": {"GROUP_BUS_READER": "Describe"},
        "txn": False,
        # GET with ranges, HEAD, and the pre-signed URLs of redirect = true
        "store": {"GetObject": ["attachments/*"]},
    },
    # the admin verbs, run in the toolbox pod (ops/k8s/base/operator.yaml)
    "operator": {
        "sources": ["workers/admin/*.[ch]", "workers/links/links_admin.c", "workers/feedback/suppression_admin.c",
                    "workers/monitor/monitor_admin.c", "common/mail/suppression.c"],
        "reads": ["TOPIC_INBOUND_DLQ", "TOPIC_OUTBOUND_DLQ", "TOPIC_SUPPRESSION", "TOPIC_ALARMS"],
        "writes": ["TOPIC_REVOCATIONS", "TOPIC_SUPPRESSION"],
        "replays": True,
        "groups": {"GROUP_DLQ_OPERATOR": "Read", "GROUP_BUS_READER": "Describe"},
        "txn": False,
        "store": {},
    },
}
# Workload component -> principal (the operator's toolbox is a CronJob)
TOOLBOX = "mailfleet-operator"
# Bus calls that read without a group of their own: librdkafka still needs
# a group id, GROUP_BUS_READER, never committed (bus_kafka.c)
GROUPLESS_READ = re.compile(r"\bbus_(scan|read_at)\s*\(")
# Where a DLQ record's objects live ([mailfleet] store_* keys): the raw mail
# of an inbound record; an outbound record's stored body and its attachments.
DLQ_OBJECTS = {"mailfleet.inbound.dlq": ["store_incoming"],
               "mailfleet.outbound.dlq": ["store_incoming", "store_attachments"]}
OPS_READ = {"Read", "Describe"}
OPS_WRITE = {"Write", "Describe"}
SMTP_PORTS = {25, 465, 587}


def topics_h():
    """{macro: value} of common/bus/topics.h's TOPIC_* and GROUP_*."""
    with open(TOPICS_H) as f:
        return dict(re.findall(r'^#define\s+((?:TOPIC|GROUP)_[A-Z_]+)\s+"([^"]+)"', f.read(), re.M))


def local_only(macros):
    """Names on the local queue only (ingest's spool), never on Kafka."""
    return {m for m, v in macros.items() if m.startswith("TOPIC_") and not v.startswith("mailfleet.")} | \
        {"GROUP_INGEST_FORWARD"}


def source_files(entry):
    files = set()
    for pat in entry["sources"]:
        files |= set(glob.glob(os.path.join(ROOT, pat)))
    files -= {os.path.join(ROOT, x) for x in entry.get("exclude", [])}
    return sorted(files)


def read(path):
    with open(path) as f:
        return f.read()


def strip_comments(text):
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)


def matches(pattern, name):
    """Does a topic/group name match a table or ACL name ("x." = prefix)?"""
    return name.startswith(pattern) if pattern.endswith(".") else name == pattern


def expected_topic_ops(principal, macros, topics):
    """{rendered topic: {ops}} the table gives principal (absent: none)."""
    e = ACCESS[principal]
    writes = list(e["writes"])
    if e.get("replays"):
        for other in ACCESS.values():
            writes += other.get("loop", [])
    out = {}
    for ops, names in ((OPS_READ, e["reads"]), (OPS_WRITE, writes)):
        for m in names:
            for t in topics:
                if matches(macros[m], t):
                    out.setdefault(t, set()).update(ops)
    return out


def acl_rules(user):
    return user["spec"]["authorization"]["acls"]


def acl_topic_ops(user, topics):
    out = {}
    for a in acl_rules(user):
        r = a["resource"]
        if r["type"] != "topic":
            continue
        for t in topics:
            if (r.get("patternType", "literal") == "prefix" and t.startswith(r["name"])) or t == r["name"]:
                out.setdefault(t, set()).update(a["operations"])
    return out


def acl_resources(user, kind):
    return {(a["resource"]["name"], a["resource"].get("patternType", "literal"), frozenset(a["operations"]))
            for a in acl_rules(user) if a["resource"]["type"] == kind}


def pods(objs):
    """{component: pod template} of the workloads and the operator's CronJob."""
    out = {c: w["spec"]["template"] for c, w in workloads(objs).items()}
    for cj in by_kind(objs, "CronJob").values():
        t = cj["spec"]["jobTemplate"]["spec"]["template"]
        out[t["metadata"]["labels"]["app.kubernetes.io/component"]] = t
    return out


def selects(sel, labels):
    """A label selector (matchLabels and matchExpressions) against labels."""
    sel = sel or {}
    if any(labels.get(k) != v for k, v in sel.get("matchLabels", {}).items()):
        return False
    for e in sel.get("matchExpressions", []):
        has, val = e["key"] in labels, labels.get(e["key"])
        op = e["operator"]
        if (op == "In" and val not in e["values"]) or (op == "NotIn" and has and val in e["values"]) or \
                (op == "Exists" and not has) or (op == "DoesNotExist" and has):
            return False
    return True


def policies_of(objs, labels):
    return [p for p in by_kind(objs, "NetworkPolicy").values() if selects(p["spec"]["podSelector"], labels)]


def rule_ports(rule):
    return {p["port"] for p in rule.get("ports", [])}


def secret_refs(pod, objs):
    """Names of the Secrets a pod template mounts (plain and projected),
    those the render generates (dev) without kustomize's hash suffix."""
    generated = set(by_kind(objs, "Secret"))
    out = set()
    for v in pod["spec"].get("volumes", []):
        names = [v["secret"]["secretName"]] if "secret" in v else []
        names += [s["secret"]["name"] for s in v.get("projected", {}).get("sources", []) if "secret" in s]
        out |= {re.sub(r"-[a-z0-9]{10}$", "", n) if n in generated else n for n in names}
    return out


def bus_port(objs):
    return int(parse_ini(ini_of(objs))["mailfleet"]["bus"].rsplit(":", 1)[1])


class TableTest(unittest.TestCase):
    """The table agrees with the code."""

    def test_names_are_those_of_topics_h(self):
        macros = topics_h()
        used = set()
        for p, e in ACCESS.items():
            names = set(e["reads"]) | set(e["writes"]) | set(e.get("loop", [])) | \
                {g for g in e["groups"] if g.startswith("GROUP_")}
            self.assertEqual(names - set(macros), set(), p)
            used |= names
        kafka = {m for m in macros if m.startswith("TOPIC_")} - local_only(macros)
        self.assertEqual(kafka - used, set(), "topics.h topics that no principal reads or writes")
        # every Kafka topic of topics.h is a KafkaTopic, and the other way round
        topics = {t["spec"]["topicName"] for t in by_kind(render("base")[1], "KafkaTopic").values()}
        for m in kafka:
            self.assertTrue(any(matches(macros[m], t) for t in topics), m)
        for t in topics:
            self.assertTrue(any(matches(macros[m], t) for m in kafka), t)
        for m in local_only(macros):
            self.assertFalse(any(matches(macros[m], t) for t in topics), "%s is local only" % m)

    def test_table_matches_each_principals_code(self):
        macros = topics_h()
        local = local_only(macros)
        for p, e in ACCESS.items():
            files = source_files(e)
            self.assertTrue(files, p)
            code = "\n".join(strip_comments(read(f)) for f in files)
            with self.subTest(principal=p):
                named = set(re.findall(r"\b((?:TOPIC|GROUP)_[A-Z_]+)\b", code)) - local
                want = set(e["reads"]) | set(e["writes"]) | {g for g in e["groups"] if g.startswith("GROUP_")}
                groupless = any(GROUPLESS_READ.search(line) and not any(m in line for m in local)
                                for line in code.splitlines())
                self.assertEqual("GROUP_BUS_READER" in e["groups"], groupless,
                                 "group-less reads (bus_scan, bus_read_at) need GROUP_BUS_READER")
                self.assertEqual(named, want - {"GROUP_BUS_READER"},
                                 "topics and groups named in %s" % [os.path.relpath(f, ROOT) for f in files])
                for g, v in e["groups"].items():
                    if not g.startswith("GROUP_"):
                        self.assertRegex(code, v[1], "where %s<...> is made" % g)
                txn = re.findall(r'common_transactional_id\s*\([^,]+,\s*"([a-z]+)"', code)
                self.assertEqual(txn, [p] if e["txn"] else [])
                for t in e.get("loop", []):
                    dlq = [w for w in e["writes"] if w.endswith("_DLQ")]
                    self.assertEqual(len(dlq), 1, "a worker loop dead-letters to one DLQ")
                    self.assertRegex(code, r"\.dlq_topic\s*=\s*%s\b" % dlq[0])
                if e.get("replays"):
                    self.assertIn('"mf.source.topic"', code, "dlq replay publishes to mf.source.topic")
        # the transactional ids the ACLs name: mailfleet-<worker>-<instance>
        cc = read(os.path.join(ROOT, "common", "runtime", "common_config.c"))
        self.assertEqual(sorted(set(re.findall(r'"(mailfleet-)%s-', cc))), ["mailfleet-"])
        # send's groups follow [send] group: the configs keep topics.h's
        for name in RENDERS:
            cfg = parse_ini(ini_of(render(name)[1]))
            self.assertEqual(cfg.get("send", "group", fallback=macros["GROUP_SEND"]), macros["GROUP_SEND"], name)

    def test_every_bus_user_is_in_the_table(self):
        """A file of workers/ that names a topic or group belongs to one
        principal: new bus code cannot escape the table."""
        macros = topics_h()
        owners = {}
        for p, e in ACCESS.items():
            for f in source_files(e):
                owners.setdefault(f, []).append(p)
        for f in sorted(glob.glob(os.path.join(ROOT, "workers", "**", "*.[ch]"), recursive=True)):
            names = set(re.findall(r"\b((?:TOPIC|GROUP)_[A-Z_]+)\b", strip_comments(read(f))))
            if names - local_only(macros):
                self.assertEqual(len(owners.get(f, [])), 1, os.path.relpath(f, ROOT))

    def test_no_worker_deletes_from_s3(self):
        """Nobody needs s3:DeleteObject: store_delete runs on ingest's local
        spool store and in the monitor's retention of file: stores only."""
        calls = []
        for f in glob.glob(os.path.join(ROOT, "workers", "**", "*.c"), recursive=True):
            for line in strip_comments(read(f)).splitlines():
                if re.search(r"\bstore_delete\s*\(", line):
                    calls.append((os.path.relpath(f, ROOT), line.strip()))
        self.assertEqual(sorted(c[0] for c in calls), ["workers/ingest/spool.c", "workers/monitor/monitor.c"])
        for f, line in calls:
            if f.endswith("spool.c"):
                self.assertIn("spool_store", line)
        mon = read(os.path.join(ROOT, "workers", "monitor", "monitor.c"))
        self.assertRegex(mon, r'strncmp\(uris\[i\], "file:", 5\) != 0\)\s*\n\s*continue;')
        for p, e in ACCESS.items():
            self.assertNotIn("DeleteObject", e["store"], p)


class KafkaUsersTest(unittest.TestCase):
    """prod's KafkaUsers allow exactly what the table says."""

    @classmethod
    def setUpClass(cls):
        cls.objs = render("overlays/prod")[1]
        cls.users = by_kind(cls.objs, "KafkaUser")
        cls.topics = sorted(t["spec"]["topicName"] for t in by_kind(cls.objs, "KafkaTopic").values())
        cls.macros = topics_h()

    def test_one_user_per_principal(self):
        self.assertEqual(sorted(self.users), sorted(["mailfleet-" + p for p in ACCESS] + ["mailfleet-keda"]))
        for name, u in self.users.items():
            self.assertEqual(u["spec"]["authentication"]["type"], "tls", name)
            self.assertEqual(u["spec"]["authorization"]["type"], "simple", name)
            for a in acl_rules(u):
                self.assertEqual(a.get("type", "allow"), "allow", name)
                self.assertNotIn("host", a, name)
                self.assertNotIn("All", a["operations"], name)
                self.assertNotIn("Create", a["operations"], "%s: topics come from topics.yaml only" % name)
                self.assertNotIn("*", a["resource"].get("name", ""), name)
                self.assertIn(a["resource"]["type"], ("topic", "group", "transactionalId", "cluster"), name)

    def test_acls_are_the_table(self):
        for p, e in ACCESS.items():
            u = self.users["mailfleet-" + p]
            with self.subTest(principal=p):
                # every topic it touches is allowed, nothing else is
                self.assertEqual(acl_topic_ops(u, self.topics), expected_topic_ops(p, self.macros, self.topics))
                groups = set()
                for g, v in e["groups"].items():
                    level = v if isinstance(v, str) else v[0]
                    name = self.macros.get(g, g)
                    groups.add((name, "prefix" if not g.startswith("GROUP_") else "literal",
                                frozenset(OPS_READ if level == "Read" else {"Describe"})))
                self.assertEqual(acl_resources(u, "group"), groups)
                want_txn = {("mailfleet-%s-" % p, "prefix", frozenset(OPS_WRITE))} if e["txn"] else set()
                self.assertEqual(acl_resources(u, "transactionalId"), want_txn)
                cluster = [a["operations"] for a in acl_rules(u) if a["resource"]["type"] == "cluster"]
                self.assertEqual(cluster, [["IdempotentWrite"]] if e["writes"] or e.get("replays") else [])
                # each ACL names something that exists
                for name, ptype, _ in acl_resources(u, "topic"):
                    self.assertTrue(any(t == name or (ptype == "prefix" and t.startswith(name)) for t in self.topics),
                                    name)

    def test_links_cannot_write_the_outbound_topic(self):
        ops = acl_topic_ops(self.users["mailfleet-links"], self.topics)
        self.assertNotIn("Write", ops.get("mailfleet.outbound", set()))
        self.assertEqual({t for t, o in ops.items() if "Write" in o}, {"mailfleet.events"})

    def test_keda_user_only_describes_what_it_scales_on(self):
        want_topics, want_groups = {}, set()
        for so in by_kind(self.objs, "ScaledObject").values():
            for t in so["spec"]["triggers"]:
                if t["type"] == "kafka":
                    want_topics[t["metadata"]["topic"]] = {"Describe"}
                    want_groups.add((t["metadata"]["consumerGroup"], "literal", frozenset({"Describe"})))
        u = self.users["mailfleet-keda"]
        self.assertEqual(acl_topic_ops(u, self.topics), want_topics)
        self.assertEqual(acl_resources(u, "group"), want_groups)
        self.assertEqual(acl_resources(u, "transactionalId") | acl_resources(u, "cluster"), set())


class KafkaCertificatesTest(unittest.TestCase):
    """Each prod pod presents the certificate of its own KafkaUser."""

    def test_each_pod_mounts_its_own_certificate(self):
        objs = render("overlays/prod")[1]
        users = by_kind(objs, "KafkaUser")
        cfg = parse_ini(ini_of(objs))
        self.assertEqual(cfg["kafka"]["security.protocol"], "ssl")
        kafka_dir = os.path.dirname(cfg["kafka"]["ssl.certificate.location"])
        ps = pods(objs)
        self.assertEqual(sorted(ps), sorted(ACCESS))
        for comp, pod in ps.items():
            with self.subTest(pod=comp):
                (c,) = pod["spec"]["containers"]
                (m,) = [m for m in c["volumeMounts"] if m["mountPath"] == kafka_dir]
                (v,) = [v for v in pod["spec"]["volumes"] if v["name"] == m["name"]]
                names = {s["secret"]["name"] for s in v["projected"]["sources"]}
                self.assertEqual(names, {"mailfleet-cluster-ca-cert", "mailfleet-" + comp})
                self.assertIn("mailfleet-" + comp, users)
                self.assertTrue(m["readOnly"])
        # KEDA presents its own
        (auth,) = by_kind(objs, "TriggerAuthentication").values()
        refs = {r["parameter"]: r["name"] for r in auth["spec"]["secretTargetRef"]}
        self.assertEqual((refs["cert"], refs["key"]), ("mailfleet-keda", "mailfleet-keda"))
        # the shared identity of old is gone
        self.assertNotIn("mailfleet", users)
        for comp, pod in ps.items():
            self.assertNotIn("mailfleet", secret_refs(pod, objs), comp)


class RetentionTest(unittest.TestCase):
    """Topic retention against what records point at and how long they matter."""

    def lifecycle_days(self):
        with open(LIFECYCLE) as f:
            return {r["Filter"]["Prefix"]: r["Expiration"]["Days"] for r in json.load(f)["Rules"]
                    if r["Status"] == "Enabled"}

    def test_dlq_records_outlive_no_object_they_point_at(self):
        """A DLQ record is replayable only while its objects exist; it may
        reach the DLQ as late as the retry tiers keep records after the
        objects were written, so retention + that <= the lifecycle's days."""
        days = self.lifecycle_days()
        for name in RENDERS:
            objs = render(name)[1]
            cfg = parse_ini(ini_of(objs))
            conf = {t["spec"]["topicName"]: t["spec"]["config"] for t in by_kind(objs, "KafkaTopic").values()}
            lag = max(int(c["retention.ms"]) for t, c in conf.items() if t.startswith("mailfleet.outbound.retry."))
            for dlq, stores in DLQ_OBJECTS.items():
                with self.subTest(render=name, topic=dlq):
                    self.assertEqual(conf[dlq]["cleanup.policy"], "delete")
                    keep = int(conf[dlq]["retention.ms"])
                    self.assertGreater(keep, 0)
                    for key in stores:
                        prefix = re.match(r"^s3://[^/]+/([^?]*)", cfg["mailfleet"][key]).group(1).rstrip("/") + "/"
                        self.assertIn(prefix, days, "no lifecycle rule for %s" % prefix)
                        self.assertLessEqual(keep + lag, days[prefix] * DAY_MS,
                                             "%s outlives %s (%d days)" % (dlq, prefix, days[prefix]))

    def test_alarms_keep_the_latest_state_of_each_alarm(self):
        mon = read(os.path.join(ROOT, "workers", "monitor", "monitor.c"))
        # keyed by AlarmName, and only written by the monitor
        self.assertRegex(mon, r"\.topic = TOPIC_ALARMS, \.key = p->name")
        for name in RENDERS:
            (t,) = [t for t in by_kind(render(name)[1], "KafkaTopic").values()
                    if t["spec"]["topicName"] == "mailfleet.alarms"]
            policy = t["spec"]["config"]["cleanup.policy"].split(",")
            self.assertIn("compact", policy, name)

    def test_revocations_outlive_the_longest_link_and_then_go(self):
        core = read(os.path.join(ROOT, "workers", "transform", "transform_core.c"))
        max_s = int(re.search(r"link_expiry_s > (\d+)\)", core).group(1))
        self.assertEqual(max_s, 7 * 86400)
        for name in RENDERS:
            (t,) = [t for t in by_kind(render(name)[1], "KafkaTopic").values()
                    if t["spec"]["topicName"] == "mailfleet.revocations"]
            c = t["spec"]["config"]
            with self.subTest(render=name):
                self.assertEqual(c["cleanup.policy"], "compact,delete")
                self.assertGreater(int(c["retention.ms"]), 0, "finite")
                self.assertGreaterEqual(int(c["retention.ms"]), max_s * 1000)
                self.assertLessEqual(int(c["retention.ms"]), max_s * 1000 + 2 * DAY_MS, "a bit above, not more")

    def test_readme_tells_to_turn_topic_auto_creation_off(self):
        text = read(README)
        self.assertTrue("auto.create.topics.enable: false" in text, "ops/README.md: the broker setting")


class NetworkPolicyTest(unittest.TestCase):

    def test_kafka_only_on_the_listener_the_config_uses(self):
        """prod reaches Kafka on TLS (9093) only; 9092 is dev's alone."""
        for name in RENDERS:
            objs = render(name)[1]
            pols = by_kind(objs, "NetworkPolicy").values()
            every = {port for p in pols for r in p["spec"].get("egress", []) + p["spec"].get("ingress", [])
                     for port in rule_ports(r)}
            with self.subTest(render=name):
                if name == "overlays/dev":
                    self.assertEqual(bus_port(objs), 9092)
                    self.assertIn(9092, every)
                else:
                    self.assertNotIn(9092, every, "plain Kafka")
                if name != "base":   # base is not deployed: each overlay replaces its config
                    for comp, pod in pods(objs).items():
                        allowed = {port for p in policies_of(objs, pod["metadata"]["labels"])
                                   for r in p["spec"].get("egress", []) for port in rule_ports(r)}
                        self.assertIn(bus_port(objs), allowed, comp)
        self.assertEqual(bus_port(render("overlays/prod")[1]), 9093)

    def test_every_pod_has_one_default_deny(self):
        for name in RENDERS:
            objs = render(name)[1]
            for comp, pod in pods(objs).items():
                deny = [p for p in policies_of(objs, pod["metadata"]["labels"])
                        if not p["spec"].get("ingress") and not p["spec"].get("egress")]
                self.assertEqual(len(deny), 1, "%s %s" % (name, comp))
                self.assertEqual(set(deny[0]["spec"]["policyTypes"]), {"Ingress", "Egress"})

    def test_smtp_relay_ports_only_for_send(self):
        for name in RENDERS:
            objs = render(name)[1]
            ps = pods(objs)
            for p in by_kind(objs, "NetworkPolicy").values():
                if not any(rule_ports(r) & SMTP_PORTS for r in p["spec"].get("egress", [])):
                    continue
                with self.subTest(render=name, policy=p["metadata"]["name"]):
                    chosen = {c for c, pod in ps.items() if selects(p["spec"]["podSelector"], pod["metadata"]["labels"])}
                    self.assertEqual(chosen, {"send"})

    def test_prod_egress_never_goes_to_any_address(self):
        """Every prod egress rule names its peers: a namespace or pods by
        label, or address blocks that are not the whole internet; the
        blocks are placeholders the overlay marks "SET THIS"."""
        objs = render("overlays/prod")[1]
        blocks = 0
        for p in by_kind(objs, "NetworkPolicy").values():
            for r in p["spec"].get("egress", []):
                with self.subTest(policy=p["metadata"]["name"], ports=sorted(map(str, rule_ports(r)))):
                    self.assertTrue(r.get("to"), "egress to any address")
                    for peer in r["to"]:
                        if "ipBlock" in peer:
                            net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                            self.assertGreater(net.prefixlen, 0)
                            blocks += 1
                        else:
                            self.assertTrue(peer.get("podSelector", {}).get("matchLabels") or
                                            peer.get("namespaceSelector", {}).get("matchLabels"), peer)
        marked = sum(read(f).count("# SET THIS") for f in glob.glob(os.path.join(K8S, "overlays", "prod", "*.yaml")))
        self.assertEqual(marked, blocks, "each address block of prod is a documented placeholder")

    def test_store_egress_only_for_the_store_users(self):
        """The pods that may reach the object store are those that hold S3
        credentials; prod's SES egress is send's alone."""
        for name in RENDERS:
            objs = render(name)[1]
            port = 9000 if name == "overlays/dev" else 443
            for comp, pod in pods(objs).items():
                pols = policies_of(objs, pod["metadata"]["labels"])
                reach = {pol["metadata"]["name"] for pol in pols for r in pol["spec"].get("egress", [])
                         if port in rule_ports(r)}
                users = {s for s in secret_refs(pod, objs) if s.startswith("mailfleet-s3")}
                with self.subTest(render=name, pod=comp):
                    want = {"mailfleet-store"} if users else set()
                    if name == "overlays/prod" and comp == "send":
                        want.add("mailfleet-send-ses")
                    self.assertEqual(reach, want)

    def test_public_http_only_from_the_ingress_controller(self):
        text = read(README)
        for name in RENDERS:
            objs = render(name)[1]
            ps = pods(objs)
            seen = set()
            for comp in ("links", "feedback"):
                for p in policies_of(objs, ps[comp]["metadata"]["labels"]):
                    for r in p["spec"].get("ingress", []):
                        if "http" not in rule_ports(r):
                            continue
                        with self.subTest(render=name, pod=comp, policy=p["metadata"]["name"]):
                            self.assertTrue(r.get("from"), "HTTP from anywhere")
                            for peer in r["from"]:
                                self.assertEqual(set(peer), {"namespaceSelector"}, peer)
                                self.assertEqual(set(peer["namespaceSelector"]), {"matchLabels"})
                                (ns,) = peer["namespaceSelector"]["matchLabels"].items()
                                self.assertEqual(ns[0], "kubernetes.io/metadata.name")
                                seen.add(ns[1])
            self.assertEqual(len(seen), 1, "%s: one ingress controller namespace: %s" % (name, seen))
            ns = seen.pop()
            self.assertTrue("`%s`" % ns in text, "ops/README.md names %s, the namespace to change" % ns)


class S3CredentialsTest(unittest.TestCase):

    def test_each_worker_mounts_only_its_own_s3_secret(self):
        for name in RENDERS:
            objs = render(name)[1]
            for comp, pod in pods(objs).items():
                with self.subTest(render=name, pod=comp):
                    mine = {s for s in secret_refs(pod, objs) if s.startswith("mailfleet-s3")}
                    self.assertEqual(mine, {"mailfleet-s3-" + comp} if ACCESS[comp]["store"] else set())
                    if mine:
                        (c,) = pod["spec"]["containers"]
                        env = {e["name"]: e.get("value") for e in c.get("env", [])}
                        (vol,) = [v["name"] for v in pod["spec"]["volumes"]
                                  if v.get("secret", {}).get("secretName", "").startswith("mailfleet-s3")]
                        (mount,) = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == vol]
                        for k in ("MAILFLEET__S3__ACCESS_KEY_FILE", "MAILFLEET__S3__SECRET_KEY_FILE"):
                            self.assertTrue(env[k].startswith(mount + "/"), k)
            if name == "overlays/dev":   # dev generates each of them
                secrets = {re.sub(r"-[a-z0-9]{10}$", "", n) for n in by_kind(objs, "Secret")}
                self.assertEqual({s for s in secrets if s.startswith("mailfleet-s3")},
                                 {"mailfleet-s3-" + p for p, e in ACCESS.items() if e["store"]})

    def test_readme_lists_each_workers_iam_actions(self):
        """ops/README.md's IAM table says the same as the table here."""
        rows = {}
        header = None
        for line in read(README).splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
            if cells and "`s3:GetObject`" in cells:
                header = cells
                continue
            if header and cells and not set(line) <= set("|- "):
                m = re.search(r"`mailfleet-s3-([a-z]+)`", cells[0])
                if m:
                    rows[m.group(1)] = {h.strip("`").split(":")[1]: set(re.findall(r"`([a-z]+/[a-z/]*\*)`", c))
                                        for h, c in zip(header[1:], cells[1:]) if h.startswith("`s3:")}
            elif header and not cells:
                header = None
        self.assertEqual(sorted(rows), sorted(p for p, e in ACCESS.items() if e["store"]))
        for p, acts in rows.items():
            got = {a: v for a, v in acts.items() if v and a != "ListBucket"}
            self.assertEqual(got, {a: set(v) for a, v in ACCESS[p]["store"].items()}, p)
            # ListBucket (for 404s) on exactly what it reads
            self.assertEqual(acts.get("ListBucket", set()), set(ACCESS[p]["store"].get("GetObject", [])), p)


if __name__ == "__main__":
    unittest.main()
