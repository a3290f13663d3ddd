"""ops/ observability checked offline: every alert links an existing section
of ops/RUNBOOK.md; every aggregation in the rules keeps `namespace`; the
metrics the new alerts read are really produced where they look (the
monitor's watch list, the ingest spool's claim names, the scrape labels); the
Prometheus Operator objects of ops/k8s/monitoring render, select the
workloads' pods and port, and carry the rules file unchanged (the committed
PrometheusRule equals what ops/prometheus/make-prometheusrule.py writes).
The helpers (render, workloads, ...) are test_ops.py's."""
import os
import re
import subprocess
import unittest

import yaml

from test_ops import (K8S, OPS, PROM, RENDERS, by_kind, ini_of, parse_ini, render, rules_exprs,
                      selector_matches, workloads)

RULES = os.path.join(PROM, "mailfleet.rules.yml")
RUNBOOK = os.path.join(OPS, "RUNBOOK.md")
RUNBOOK_URL = "https://github.com/mailfleet/mailfleet/blob/main/ops/RUNBOOK.md#"
MONITORING = os.path.join(K8S, "monitoring")
GENERATOR = os.path.join(PROM, "make-prometheusrule.py")
PROMETHEUSRULE = os.path.join(MONITORING, "prometheusrule.yaml")


def alerts():
    with open(RULES) as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


# --- Markdown: the anchors GitHub gives headings ------------------------------

def github_anchor(heading):
    """GitHub's anchor of a heading: lower-cased, punctuation dropped (but
    '-' and '_'), each space a '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def markdown_anchors(text):
    """{anchor: heading text} of a Markdown file; a repeated anchor gets
    -1, -2, ... as on GitHub.  Lines inside ``` fences are not headings."""
    out, seen, fence = {}, {}, False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fence or not m:
            continue
        a = github_anchor(m.group(1))
        n = seen.get(a, 0)
        seen[a] = n + 1
        out[a if n == 0 else "%s-%d" % (a, n)] = m.group(1)
    return out


# --- PromQL: aggregations and the labels they keep ----------------------------

AGGREGATIONS = ("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
                "topk", "quantile")


def _strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)


def _closing(s, i):
    """Index of the parenthesis closing the one at s[i]."""
    depth = 0
    for j in range(i, len(s)):
        depth += {"(": 1, ")": -1}.get(s[j], 0)
        if depth == 0:
            return j
    raise ValueError("unbalanced parentheses: " + s)


def namespace_losses(expr):
    """Where an expression drops `namespace`: aggregations without a by-clause
    naming it (or with a without-clause naming it), on()/ignoring() matching
    that leaves it out, and absent(), whose result has no namespace."""
    s = _strip_strings(expr)
    clause = re.compile(r"\s*(by|without)\s*\(([^)]*)\)")
    lost = []
    for m in re.finditer(r"\b(%s)\b" % "|".join(AGGREGATIONS), s):
        rest = s[m.end():]
        c = clause.match(rest)
        if not c:
            p = re.match(r"\s*\(", rest)
            if not p:
                continue  # a label called "group", not the aggregation
            close = _closing(s, m.end() + p.end() - 1)
            c = clause.match(s[close + 1:])
        labels = {x.strip() for x in c.group(2).split(",")} if c else set()
        if not c or (c.group(1) == "by") != ("namespace" in labels):
            lost.append("%s %s" % (m.group(1), "%s (%s)" % (c.group(1), c.group(2)) if c else "(no by clause)"))
    for m in re.finditer(r"\b(on|ignoring)\s*\(([^)]*)\)", s):
        labels = {x.strip() for x in m.group(2).split(",")}
        if (m.group(1) == "on") != ("namespace" in labels):
            lost.append("%s (%s)" % (m.group(1), m.group(2)))
    for m in re.finditer(r"\babsent(_over_time)?\s*\(", s):
        lost.append(m.group(0).rstrip("( "))
    return lost


def selectors(expr, metric):
    """[{label: (op, value)}] of each selector of `metric` in an expression."""
    out = []
    for m in re.finditer(r"\b%s\s*\{([^}]*)\}" % re.escape(metric), expr):
        out.append({k: (op, v) for k, op, v in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', m.group(1))})
    return out


def duration_s(d):
    m = re.match(r"^(\d+)(s|m|h|d)$", d)
    assert m, d
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def example_value(section, key):
    """The default of a key as ops/mailfleet.example.ini shows it."""
    with open(os.path.join(OPS, "mailfleet.example.ini")) as f:
        return parse_ini(f.read())[section][key]


def effective(cfg, section, key):
    return cfg[section][key] if cfg.has_option(section, key) else example_value(section, key)


class HelperTest(unittest.TestCase):
    """The parsers the checks below rely on can fail."""

    def test_github_anchor(self):
        self.assertEqual(github_anchor("MailfleetSpoolGrowing"), "mailfleetspoolgrowing")
        self.assertEqual(github_anchor("What to do, now: `kubectl` (fast)!"), "what-to-do-now-kubectl-fast")
        self.assertEqual(github_anchor("a_b-c d"), "a_b-c-d")
        self.assertEqual(sorted(markdown_anchors("# X\n```\n# not one\n```\n## X\n### Y z\n")),
                         ["x", "x-1", "y-z"])

    def test_namespace_losses(self):
        for bad in ("max(x) > 1", "max by (topic) (x)", "sum without (namespace) (x)", "max(x{a=\"b\"}) by (pod)",
                    "a and on (pod) b", "a unless ignoring (namespace) b", "absent(up{job=\"m\"})",
                    "count(max by (namespace) (x))"):
            self.assertTrue(namespace_losses(bad), bad)
        for good in ("max by (namespace, topic) (x{group=\"g\"}) > 5", "sum(rate(x[5m])) by (pod, namespace)",
                     "min without (pod) (x)", "a unless on (namespace) b", "up{job=\"m\"} == 0",
                     "deriv(x[10m]) > 0 and x > 100", "max by (namespace, topic, group) (x)"):
            self.assertEqual(namespace_losses(good), [], good)


class RunbookTest(unittest.TestCase):
    def test_every_alert_links_an_existing_runbook_section(self):
        with open(RUNBOOK) as f:
            text = f.read()
        anchors = markdown_anchors(text)
        linked = set()
        for a in alerts():
            with self.subTest(alert=a["alert"]):
                url = a.get("annotations", {}).get("runbook_url", "")
                self.assertTrue(url.startswith(RUNBOOK_URL), url)
                anchor = url[len(RUNBOOK_URL):]
                self.assertIn(anchor, anchors)
                # the section is the alert's own
                self.assertEqual(anchors[anchor], a["alert"])
                linked.add(anchor)
        # and every alert section belongs to an alert that still exists
        sections = {a for a, h in anchors.items() if h.startswith("Mailfleet")}
        self.assertEqual(sections - linked, set(), "runbook sections of no alert")

    def test_sections_say_what_to_check_and_do(self):
        with open(RUNBOOK) as f:
            parts = re.split(r"(?m)^## ", f.read())[1:]
        names = {a["alert"] for a in alerts()}
        seen = set()
        for part in parts:
            title = part.splitlines()[0].strip()
            if title not in names:
                continue
            seen.add(title)
            with self.subTest(section=title):
                for what in ("**Means:**", "**Check first:**", "**Do:**"):
                    self.assertIn(what, part)
        self.assertEqual(seen, names)


class NamespaceTest(unittest.TestCase):
    def test_every_alert_keeps_namespace(self):
        """Two deployments in one Prometheus alert apart: no aggregation or
        vector match drops `namespace`.  One exception: the whole-fleet
        fallback of MailfleetMonitorAbsent, absent(up{job=...}), fires only
        when no mailfleet target exists in any namespace."""
        for name, expr in rules_exprs():
            lost = namespace_losses(expr)
            with self.subTest(alert=name):
                if name == "MailfleetMonitorAbsent":
                    self.assertEqual(lost, ["absent"])
                    self.assertRegex(expr, r"\bcount by \(namespace\)")
                    self.assertRegex(expr, r'\babsent\(up\{job="[^"]+"\}\)')
                else:
                    self.assertEqual(lost, [])


class AlertInputsTest(unittest.TestCase):
    """The series the new alerts select exist with the labels they match."""

    def expr(self, alert):
        (a,) = [a for a in alerts() if a["alert"] == alert]
        return a["expr"]

    def test_monitor_watches_every_topic_an_alert_reads(self):
        """mailfleet_topic_* exists only for the monitor's [monitor] watch
        pairs: every topic/group an alert selects is watched in every
        ConfigMap, and so is each of send's retry tiers (group
        <[send] group>.retry.<delay>) and mailfleet.feedback."""
        wanted = set()
        for name, expr in rules_exprs():
            for metric in ("mailfleet_topic_backlog_records", "mailfleet_topic_oldest_age_seconds",
                           "mailfleet_topic_received_recent_records", "mailfleet_topic_stale_backlog_records"):
                for sel in selectors(expr, metric):
                    topic = sel.get("topic")
                    if topic and topic[0] == "=":
                        group = sel.get("group")
                        wanted.add((name, topic[1], group))
        self.assertTrue(any(t == "mailfleet.feedback" for _, t, _ in wanted))
        for rname in RENDERS:
            cfg = parse_ini(ini_of(render(rname)[1]))
            watch = [w.strip().split(":", 1) for w in effective(cfg, "monitor", "watch").split(",") if w.strip()]
            watch = {(w[0], w[1] if len(w) > 1 else "monitor") for w in watch}
            send_group = effective(cfg, "send", "group")
            tiers = [t.strip() for t in effective(cfg, "send", "retry_tiers").split(",")]
            with self.subTest(render=rname):
                self.assertIn(("mailfleet.feedback", "feedback"), watch)
                for t in tiers:
                    self.assertIn(("mailfleet.outbound.retry." + t, "%s.retry.%s" % (send_group, t)), watch)
                for alert, topic, group in sorted(wanted, key=str):
                    groups = {g for t, g in watch if t == topic}
                    self.assertTrue(groups, "%s reads %s, which the monitor does not watch" % (alert, topic))
                    if group is None:
                        continue
                    op, val = group
                    if op == "=":
                        self.assertIn(val, groups, alert)
                    elif op == "=~":
                        self.assertTrue(any(re.fullmatch(val, g) for g in groups), alert)

    def test_retry_tier_bounds_are_twice_the_delay_plus_slack(self):
        """One branch per tier of every ConfigMap, each at 2 x delay + 5 min,
        and the tier groups send really uses match the branch's group."""
        branches = {}
        for part in re.split(r"\bor\b", self.expr("MailfleetRetryTierOldestAge")):
            m = re.search(r'topic="mailfleet\.outbound\.retry\.(\w+)",group=~"([^"]+)"\}\)\s*>\s*(\d+)\s*$',
                          part.strip())
            self.assertIsNotNone(m, part)
            branches[m.group(1)] = (m.group(2), int(m.group(3)))
        for rname in RENDERS:
            cfg = parse_ini(ini_of(render(rname)[1]))
            send_group = effective(cfg, "send", "group")
            tiers = [t.strip() for t in effective(cfg, "send", "retry_tiers").split(",")]
            with self.subTest(render=rname):
                self.assertEqual(sorted(branches), sorted(tiers))
                for t in tiers:
                    regex, bound = branches[t]
                    self.assertEqual(bound, 2 * duration_s(t) + 300, t)
                    self.assertTrue(re.fullmatch(regex, "%s.retry.%s" % (send_group, t)), t)
                    self.assertFalse(re.fullmatch(regex, "monitor"), t)

    def test_spool_volume_alert_matches_the_ingest_claims(self):
        """The PVCs of StatefulSet mailfleet-ingest are <template>-<set>-<n>;
        the claim is the one holding the spool (/var/lib/mailfleet)."""
        sels = selectors(self.expr("MailfleetSpoolVolumeFilling"), "kubelet_volume_stats_available_bytes") + \
            selectors(self.expr("MailfleetSpoolVolumeFilling"), "kubelet_volume_stats_capacity_bytes")
        self.assertEqual(len(sels), 2)
        regexes = {s["persistentvolumeclaim"] for s in sels}
        self.assertEqual(len(regexes), 1)
        ((op, regex),) = regexes
        self.assertEqual(op, "=~")
        for rname in RENDERS:
            sts = by_kind(render(rname)[1], "StatefulSet")["mailfleet-ingest"]
            (c,) = sts["spec"]["template"]["spec"]["containers"]
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            claim = mounts["/var/lib/mailfleet"]
            self.assertIn(claim, [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]])
            with self.subTest(render=rname):
                for n in list(range(sts["spec"]["replicas"])) + [12]:
                    self.assertTrue(re.fullmatch(regex, "%s-%s-%d" % (claim, sts["metadata"]["name"], n)))
                self.assertFalse(re.fullmatch(regex, "data-postgres-0"))
                self.assertFalse(re.fullmatch(regex, "%s-%s" % (claim, sts["metadata"]["name"])))

    def test_monitor_absent_uses_the_scrape_labels(self):
        """job and component as prometheus.yml's job sets them, for the
        monitor's real component label."""
        with open(os.path.join(PROM, "prometheus.yml")) as f:
            (job,) = yaml.safe_load(f)["scrape_configs"]
        expr = self.expr("MailfleetMonitorAbsent")
        ups = selectors(expr, "up")
        self.assertGreaterEqual(len(ups), 3)
        for sel in ups:
            self.assertEqual(sel["job"], ("=", job["job_name"]))
        component = [r for r in job["relabel_configs"] if r.get("target_label") == "component"]
        self.assertEqual(component[0]["source_labels"], ["__meta_kubernetes_pod_label_app_kubernetes_io_component"])
        monitor = [s for s in ups if "component" in s]
        self.assertEqual([s["component"] for s in monitor], [("=", "monitor")])
        labels = workloads(render("base")[1])["monitor"]["spec"]["template"]["metadata"]["labels"]
        self.assertEqual(labels["app.kubernetes.io/component"], "monitor")

    def test_worker_down_says_what_up_means(self):
        """up == 0 is a failed scrape; /healthz (a stuck loop) restarts the
        pod, and a broker or store outage only fails /readyz."""
        (a,) = [a for a in alerts() if a["alert"] == "MailfleetWorkerDown"]
        self.assertEqual(a["expr"].strip(), 'up{job="mailfleet"} == 0')
        text = a["annotations"]["summary"] + " " + a["annotations"]["description"]
        self.assertIn("scrape", text)
        self.assertIn("stuck_after", text)
        self.assertIn("MailfleetWorkerNotReady", text)


class OperatorTest(unittest.TestCase):
    """ops/k8s/monitoring: a PodMonitor and a PrometheusRule."""

    def test_prometheusrule_is_what_the_script_writes(self):
        r = subprocess.run(["/usr/bin/python3", GENERATOR, "-"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(PROMETHEUSRULE) as f:
            committed = f.read()
        self.assertEqual(committed, r.stdout, "run ops/prometheus/make-prometheusrule.py after changing the rules")

    def test_prometheusrule_holds_the_rules_file(self):
        with open(RULES) as f:
            rules = yaml.safe_load(f)
        _, objs = render("monitoring")
        (rule,) = by_kind(objs, "PrometheusRule").values()
        self.assertEqual(rule["apiVersion"], "monitoring.coreos.com/v1")
        self.assertEqual(rule["spec"], {"groups": rules["groups"]})

    def test_monitoring_renders_apart_from_the_overlays(self):
        _, objs = render("monitoring")
        self.assertEqual(sorted(o["kind"] for o in objs), ["PodMonitor", "PrometheusRule"])
        (ns,) = {o["metadata"]["namespace"] for o in objs}
        for rname in RENDERS:
            # the namespace the NetworkPolicy lets scrape the metrics port
            pols = by_kind(render(rname)[1], "NetworkPolicy").values()
            sources = {peer["namespaceSelector"]["matchLabels"].get("kubernetes.io/metadata.name")
                       for p in pols for rule in p["spec"].get("ingress", [])
                       if any(port.get("port") == "metrics" for port in rule.get("ports", []))
                       for peer in rule.get("from", []) if "namespaceSelector" in peer}
            self.assertIn(ns, sources, rname)
            # base and the overlays apply without the operator's CRDs
            self.assertEqual([o["kind"] for o in render(rname)[1]
                              if o["apiVersion"].startswith("monitoring.coreos.com/")], [], rname)
        r = subprocess.run(["yamllint", "-s", "-d", "{extends: relaxed, rules: {line-length: disable}}",
                            render("monitoring")[0]], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_podmonitor_scrapes_like_the_plain_job(self):
        """It selects every workload's pods (in any namespace, like the plain
        job), on a port they expose, and labels job and component as
        prometheus.yml does, so the rules work on either."""
        (pm,) = by_kind(render("monitoring")[1], "PodMonitor").values()
        spec = pm["spec"]
        with open(os.path.join(PROM, "prometheus.yml")) as f:
            (job,) = yaml.safe_load(f)["scrape_configs"]
        keep = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
        self.assertEqual(spec["namespaceSelector"], {"any": True})
        self.assertEqual(spec["selector"]["matchLabels"],
                         {"app.kubernetes.io/name": keep[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)]})
        (ep,) = spec["podMetricsEndpoints"]
        self.assertEqual(ep["port"], keep[("__meta_kubernetes_pod_container_port_name",)])
        self.assertEqual(ep.get("path", "/metrics"), job["metrics_path"])
        # job: from the pods' label, the same value as the plain job's name
        # and the job="..." every rule selects
        rule_jobs = {v for _, e in rules_exprs() for v in re.findall(r'\bjob="([^"]*)"', e)}
        self.assertEqual(rule_jobs, {job["job_name"]})
        # component: from the same pod label as the plain job
        plain = {r["target_label"]: r["source_labels"] for r in job["relabel_configs"] if "target_label" in r}
        mine = {r["targetLabel"]: r["sourceLabels"] for r in ep.get("relabelings", [])}
        self.assertEqual(mine["component"], plain["component"])
        for rname in RENDERS:
            for comp, w in workloads(render(rname)[1]).items():
                labels = w["spec"]["template"]["metadata"]["labels"]
                ports = {p["name"] for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
                with self.subTest(render=rname, worker=comp):
                    self.assertTrue(selector_matches(spec["selector"], labels))
                    self.assertIn(ep["port"], ports)
                    self.assertEqual(labels.get(spec["jobLabel"]), job["job_name"])
                    (src,) = mine["component"]
                    pod_label = src[len("__meta_kubernetes_pod_label_"):]
                    self.assertIn(pod_label, {re.sub(r"[^A-Za-z0-9_]", "_", k): v for k, v in labels.items()})
                    self.assertEqual(labels["app.kubernetes.io/component"], comp)


if __name__ == "__main__":
    unittest.main()
