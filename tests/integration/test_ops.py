"""ops/ checked offline: the kustomize overlays render and validate against the
Kubernetes, KEDA and Strimzi schemas; the manifests agree with each other and
with the config; yamllint; promtool check/test on the alert rules; the Grafana
dashboard; the metric names the rules and the dashboard use are really
exported by a running fleet; the ConfigMap's keys pass `mailfleet config
check`; the S3 lifecycle rule; the Dockerfile's runtime packages cover every
library the binary links."""
import configparser
import glob
import json
import os
import re
import shutil
import subprocess
import time
import unittest
import urllib.request

import yaml

import harness

OPS = os.path.join(harness.ROOT, "ops")
K8S = os.path.join(OPS, "k8s")
PROM = os.path.join(OPS, "prometheus")
DASHBOARD = os.path.join(OPS, "grafana", "mailfleet.json")
TOOLS_SRC = os.path.join(harness.ROOT, "tests", "tools")
KUBECTL = os.environ.get("KUBECTL", "kubectl")
# kustomize v3.1+ (the manifests use `patches`): the one ops/deps.sh built when
# kubectl's own is older (Debian 12's kubectl 1.20), else kubectl's.
_KUSTOMIZE_BIN = os.path.join(harness.ROOT, "var", "tools", "bin", "kustomize")
KUSTOMIZE = [_KUSTOMIZE_BIN, "build"] if os.access(_KUSTOMIZE_BIN, os.X_OK) else [KUBECTL, "kustomize"]

WORKERS = ["ingest", "transform", "send", "feedback", "monitor", "links"]
METRICS_PORT = {"ingest": 9101, "transform": 9102, "send": 9103, "feedback": 9104, "monitor": 9105,
                "links": 9106}
TOPICS = ["mailfleet.inbound", "mailfleet.inbound.dlq", "mailfleet.outbound",
          "mailfleet.outbound.retry.1m", "mailfleet.outbound.retry.5m", "mailfleet.outbound.retry.30m",
          "mailfleet.outbound.retry.2h", "mailfleet.outbound.dlq", "mailfleet.fallback", "mailfleet.events",
          "mailfleet.feedback", "mailfleet.suppression", "mailfleet.revocations", "mailfleet.alarms"]
# cleanup.policy of each topic that is not plain delete (ops/k8s/base/topics.yaml)
CLEANUP = {"mailfleet.suppression": "compact", "mailfleet.revocations": "compact,delete",
           "mailfleet.alarms": "compact"}
COMPACTED = set(CLEANUP)
GROUPS = {"transform", "send", "feedback", "links", "monitor"}
# Series Prometheus itself adds to every target, and the kubelet's volume
# stats (MailfleetSpoolVolumeFilling): not exported by a worker.
PROMETHEUS_OWN = {"up", "kubelet_volume_stats_available_bytes", "kubelet_volume_stats_capacity_bytes"}

_renders = {}


def render(name):
    """kubectl kustomize of ops/k8s/<name> (cached): (path of the YAML, objects)."""
    if name not in _renders:
        if name == "overlays/dev":   # its secrets are made at deploy time, never committed
            subprocess.run([os.path.join(K8S, name, "make-secrets.sh")], check=True, capture_output=True,
                           timeout=60)
        r = subprocess.run(KUSTOMIZE + [os.path.join(K8S, name)], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError("kubectl kustomize %s failed:\n%s" % (name, r.stderr))
        outdir = os.path.join(harness.ROOT, "build", "test-ops")
        os.makedirs(outdir, exist_ok=True)
        path = os.path.join(outdir, name.replace("/", "-") + ".yaml")
        with open(path, "w") as f:
            f.write(r.stdout)
        _renders[name] = (path, [d for d in yaml.safe_load_all(r.stdout) if d])
    return _renders[name]


RENDERS = ["base", "overlays/dev", "overlays/prod"]


def by_kind(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def workloads(objs):
    out = {}
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet"):
            out[o["metadata"]["labels"]["app.kubernetes.io/component"]] = o
    return out


def ini_of(objs):
    """The mailfleet.ini of the rendered ConfigMap mailfleet-config-<hash>."""
    cms = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("mailfleet-config")]
    assert len(cms) == 1, "expected one mailfleet-config ConfigMap, got %d" % len(cms)
    return cms[0]["data"]["mailfleet.ini"]


def parse_ini(text):
    cp = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",),
                                   comment_prefixes=("#", ";"), inline_comment_prefixes=None)
    cp.optionxform = str
    cp.read_string(text)
    return cp


def override_env(w):
    """{(section, key): value} of the MAILFLEET__SECTION__KEY variables of a
    workload's container (the config loader lower-cases both)."""
    out = {}
    for e in w["spec"]["template"]["spec"]["containers"][0].get("env", []):
        m = re.match(r"^MAILFLEET__([A-Z0-9_]+?)__([A-Z0-9_]+)$", e["name"])
        if m:
            out[(m.group(1).lower(), m.group(2).lower())] = e["value"]
    return out


def selector_matches(sel, labels):
    return all(labels.get(k) == v for k, v in (sel or {}).get("matchLabels", {}).items())


# --- PromQL: the metric names an expression selects -------------------------

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                   "unless", "offset", "inf", "nan", "atan2"}


def promql_metric_names(expr):
    """Metric names selected by a PromQL expression: identifiers outside
    strings, label matchers and ranges that are not functions, aggregations,
    keywords or the label lists of by/without/on/ignoring/group_*."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        word = m.group(0)
        start = m.start()
        if start > 0 and (s[start - 1].isdigit() or s[start - 1] == "."):
            continue  # the unit of a duration or a number's exponent
        rest = s[m.end():].lstrip()
        if rest.startswith("("):
            continue  # function or aggregation
        if word.lower() in PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def rules_exprs():
    with open(os.path.join(PROM, "mailfleet.rules.yml")) as f:
        doc = yaml.safe_load(f)
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict) and "query" in q:
            m = re.match(r"label_values\((.*),\s*\w+\)$", q["query"])
            out.append(("variable " + v["name"], m.group(1) if m else q["query"]))
    return out


def parse_exposition(text):
    """(sample names, {family: type}) of a Prometheus text exposition."""
    samples, types = set(), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            types[name] = typ.strip()
        elif line and not line.startswith("#"):
            samples.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return samples, types


def missing_names(referenced, samples, types):
    missing = set()
    for name in referenced:
        if name in PROMETHEUS_OWN or name in samples:
            continue
        if name in types and types[name] in ("counter", "gauge", "untyped"):
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base != name and types.get(base) in ("histogram", "summary") and \
                not (name.endswith("_bucket") and types[base] == "summary"):
            continue
        missing.add(name)
    return missing


class PromqlParseTest(unittest.TestCase):
    """The extractor the metric-name check relies on."""

    def test_extracts_only_metric_names(self):
        e = ('histogram_quantile(0.99, sum by (le) (rate(mailfleet_a_seconds_bucket{ns=~"$x", q="up"}[5m]))) '
             '> 1e3 and on (pod) deriv(mailfleet_b[10m]) > 0 or up{job="m"} == 0 unless max without (x) (c_d)')
        self.assertEqual(promql_metric_names(e), {"mailfleet_a_seconds_bucket", "mailfleet_b", "up", "c_d"})

    def test_histogram_suffixes(self):
        samples = {"mailfleet_lat_seconds_bucket", "mailfleet_lat_seconds_sum", "mailfleet_lat_seconds_count",
                   "mailfleet_x_total"}
        types = {"mailfleet_lat_seconds": "histogram", "mailfleet_x_total": "counter", "mailfleet_g": "gauge"}
        self.assertEqual(missing_names({"mailfleet_lat_seconds_bucket", "mailfleet_x_total", "mailfleet_g", "up"},
                                       samples, types), set())
        self.assertEqual(missing_names({"mailfleet_lat_seconds", "mailfleet_x", "mailfleet_nope_total"},
                                       samples, types),
                         {"mailfleet_lat_seconds", "mailfleet_x", "mailfleet_nope_total"})


class KustomizeTest(unittest.TestCase):
    def test_overlays_render_every_part(self):
        for name in RENDERS:
            _, objs = render(name)
            with self.subTest(render=name):
                self.assertEqual(sorted(workloads(objs)), sorted(WORKERS))
                self.assertEqual(workloads(objs)["ingest"]["kind"], "StatefulSet")
                self.assertEqual(sorted(t["spec"]["topicName"] for t in by_kind(objs, "KafkaTopic").values()),
                                 sorted(TOPICS))
                self.assertEqual(sorted(by_kind(objs, "PodDisruptionBudget")),
                                 sorted("mailfleet-" + w for w in WORKERS))
                self.assertTrue(by_kind(objs, "NetworkPolicy"))
                self.assertTrue(by_kind(objs, "ScaledObject"))
                svcs = by_kind(objs, "Service")
                self.assertEqual(sorted(p["port"] for p in svcs["mailfleet-smtp"]["spec"]["ports"]), [25, 465, 587])
                self.assertIn("mailfleet-links", svcs)
                self.assertIn("mailfleet-feedback", svcs)
        for name, ns in (("overlays/dev", "mailfleet-dev"), ("overlays/prod", "mailfleet")):
            _, objs = render(name)
            # every object in the overlay's namespace, and that Namespace made
            self.assertEqual({o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}, {ns}, name)
            self.assertEqual(sorted(by_kind(objs, "Namespace")), [ns], name)
            for w in workloads(objs).values():
                image = w["spec"]["template"]["spec"]["containers"][0]["image"]
                self.assertRegex(image, r"^([^:/]+/)*mailfleet:[\w.-]+$", name)

    def test_dev_is_one_replica_each_and_prod_three_ingest(self):
        _, dev = render("overlays/dev")
        self.assertEqual(workloads(dev)["ingest"]["spec"]["replicas"], 1)
        self.assertEqual(workloads(dev)["monitor"]["spec"]["replicas"], 1)
        for so in by_kind(dev, "ScaledObject").values():
            self.assertEqual((so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]), (1, 1))
        for t in by_kind(dev, "KafkaTopic").values():
            self.assertEqual(t["spec"]["replicas"], 1)
        _, prod = render("overlays/prod")
        self.assertEqual(workloads(prod)["ingest"]["spec"]["replicas"], 3)
        self.assertEqual(workloads(prod)["monitor"]["spec"]["replicas"], 1)

    def test_objects_validate_against_schemas(self):
        import jsonschema
        paths = [render(n)[0] for n in RENDERS]
        r = subprocess.run(["node", os.path.join(TOOLS_SRC, "k8s_validate.mjs")] + paths, capture_output=True,
                           text=True, timeout=300, cwd=os.path.join(harness.ROOT, "tests"))
        results = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        invalid = [x for x in results if x["status"] == "invalid"]
        self.assertEqual(invalid, [], r.stderr)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(results), sum(len(render(n)[1]) for n in RENDERS))
        # Everything without a model is a Strimzi resource, checked with our schema.
        unknown = [x for x in results if x["status"] == "unknown"]
        self.assertEqual({x["apiVersion"] for x in unknown}, {"kafka.strimzi.io/v1beta2"})
        with open(os.path.join(TOOLS_SRC, "strimzi.schema.json")) as f:
            schema = json.load(f)
        jsonschema.Draft202012Validator.check_schema(schema)
        v = jsonschema.Draft202012Validator(schema)
        n = 0
        for name in RENDERS:
            for o in render(name)[1]:
                if o["apiVersion"].startswith("kafka.strimzi.io/"):
                    errs = [e.message for e in v.iter_errors(o)]
                    self.assertEqual(errs, [], "%s %s" % (name, o["metadata"]["name"]))
                    n += 1
        self.assertEqual(n, len(unknown))
        kinds = {(x["kind"], x["status"]) for x in results}
        for k in ("Deployment", "StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy",
                  "ScaledObject", "TriggerAuthentication", "Secret", "Ingress", "Certificate"):
            self.assertIn((k, "valid"), kinds)

    def test_validator_rejects_a_broken_object(self):
        path = os.path.join(harness.ROOT, "build", "test-ops", "broken.yaml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: {}\n"
                    "  template:\n    spec:\n      containers:\n        - name: c\n          ports:\n"
                    "            - containerPort: metrics\n---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\n"
                    "metadata: {name: y}\nspec: {maxReplicaCount: 3}\n")
        r = subprocess.run(["node", os.path.join(TOOLS_SRC, "k8s_validate.mjs"), path], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        self.assertEqual([x["status"] for x in lines], ["invalid", "invalid"])
        self.assertIn("containerPort", lines[0]["error"])
        self.assertIn("scaleTargetRef", lines[1]["error"])

    def test_yamllint_clean(self):
        r = subprocess.run(["yamllint", "-s", "-c", os.path.join(OPS, ".yamllint"), "-f", "parsable",
                            OPS], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # and on what kustomize renders
        r = subprocess.run(["yamllint", "-s", "-d", "{extends: relaxed, rules: {line-length: disable}}"] +
                           [render(n)[0] for n in RENDERS], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


class ManifestTest(unittest.TestCase):
    """The manifests agree with each other and with the config they mount."""

    def test_workloads_probes_drain_security_resources(self):
        for name in RENDERS:
            _, objs = render(name)
            cfg = parse_ini(ini_of(objs))
            for comp, w in workloads(objs).items():
                with self.subTest(render=name, worker=comp):
                    pod = w["spec"]["template"]["spec"]
                    self.assertEqual(w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"], comp)
                    self.assertTrue(selector_matches(w["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]))
                    (c,) = pod["containers"]
                    self.assertEqual(c["args"], [comp, "-c", "/etc/mailfleet/mailfleet.ini"])
                    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
                    self.assertEqual(ports["metrics"], METRICS_PORT[comp])
                    # the port the pod exposes is the one the worker listens on
                    self.assertEqual(cfg[comp]["metrics_listen"], "0.0.0.0:%d" % METRICS_PORT[comp])
                    for key, pname in (("listen", "smtp"), ("listen_tls", "smtps"),
                                       ("listen_submission", "submission"), ("public_listen", "http")):
                        if cfg.has_option(comp, key):
                            self.assertEqual(int(cfg[comp][key].rsplit(":", 1)[1]), ports[pname])
                    self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "metrics"})
                    self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "metrics"})
                    self.assertEqual(c["startupProbe"]["httpGet"], {"path": "/healthz", "port": "metrics"})
                    pre = c["lifecycle"]["preStop"]["exec"]["command"]
                    self.assertEqual(pre[0], "/bin/sleep")
                    if comp == "ingest":   # a cloud load balancer's deregistration (~30 s) first
                        self.assertGreaterEqual(int(pre[1]), 30)
                    # grace covers the pause before SIGTERM, the worker's drain
                    # (ingest: drain_timeout) and at least 10 s to flush and close
                    drain = 15  # a consumer: finish the batch, commit, leave the group
                    if cfg.has_option(comp, "drain_timeout"):
                        drain = int(re.match(r"^(\d+)s$", cfg[comp]["drain_timeout"]).group(1))
                    self.assertGreaterEqual(pod["terminationGracePeriodSeconds"], int(pre[1]) + drain + 10)
                    sc = c["securityContext"]
                    self.assertIs(sc["readOnlyRootFilesystem"], True)
                    self.assertIs(sc["allowPrivilegeEscalation"], False)
                    self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
                    self.assertIs(pod["securityContext"]["runAsNonRoot"], True)
                    self.assertGreater(pod["securityContext"]["runAsUser"], 0)
                    self.assertIs(pod["automountServiceAccountToken"], False)
                    for k in ("cpu", "memory"):
                        self.assertIn(k, c["resources"]["requests"])
                        self.assertIn(k, c["resources"]["limits"])
                    env = {e["name"]: e.get("value") for e in c.get("env", [])}
                    self.assertEqual(env.get("MAILFLEET_HEALTH_PORT"), str(METRICS_PORT[comp]))

    def test_cluster_objects(self):
        """Each worker runs as a ServiceAccount of its own with no API token;
        every container that writes to emptyDir volumes requests that much
        ephemeral storage; the overlays make their namespace, with the
        "restricted" Pod Security Standard enforced."""
        def mib(q):
            m = re.match(r"^(\d+)(Mi|Gi)$", q)
            self.assertIsNotNone(m, q)
            return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)
        for name in RENDERS:
            _, objs = render(name)
            accounts = by_kind(objs, "ServiceAccount")
            for comp, w in workloads(objs).items():
                with self.subTest(render=name, worker=comp):
                    pod = w["spec"]["template"]["spec"]
                    sa = pod["serviceAccountName"]
                    self.assertEqual(sa, "mailfleet-" + comp)
                    self.assertIs(accounts[sa].get("automountServiceAccountToken"), False)
                    empty = sum(mib(v["emptyDir"].get("sizeLimit", "0Mi")) for v in pod["volumes"] if "emptyDir" in v)
                    (c,) = pod["containers"]
                    if empty:
                        self.assertGreaterEqual(mib(c["resources"]["requests"]["ephemeral-storage"]), empty)
            if name != "base":
                ns = {o["metadata"]["namespace"] for o in objs if o["kind"] != "Namespace"
                      and "namespace" in o.get("metadata", {})}
                (nsobj,) = by_kind(objs, "Namespace").values()
                self.assertEqual(ns, {nsobj["metadata"]["name"]})
                self.assertEqual(nsobj["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted")

    def test_tls_secrets_are_renewed_and_reach_ingest_without_a_restart(self):
        """prod: a cert-manager Certificate keeps each TLS Secret the pods and
        the Ingress use; ingest mounts its Secret as a directory (a subPath
        or items mount never sees an update) and watches the files."""
        _, objs = render("overlays/prod")
        certs = {c["spec"]["secretName"]: c for c in by_kind(objs, "Certificate").values()}
        cfg = parse_ini(ini_of(objs))
        ing = workloads(objs)["ingest"]
        pod = ing["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        tls_dir = os.path.dirname(env["MAILFLEET__INGEST__TLS_CERT"])
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == tls_dir]
        self.assertNotIn("subPath", mount)
        (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        self.assertNotIn("items", vol["secret"])
        self.assertIn(vol["secret"]["secretName"], certs)
        self.assertEqual(os.path.basename(env["MAILFLEET__INGEST__TLS_CERT"]), "tls.crt")   # cert-manager's keys
        self.assertEqual(os.path.basename(env["MAILFLEET__INGEST__TLS_KEY"]), "tls.key")
        self.assertNotIn(cfg["ingest"].get("tls_watch", "30s"), ("0", "0s"))
        self.assertIn(cfg["ingest"]["hostname"], certs[vol["secret"]["secretName"]]["spec"]["dnsNames"])
        for ingress in by_kind(objs, "Ingress").values():
            for t in ingress["spec"]["tls"]:
                self.assertIn(t["secretName"], certs)
                self.assertEqual(set(t["hosts"]), set(certs[t["secretName"]]["spec"]["dnsNames"]))

    def test_smtp_ports_reach_their_listeners(self):
        """25 reaches the relay listener, 465 the implicit-TLS one and 587 a
        listener where MAIL needs AUTH (not the relay port: "587 requires
        AUTH" must hold), and the NetworkPolicy lets each of them in."""
        want = {25: ("smtp", "listen"), 465: ("smtps", "listen_tls"), 587: ("submission", "listen_submission")}
        for name in RENDERS:
            _, objs = render(name)
            cfg = parse_ini(ini_of(objs))
            (c,) = workloads(objs)["ingest"]["spec"]["template"]["spec"]["containers"]
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            svc = by_kind(objs, "Service")["mailfleet-smtp"]
            with self.subTest(render=name):
                got = {p["port"]: p["targetPort"] for p in svc["spec"]["ports"]}
                self.assertEqual(sorted(got), sorted(want))
                for port, (pname, key) in want.items():
                    self.assertEqual(got[port], pname)
                    self.assertEqual(int(cfg["ingest"][key].rsplit(":", 1)[1]), ports[pname])
                auth_on = cfg["ingest"].get("require_auth_on", "submission")
                self.assertIn("submission", [x.strip() for x in auth_on.split(",")])
                pol = by_kind(objs, "NetworkPolicy")["mailfleet-ingest-smtp"]
                allowed = {p["port"] for rule in pol["spec"]["ingress"] for p in rule["ports"]}
                self.assertEqual(allowed, {"smtp", "smtps", "submission"})

    def test_ingest_buffers_fit_its_memory_limit(self):
        """Ingest refuses a max_buffered above half its container's memory
        limit (and takes half when unset): a config that sets one must stay
        under that half, or the pod never starts."""
        units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        kube = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
        for name in RENDERS:
            _, objs = render(name)
            cfg = parse_ini(ini_of(objs))
            w = workloads(objs)["ingest"]
            (c,) = w["spec"]["template"]["spec"]["containers"]
            m = re.match(r"^(\d+)(Ki|Mi|Gi)$", c["resources"]["limits"]["memory"])
            self.assertIsNotNone(m, c["resources"]["limits"]["memory"])
            limit = int(m.group(1)) * kube[m.group(2)]
            given = override_env(w).get(("ingest", "max_buffered"))
            if given is None and cfg.has_option("ingest", "max_buffered"):
                given = cfg["ingest"]["max_buffered"]
            with self.subTest(render=name, limit=limit, max_buffered=given):
                if given is not None:
                    g = re.match(r"^(\d+)([KMG]?)$", given.strip())
                    self.assertIsNotNone(g, given)
                    self.assertLessEqual(int(g.group(1)) * units[g.group(2)], limit // 2)

    def test_config_files_and_secrets_are_mounted(self):
        """Every worker loads the whole config and reads each *_file key at
        load: every *_file of the ConfigMap and of the pod's MAILFLEET__ env
        lies on a Secret mounted read-only in that pod; other absolute paths
        of its own sections lie on one of its mounts."""
        shared = ("mailfleet", "kafka")
        for name in RENDERS:
            _, objs = render(name)
            cfg = parse_ini(ini_of(objs))
            cms = [o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"]
            for comp, w in workloads(objs).items():
                pod = w["spec"]["template"]["spec"]
                c = pod["containers"][0]
                vols = {v["name"]: v for v in pod["volumes"]}
                if w["kind"] == "StatefulSet":
                    for t in w["spec"]["volumeClaimTemplates"]:
                        vols[t["metadata"]["name"]] = {"pvc": t}
                mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
                self.assertIn(vols["config"]["configMap"]["name"], cms)
                for m in mounts.values():
                    self.assertIn(m["name"], vols, "%s: mount of a missing volume" % comp)
                    if "secret" in vols[m["name"]] or "projected" in vols[m["name"]]:
                        self.assertTrue(m.get("readOnly"), "%s: secret %s not read-only" % (comp, m["name"]))
                self.assertIn("/var/lib/mailfleet", mounts)
                if comp == "ingest":
                    self.assertIn("pvc", vols[mounts["/var/lib/mailfleet"]["name"]], "ingest spool on a PVC")
                effective = {(s, k): v for s in cfg.sections() for k, v in cfg[s].items()}
                env = override_env(w)
                effective.update(env)
                for (s, k), v in sorted(effective.items()):
                    own = s in shared or s == comp or (comp == "ingest" and s.startswith("rule."))
                    if not v.startswith("/") or not (own or k.endswith("_file")):
                        continue
                    under = [p for p in mounts if v == p or v.startswith(p.rstrip("/") + "/")]
                    with self.subTest(render=name, worker=comp, key="[%s] %s" % (s, k)):
                        self.assertTrue(under, "%s = %s is on no mount of %s" % (k, v, comp))
                        vol = vols[mounts[under[0]]["name"]]
                        if k.endswith("_file") or v.startswith("/etc/mailfleet/secrets/") or \
                                v.startswith("/etc/mailfleet/tls/") or v.startswith("/etc/mailfleet/kafka/"):
                            self.assertTrue("secret" in vol or "projected" in vol, "%s must come from a Secret" % v)
                            if "secret" in vol:
                                self.assertFalse(vol["secret"].get("optional"), "%s: a file read at load" % v)
                # no secret file in the shared config: it would have to be on every pod
                self.assertEqual([k for s in cfg.sections() for k in cfg[s] if k.endswith("_file")], [], name)
                # every Secret the pod mounts is named by a key (or is optional)
                used = {vols[mounts[p]["name"]].get("secret", {}).get("secretName") for p in mounts
                        if any(v == p or v.startswith(p.rstrip("/") + "/") for v in effective.values())}
                for v in vols.values():
                    sec = v.get("secret")
                    if sec and not sec.get("optional"):
                        self.assertIn(sec["secretName"], used, "%s mounts %s but no key uses it" % (comp, sec["secretName"]))

    def test_ingress_routes_the_public_urls(self):
        """prod's Ingress serves [mailfleet] public_base_url: /a/ reaches the
        links pods, /u/ feedback, through Services and ports that exist."""
        _, objs = render("overlays/prod")
        (ing,) = by_kind(objs, "Ingress").values()
        cfg = parse_ini(ini_of(objs))
        host = re.match(r"^https://([^/:]+)", cfg["mailfleet"]["public_base_url"]).group(1)
        (rule,) = ing["spec"]["rules"]
        self.assertEqual(rule["host"], host)
        self.assertIn(host, ing["spec"]["tls"][0]["hosts"])
        svcs = by_kind(objs, "Service")
        wl = workloads(objs)
        routes = {}
        for path in rule["http"]["paths"]:
            b = path["backend"]["service"]
            svc = svcs[b["name"]]
            (port,) = [p for p in svc["spec"]["ports"] if p["name"] == b["port"]["name"]]
            comp = svc["spec"]["selector"]["app.kubernetes.io/component"]
            pod_ports = {p["name"] for p in wl[comp]["spec"]["template"]["spec"]["containers"][0]["ports"]}
            self.assertIn(port["targetPort"], pod_ports)
            routes[path["path"]] = comp
        self.assertEqual(routes["/a/"], "links")
        self.assertEqual(routes["/u/"], "feedback")
        # the suppression API is an admin API: never on the public Ingress,
        # only on a ClusterIP Service of its own
        self.assertEqual([p for p in routes if p.startswith("/v2")], [])
        admin = svcs["mailfleet-feedback-admin"]["spec"]
        self.assertEqual(admin.get("type", "ClusterIP"), "ClusterIP")
        self.assertEqual(admin["selector"]["app.kubernetes.io/component"], "feedback")
        self.assertEqual([p["targetPort"] for p in admin["ports"]], ["http"])

    def test_keda_scales_on_real_groups_up_to_partitions(self):
        for name in RENDERS:
            _, objs = render(name)
            topics = {t["spec"]["topicName"]: t for t in by_kind(objs, "KafkaTopic").values()}
            deps = by_kind(objs, "Deployment")
            auths = by_kind(objs, "TriggerAuthentication")
            cfg = parse_ini(ini_of(objs))
            bootstrap = cfg["mailfleet"]["bus"].split(":", 1)[1]
            kafka_triggers = 0
            for so in by_kind(objs, "ScaledObject").values():
                with self.subTest(render=name, scaledobject=so["metadata"]["name"]):
                    self.assertIn(so["spec"]["scaleTargetRef"]["name"], deps)
                    for t in so["spec"]["triggers"]:
                        if t["type"] != "kafka":
                            continue
                        kafka_triggers += 1
                        md = t["metadata"]
                        self.assertIn(md["consumerGroup"], GROUPS)
                        worker = so["spec"]["scaleTargetRef"]["name"].replace("mailfleet-", "")
                        # the group the worker really consumes with
                        if cfg.has_option(worker, "group"):
                            self.assertEqual(md["consumerGroup"], cfg[worker]["group"])
                        else:
                            self.assertEqual(md["consumerGroup"], worker)
                        self.assertIn(md["topic"], topics)
                        # the scaler reaches Kafka the way the workers do
                        self.assertEqual(md["bootstrapServers"], bootstrap)
                        if "authenticationRef" in t:
                            self.assertIn(t["authenticationRef"]["name"], auths)
                        if cfg.has_option("kafka", "security.protocol"):
                            self.assertEqual(md.get("tls"), "enable")
                            self.assertIn("authenticationRef", t)
                        self.assertLessEqual(so["spec"]["maxReplicaCount"], topics[md["topic"]]["spec"]["partitions"])
                        if name != "overlays/dev":
                            self.assertEqual(so["spec"]["maxReplicaCount"], topics[md["topic"]]["spec"]["partitions"])
            self.assertEqual(kafka_triggers, 3, name)
            # the workers that must not be autoscaled
            targets = {so["spec"]["scaleTargetRef"]["name"] for so in by_kind(objs, "ScaledObject").values()}
            self.assertNotIn("mailfleet-monitor", targets)
            self.assertNotIn("mailfleet-ingest", targets)

    def test_topics_replication_and_retention(self):
        for name in ("base", "overlays/prod"):
            _, objs = render(name)
            for t in by_kind(objs, "KafkaTopic").values():
                spec = t["spec"]
                with self.subTest(render=name, topic=spec["topicName"]):
                    self.assertEqual(spec["replicas"], 3)
                    self.assertEqual(spec["config"]["min.insync.replicas"], 2)
                    self.assertGreaterEqual(spec["partitions"], 1)
                    policy = CLEANUP.get(spec["topicName"], "delete")
                    self.assertEqual(spec["config"]["cleanup.policy"], policy)
                    if "delete" in policy.split(","):
                        self.assertGreater(spec["config"]["retention.ms"], 86400000)
        _, dev = render("overlays/dev")
        for t in by_kind(dev, "KafkaTopic").values():
            self.assertLessEqual(t["spec"]["config"]["min.insync.replicas"], t["spec"]["replicas"])
            want = CLEANUP.get(t["spec"]["topicName"], "delete")
            self.assertEqual(t["spec"]["config"]["cleanup.policy"], want)

    def test_pdbs_and_network_policies_select_the_pods(self):
        for name in RENDERS:
            _, objs = render(name)
            pdbs = by_kind(objs, "PodDisruptionBudget").values()
            pols = list(by_kind(objs, "NetworkPolicy").values())
            for comp, w in workloads(objs).items():
                labels = w["spec"]["template"]["metadata"]["labels"]
                ports = {p["name"] for p in w["spec"]["template"]["spec"]["containers"][0]["ports"]}
                with self.subTest(render=name, worker=comp):
                    self.assertEqual(sum(selector_matches(p["spec"]["selector"], labels) for p in pdbs), 1)
                    mine = [p for p in pols if selector_matches(p["spec"]["podSelector"], labels)]
                    deny = [p for p in mine if not p["spec"].get("ingress") and not p["spec"].get("egress")]
                    self.assertEqual(len(deny), 1, "one default-deny policy covers every pod")
                    self.assertEqual(set(deny[0]["spec"]["policyTypes"]), {"Ingress", "Egress"})
                    # named ports in policies exist on the pods they select
                    for p in mine:
                        for rule in p["spec"].get("ingress", []):
                            for port in rule.get("ports", []):
                                if isinstance(port["port"], str):
                                    self.assertIn(port["port"], ports, p["metadata"]["name"])
                    ingress_ports = {port["port"] for p in mine for r in p["spec"].get("ingress", [])
                                     for port in r.get("ports", [])}
                    self.assertIn("metrics", ingress_ports)
                    if comp == "ingest":
                        self.assertTrue({"smtp", "smtps"} <= ingress_ports)
                    if comp in ("links", "feedback"):
                        self.assertIn("http", ingress_ports)
                    if comp == "monitor":
                        self.assertEqual(ingress_ports, {"metrics"})
                        egress_ports = {port["port"] for p in mine for r in p["spec"].get("egress", [])
                                        for port in r.get("ports", [])}
                        # DNS and Kafka (prod: TLS 9093 only; dev adds plain 9092)
                        self.assertTrue({53} < egress_ports <= {53, 9092, 9093},
                                        "monitor needs only DNS and Kafka: %s" % egress_ports)


class PrometheusTest(harness.TestCase):
    def test_promtool_check_and_test_rules(self):
        r = subprocess.run(["promtool", "check", "rules", os.path.join(PROM, "mailfleet.rules.yml")],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = subprocess.run(["promtool", "test", "rules", "mailfleet.rules.test.yml"], capture_output=True,
                           text=True, timeout=120, cwd=PROM)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS", r.stdout)

    def test_every_alert_has_a_firing_test(self):
        alerts = {a for a, _ in rules_exprs()}
        required = {"MailfleetInboundDLQDepth", "MailfleetInboundOldestAge", "MailfleetInboundReceived5m",
                    "MailfleetInboundStaleBacklog", "MailfleetOutboundOldestAge", "MailfleetOutboundDLQDepth",
                    "MailfleetBounceRate", "MailfleetComplaintRate", "MailfleetWorkerDown",
                    "MailfleetWorkerNotReady", "MailfleetSpoolGrowing", "MailfleetSendTransportPaused"}
        self.assertTrue(required <= alerts, required - alerts)
        with open(os.path.join(PROM, "mailfleet.rules.test.yml")) as f:
            tests = yaml.safe_load(f)["tests"]
        firing = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t.get("exp_alerts")}
        silent = {t["alertname"] for case in tests for t in case["alert_rule_test"] if not t.get("exp_alerts")}
        self.assertEqual(alerts - firing, set(), "alerts without a test where they fire")
        self.assertEqual(alerts - silent, set(), "alerts without a test where they stay silent")

    def test_thresholds_match_the_monitor_defaults(self):
        want = {"MailfleetInboundDLQDepth": 50, "MailfleetInboundOldestAge": 180, "MailfleetInboundReceived5m": 180,
                "MailfleetInboundStaleBacklog": 180, "MailfleetOutboundOldestAge": 180,
                "MailfleetOutboundDLQDepth": 50, "MailfleetBounceRate": 0.05, "MailfleetComplaintRate": 0.001}
        exprs = dict(rules_exprs())
        for alert, thr in want.items():
            m = re.search(r">\s*([0-9.]+)\s*$", exprs[alert])
            self.assertIsNotNone(m, alert)
            self.assertEqual(float(m.group(1)), thr, alert)

    def test_scrape_config_checks(self):
        """promtool check config on ops/prometheus/prometheus.yml.  Debian's
        Prometheus is built without Kubernetes discovery, so the check runs on
        a copy whose kubernetes_sd_configs are swapped for a static target;
        everything else (relabelling, rule files) is checked as written."""
        with open(os.path.join(PROM, "prometheus.yml")) as f:
            cfg = yaml.safe_load(f)
        (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "mailfleet"]
        self.assertEqual(job["kubernetes_sd_configs"], [{"role": "pod"}])
        keep = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
        self.assertEqual(keep[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)], "mailfleet")
        self.assertEqual(keep[("__meta_kubernetes_pod_container_port_name",)], "metrics")
        targets = {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
        self.assertTrue({"component", "pod", "namespace"} <= targets)
        del job["kubernetes_sd_configs"]
        job["static_configs"] = [{"targets": ["127.0.0.1:9100"]}]
        for rf in cfg["rule_files"]:
            shutil.copy(os.path.join(PROM, rf), self.path(os.path.basename(rf)))
        path = self.write("prometheus.yml", yaml.safe_dump(cfg))
        r = subprocess.run(["promtool", "check", "config", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS", r.stdout + r.stderr)

    def test_dashboard_json(self):
        with open(DASHBOARD) as f:
            dash = json.load(f)
        self.assertEqual(dash["uid"], "mailfleet-overview")
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        for p in dash["panels"]:
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
            if p["type"] != "row":
                self.assertTrue(p["targets"], p["title"])
                for t in p["targets"]:
                    self.assertTrue(t["expr"].strip())
                    self.assertEqual(t["expr"].count("("), t["expr"].count(")"), t["expr"])
        # every expression is valid PromQL: promtool checks them as recording
        # rules, with the dashboard's variables replaced by a regex
        rules = [{"record": "dashboard:expr_%d" % i, "expr": re.sub(r"\$\{?\w+\}?", ".*", e)}
                 for i, (_, e) in enumerate(dashboard_exprs())]
        self.assertGreater(len(rules), 20)
        path = self.write("dashboard.rules.yml", yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        titles = " ".join(p["title"].lower() for p in dash["panels"])
        for what in ("accepted", "latency", "backlog", "oldest", "dlq", "deliveries", "bounce", "complaint",
                     "alarm", "link downloads"):
            self.assertIn(what, titles)

    def test_referenced_metrics_are_exported_by_a_running_fleet(self):
        """Every metric name in the alert rules and the dashboard is exported by
        the workers.  The real binary runs the whole fleet (`mailfleet run`,
        the embedded default with every port moved to a free one) in Kafka
        mode, as on Kubernetes, against a real 1-node Apache Kafka cluster
        holding the topics of ops/k8s; one SMTP session (EHLO, QUIT) passes through ingest
        when it is configured; /metrics is scraped until every name appears
        or 20 s pass."""
        referenced = {}
        for where, expr in rules_exprs() + dashboard_exprs():
            for n in promql_metric_names(expr):
                referenced.setdefault(n, []).append(where)
        self.assertIn("mailfleet_ready", referenced)
        # ops/k8s's topics (topics.yaml, as Strimzi creates them)
        _, servers = harness.start_kafka(self, manifest=True)
        with open(os.path.join(OPS, "mailfleet.dev.ini")) as f:
            text = f.read()
        ports = {}

        def move(m):
            old = m.group(2)
            ports.setdefault(old, harness.free_port())
            return "127.0.0.1:%d" % ports[old]
        text = re.sub(r"\b(127\.0\.0\.1|0\.0\.0\.0|localhost):(\d+)\b", move, text)
        text = re.sub(r"(?m)^bus = .*$", "bus = kafka:" + servers, text)
        cfg = parse_ini(text)
        http = int(cfg["mailfleet"]["http_listen"].rsplit(":", 1)[1])
        path = self.write("mailfleet.ini", text)
        p = self.start([harness.MAILFLEET, "run", "-c", path], "run")
        harness.wait_port(http, proc=p.p)
        if cfg.has_option("ingest", "listen"):
            import smtplib
            smtp_port = int(cfg["ingest"]["listen"].rsplit(":", 1)[1])
            harness.wait_port(smtp_port, proc=p.p)
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as s:
                s.ehlo("ops-test")
        deadline = time.time() + 20
        while True:
            body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % http, timeout=5).read().decode()
            samples, types = parse_exposition(body)
            missing = missing_names(set(referenced), samples, types)
            if not missing or time.time() > deadline or not p.alive():
                break
            time.sleep(0.5)
        self.assertTrue(p.alive(), p.output()[-2000:])
        report = "\n".join("  %s (used by: %s)" % (n, ", ".join(sorted(set(referenced[n]))))
                           for n in sorted(missing))
        self.assertEqual(missing, set(), "metrics referenced but not exported:\n" + report +
                         "\nexported: " + " ".join(sorted(types)))
        self.assertEqual(p.stop(10), 0)


class ConfigMapTest(harness.TestCase):
    def example_keys(self):
        """{section: {keys}} of ops/mailfleet.example.ini, commented-out keys
        (`# key = ...`, unset defaults) included."""
        keys, sec = {}, None
        with open(os.path.join(OPS, "mailfleet.example.ini")) as f:
            for line in f:
                # named sections are documented as "# [rule.NAME] ..."
                m = re.match(r"^\s*(?:#\s*)?\[([^\]]+)\]", line)
                if m:
                    sec = m.group(1).strip()
                    keys.setdefault(sec, set())
                    continue
                m = re.match(r"^\s*#?\s*([A-Za-z0-9_.*]+)\s*=", line)
                if m and sec is not None:
                    keys[sec].add(m.group(1))
        return keys

    def test_configmap_keys_exist_in_example_and_pass_config_check(self):
        example = self.example_keys()
        for name in RENDERS:
            _, objs = render(name)
            text = ini_of(objs)
            cfg = parse_ini(text)
            unknown = []
            for s in cfg.sections():
                if s == "kafka":
                    # [kafka] passes any librdkafka property through
                    if "kafka" not in example:
                        unknown.append("[kafka]")
                    continue
                if s in example:
                    known = example[s]
                elif "." in s:
                    # named sections ([rule.<name>]): any example section of that kind
                    prefix = s.split(".", 1)[0] + "."
                    known = set().union(*[v for k, v in example.items() if k.startswith(prefix)] or [set()])
                else:
                    known = set()
                for k in cfg[s]:
                    if k not in known and not (k.endswith("_file") and k[:-5] in known):
                        unknown.append("[%s] %s" % (s, k))
            # MAILFLEET__SECTION__KEY overrides set on the pods
            for w in workloads(objs).values():
                for (sec, key) in override_env(w):
                    known = example.get(sec, set())
                    if key not in known and not (key.endswith("_file") and key[:-5] in known):
                        unknown.append("env [%s] %s" % (sec, key))
            self.assertEqual(unknown, [], "%s: keys not in ops/mailfleet.example.ini" % name)
            # `mailfleet config check` as each pod loads it: the ConfigMap plus
            # the pod's environment, with the mounted paths moved into the test
            # directory and every file a *_file key names present
            root = self.path(name.replace("/", "-"))

            def move(v):
                return root + v if re.match(r"^/(etc/mailfleet|var/lib/mailfleet)/", v) else v

            moved = re.sub(r"(?m)^(\s*[A-Za-z0-9_.]+\s*=\s*)(/\S*)", lambda m: m.group(1) + move(m.group(2)), text)
            path = self.write(name.replace("/", "-") + ".ini", moved)
            for comp, w in workloads(objs).items():
                env = {}
                for e in w["spec"]["template"]["spec"]["containers"][0].get("env", []):
                    if e["name"].startswith("MAILFLEET__"):
                        env[e["name"]] = move(e["value"])
                values = list(env.items()) + [(k, v) for s in parse_ini(moved).sections()
                                              for k, v in parse_ini(moved)[s].items()]
                for k, v in values:
                    if not v.startswith(root):
                        continue
                    if re.search(r"(_file|_location|_cert|_key)$", k.lower()) or "." in os.path.basename(v):
                        os.makedirs(os.path.dirname(v), exist_ok=True)
                        with open(v, "w") as f:
                            f.write("k1:000102030405060708090a0b0c0d0e0f\n")
                    else:
                        os.makedirs(v, exist_ok=True)
                r = self.mailfleet("config", "check", "-c", path, check=False, env=env)
                self.assertEqual(r.returncode, 0, "%s %s: %s%s" % (name, comp, r.stdout, r.stderr))
                self.assertIn("ok", r.stdout)

    def test_capture_rules_restrict_coded_recipients(self):
        """A leaked device password must not make the fleet an open relay:
        every capture rule we ship limits where coded lists may send."""
        for name in RENDERS:
            cfg = parse_ini(ini_of(render(name)[1]))
            for s in cfg.sections():
                if s.startswith("rule.") and cfg[s].get("action", "capture") == "capture":
                    with self.subTest(render=name, rule=s):
                        self.assertTrue(cfg[s].get("allowed_recipients", "").strip())

    def test_config_check_refuses_an_unknown_configmap_key(self):
        """The check above can fail: a key that no table declares is refused."""
        _, objs = render("overlays/dev")
        text = ini_of(objs).replace("[mailfleet]\n", "[mailfleet]\nno_such_key = 1\n", 1)
        path = self.write("bad.ini", text)
        r = self.mailfleet("config", "check", "-c", path, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no_such_key", r.stderr)


class S3LifecycleTest(unittest.TestCase):
    def test_lifecycle_shape_and_prefixes(self):
        import botocore.session
        from botocore.validate import ParamValidator
        with open(os.path.join(OPS, "s3-lifecycle.json")) as f:
            lc = json.load(f)
        op = botocore.session.get_session().get_service_model("s3").operation_model(
            "PutBucketLifecycleConfiguration")
        report = ParamValidator().validate({"Bucket": "b", "LifecycleConfiguration": lc}, op.input_shape)
        self.assertFalse(report.has_errors(), report.generate_report())
        status_enum = op.input_shape.members["LifecycleConfiguration"].members["Rules"].member.members[
            "Status"].enum
        prefixes = {}
        for rule in lc["Rules"]:
            self.assertIn(rule["Status"], status_enum)
            self.assertEqual(rule["Status"], "Enabled")
            prefixes[rule["Filter"]["Prefix"]] = rule["Expiration"]["Days"]
        self.assertEqual(prefixes, {"incoming/": 14, "attachments/": 14})
        # the stores the configs use lie under those prefixes
        for name in RENDERS:
            cfg = parse_ini(ini_of(render(name)[1]))
            for key in ("store_incoming", "store_attachments"):
                url = cfg["mailfleet"][key]
                m = re.match(r"^s3://[^/]+/([^?]*)", url)
                self.assertIsNotNone(m, url)
                self.assertTrue(any((m.group(1).rstrip("/") + "/").startswith(p) for p in prefixes), url)


class DockerfileTest(unittest.TestCase):
    def stages(self):
        with open(os.path.join(OPS, "Dockerfile")) as f:
            text = re.sub(r"\\\n", " ", f.read())
        stages, cur = {}, None
        for line in text.splitlines():
            line = line.strip()
            m = re.match(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
            if m:
                cur = m.group(2) or m.group(1)
                stages[cur] = {"from": m.group(1), "lines": []}
            elif cur and line and not line.startswith("#"):
                stages[cur]["lines"].append(line)
        return stages

    def apt_packages(self, stage):
        pkgs = set()
        for line in stage["lines"]:
            for m in re.finditer(r"apt-get install ([^&;]*)", line):
                pkgs |= {w for w in m.group(1).split() if not w.startswith("-")}
        return pkgs

    def test_runtime_stage_installs_every_linked_library(self):
        st = self.stages()
        self.assertEqual(list(st), ["build", "runtime"])
        # pinned by digest, with the tag it follows (ops/pin-base-images.sh refreshes them)
        self.assertRegex(st["build"]["from"], r"^debian:bookworm@sha256:[0-9a-f]{64}$")
        self.assertRegex(st["runtime"]["from"], r"^debian:bookworm-slim@sha256:[0-9a-f]{64}$")
        runtime = self.apt_packages(st["runtime"])
        # libraries the binary asks for by name (DT_NEEDED) must be listed
        # themselves; the rest of ldd's closure may come as their dependencies
        r = subprocess.run(["ldd", harness.MAILFLEET], capture_output=True, text=True, check=True)
        libs = re.findall(r"=>\s+(/\S+)", r.stdout)
        self.assertGreater(len(libs), 10)
        needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                                subprocess.run(["readelf", "-d", harness.MAILFLEET], capture_output=True,
                                               text=True, check=True).stdout))
        base = self.base_image_packages()
        base_closure = self.depends_closure(base)
        closure = self.depends_closure(runtime | base)
        problems = []
        for lib in libs:
            pkg = self.package_of(lib)
            if pkg is None:
                problems.append("%s: no Debian package owns it" % lib)
            elif os.path.basename(lib) in needed and pkg not in runtime and pkg not in base_closure:
                problems.append("%s (linked directly): package %s not in the runtime stage" % (lib, pkg))
            elif pkg not in closure:
                problems.append("%s: package %s not installed by the runtime stage" % (lib, pkg))
        self.assertEqual(problems, [])
        self.assertIn("ca-certificates", runtime)

    def base_image_packages(self):
        """Packages every Debian image has (Essential or Priority required)."""
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Essential} ${Priority}\n"],
                           capture_output=True, text=True, check=True)
        out = set()
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and (parts[1] == "yes" or parts[2] == "required"):
                out.add(parts[0])
        return out

    def depends_closure(self, pkgs):
        seen, todo = set(), list(pkgs)
        while todo:
            p = todo.pop()
            if p in seen:
                continue
            seen.add(p)
            r = subprocess.run(["dpkg-query", "-W", "-f", "${Depends}, ${Pre-Depends}", p], capture_output=True,
                               text=True)
            if r.returncode != 0:
                continue
            for alt in r.stdout.split(","):
                for choice in alt.split("|"):
                    name = choice.strip().split(" ")[0].split(":")[0]
                    if name and subprocess.run(["dpkg-query", "-W", name], capture_output=True).returncode == 0:
                        todo.append(name)
                        break
        return seen

    def package_of(self, path):
        cands = [path, os.path.realpath(path)]
        for c in list(cands):
            if c.startswith("/lib"):
                cands.append("/usr" + c)
            elif c.startswith("/usr/lib"):
                cands.append(c[4:])
        for c in cands:
            r = subprocess.run(["dpkg", "-S", c], capture_output=True, text=True)
            if r.returncode == 0:
                return r.stdout.split(":")[0].strip()
        return None

    def test_build_stage_matches_deps_and_image_basics(self):
        st = self.stages()
        with open(os.path.join(OPS, "deps.sh")) as f:
            m = re.search(r'build_pkgs="([^"]*)"', f.read())
        # the CLI tools deps.sh also installs are not needed to build
        want = set(m.group(1).split()) - {"openssl", "lmdb-utils"}
        self.assertEqual(want - self.apt_packages(st["build"]), set())
        rt = " ".join(st["runtime"]["lines"])
        self.assertRegex(rt, r'ENTRYPOINT \["/usr/bin/mailfleet"\]')
        self.assertRegex(rt, r"USER 10001")
        self.assertRegex(rt, r"HEALTHCHECK .*curl .*/healthz")
        self.assertIn("COPY --from=build /src/build/mailfleet /usr/bin/mailfleet", rt)
        self.assertIn("curl", self.apt_packages(st["runtime"]))
        # the image runs as the uid the pods ask for
        for w in workloads(render("base")[1]).values():
            self.assertEqual(w["spec"]["template"]["spec"]["securityContext"]["runAsUser"], 10001)

    def test_pin_script_rewrites_only_the_digests(self):
        """ops/pin-base-images.sh against a stand-in skopeo (no registry can
        be reached here): each FROM gets the digest asked for its tag, every
        other line stays as it was."""
        import hashlib
        import shutil
        import tempfile
        d = tempfile.mkdtemp(prefix="mf-pin-")
        self.addCleanup(shutil.rmtree, d, True)
        for f in ("Dockerfile", "pin-base-images.sh"):
            shutil.copy(os.path.join(OPS, f), os.path.join(d, f))
        bin_dir = os.path.join(d, "bin")
        os.makedirs(bin_dir)
        with open(os.path.join(bin_dir, "skopeo"), "w") as f:
            f.write('#!/bin/sh\nprintf "sha256:%s" "$(printf %s "$4" | sha256sum | cut -c1-64)"\n')
        os.chmod(os.path.join(bin_dir, "skopeo"), 0o755)
        r = subprocess.run([os.path.join(d, "pin-base-images.sh")], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, PATH=bin_dir + ":" + os.environ["PATH"]))
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(OPS, "Dockerfile")) as f:
            before = f.read().splitlines()
        with open(os.path.join(d, "Dockerfile")) as f:
            after = f.read().splitlines()
        self.assertEqual(len(before), len(after))
        changed = 0
        for a, b in zip(before, after):
            if not a.startswith("FROM "):
                self.assertEqual(a, b)
                continue
            tag = re.match(r"^FROM (\S+?)@", a).group(1)
            want = hashlib.sha256(("docker://docker.io/library/" + tag).encode()).hexdigest()
            self.assertEqual(b, re.sub(r"@sha256:[0-9a-f]{64}", "@sha256:" + want, a))
            changed += 1
        self.assertEqual(changed, 2)

    def test_build_context_is_only_the_sources(self):
        """ops/Dockerfile.dockerignore sends the build stage what it copies
        and nothing else (no build outputs, fetched jars, node_modules, .git)."""
        with open(os.path.join(OPS, "Dockerfile")) as f:
            copies = [l.split()[1] for l in f if l.startswith("COPY ") and "--from" not in l]
        with open(os.path.join(OPS, "Dockerfile.dockerignore")) as f:
            rules = [l.strip() for l in f if l.strip() and not l.startswith("#")]
        self.assertEqual(rules[0], "*")
        self.assertEqual(sorted(r[1:] for r in rules[1:]), sorted(copies))

    def test_image_bakes_in_no_development_config(self):
        """The dev config's token key, API token and user are published: the
        image neither copies ops/mailfleet.dev.ini nor ops/dev.users, and its
        default command reads a config that only a mount provides."""
        rt = self.stages()["runtime"]["lines"]
        copies = [l for l in rt if l.upper().startswith(("COPY", "ADD"))]
        for l in copies:
            self.assertNotIn("mailfleet.dev.ini", l)
            self.assertNotIn("dev.users", l)
            self.assertNotIn("/etc/mailfleet", l)
        cmd = [l for l in rt if l.upper().startswith("CMD")]
        self.assertEqual(len(cmd), 1)
        self.assertNotIn("dev", cmd[0])
        self.assertIn('"/etc/mailfleet/mailfleet.ini"', cmd[0])
        # and the pods mount their config exactly there
        for w in workloads(render("base")[1]).values():
            mounts = [m["mountPath"] for c in w["spec"]["template"]["spec"]["containers"]
                      for m in c.get("volumeMounts", [])]
            self.assertTrue(any(m in ("/etc/mailfleet", "/etc/mailfleet/mailfleet.ini") for m in mounts), mounts)


if __name__ == "__main__":
    unittest.main()
