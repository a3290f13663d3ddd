"""Exactly once on a real Apache Kafka 4.1.1 broker (DESIGN.md §3.1, §6, §11):
in Kafka mode the consume-produce workers (transform, send) put their
outputs and their inputs' offsets in one Kafka transaction per batch.
Everything is read back with Kafka's own tools (the Java console consumer
with an explicit isolation level, kafka-consumer-groups, kafka-transactions),
never through our bus code.

- ExactlyOnceKill9Test: 2,000 mails through ingest + transform while a
  killer thread kill -9s transform over and over, each time at a random
  0.5-2 s after the new process started handling records (so it dies while
  working through a backlog, transactions open), and restarts it.  Every
  accepted mail's inbound id is in mailfleet.outbound + mailfleet.fallback
  exactly once for a read_committed reader; what the killed processes left
  in aborted transactions is visible only read_uncommitted (counted).
- ScaleOutTest: 4-partition inbound/outbound, two transform and two send
  processes; the second of each has a state_dir of its own, as a separate
  pod has, so no shared sent-marker store can hide a redelivery.  A first
  burst is committed before the second processes join; both members of each
  group then own partitions; after kill -9 of one transform and one send the
  survivor owns all 4 within the session timeout (10 s) + a margin; every
  mail reaches each recipient exactly once (and has one Delivery event),
  nothing in the DLQ.
- MonitorTruthTest: with backlogs left on purpose (send stopped, then
  transform stopped), the backlog the monitor exports per group equals the
  LAG kafka-consumer-groups reports (commit markers count in both), and its
  oldest age is that of the first record at the group's committed offset.
  A monitor sample takes seconds on a real broker (one short-lived client
  per read, DESIGN.md §12), far more than sample_interval, so each reading is
  matched to its sample by the sample time its age implies.  The
  dlq-operator watches are not compared: that group never committed, and
  kafka-consumer-groups shows nothing for it.

A worker killed -9 inside a transaction leaves it open until
transaction.timeout.ms (10 s) and the broker's abort sweep (1 s here); its
group's committed offsets are unstable meanwhile, so the next member of the
group waits that long before it fetches (KIP-447).  The timeouts below allow
for it."""
import collections
import json
import random
import re
import threading
import time
import urllib.request

import harness
from e2e_util import Fleet, Sink, validate
from test_bus_kafka import KafkaClients
from test_chaos import SUBJECT_RE, LoadGenerator

K = harness.kafka_cluster
MAIN_TRANSACTIONS = "org.apache.kafka.tools.TransactionsCommand"
SESSION_TIMEOUT = 10.0      # bus_kafka.c consumer default (session.timeout.ms)


def metrics(port):
    """The /metrics text of a worker ("" while it is not answering)."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def metric(text, name, **labels):
    """The value of the one series of name whose labels include labels (None: none)."""
    for m in re.finditer(r"^%s\{([^}]*)\} (\S+)$" % re.escape(name), text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(2))
    return None


class EosClients(KafkaClients):
    """Kafka's own tools against self.kafka, beyond what KafkaClients has."""

    def describe(self, *groups):
        """Rows of `kafka-consumer-groups --describe` (the offsets view) for
        groups: dicts of its columns, offsets as int or None for "-",
        CONSUMER-ID None for none.  A group that does not exist yet, or one
        that is rebalancing, has no rows."""
        args = ["--bootstrap-server", self.kafka.bootstrap, "--describe"]
        for g in groups:
            args += ["--group", g]
        r = self.kafka.tool(K.MAIN_CONSUMER_GROUPS, *args, check=False)
        rows, head = [], None
        for line in r.stdout.splitlines():
            f = line.split()
            if f[:2] == ["GROUP", "TOPIC"]:
                head = f
            elif head and len(f) == len(head) and f[0] in groups:
                row = dict(zip(head, f))
                for k in ("PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"):
                    row[k] = None if row[k] == "-" else int(row[k])
                row["CONSUMER-ID"] = None if row["CONSUMER-ID"] == "-" else row["CONSUMER-ID"]
                rows.append(row)
        return rows

    def owners(self, rows, group, topic):
        """{partition: CONSUMER-ID} of group on topic."""
        return {r["PARTITION"]: r["CONSUMER-ID"] for r in rows if r["GROUP"] == group and r["TOPIC"] == topic}

    def lag(self, rows, group, topic):
        """Sum of LAG of group on topic (None when a partition has none)."""
        lags = [r["LAG"] for r in rows if r["GROUP"] == group and r["TOPIC"] == topic]
        return None if None in lags else sum(lags)

    def open_transactions(self):
        """Transactional ids whose transaction is not complete (kafka-transactions list)."""
        r = self.kafka.tool(MAIN_TRANSACTIONS, "--bootstrap-server", self.kafka.bootstrap, "list")
        rows = [line.split() for line in r.stdout.splitlines()[1:] if line.strip()]
        return sorted((f[0], f[3]) for f in rows if f[3] not in ("Empty", "CompleteCommit", "CompleteAbort"))

    def records(self, topic, isolation="read_committed"):
        """Every record of topic by the console consumer (the Java client):
        [(timestamp ms, partition, offset, value)]."""
        r = self.kafka.tool(K.MAIN_CONSOLE_CONSUMER, "--bootstrap-server", self.kafka.bootstrap,
                            "--topic", topic, "--from-beginning", "--timeout-ms", "4000",
                            "--isolation-level", isolation, "--property", "print.timestamp=true",
                            "--property", "print.partition=true", "--property", "print.offset=true",
                            timeout=120)
        out = []
        for line in r.stdout.splitlines():
            ts, part, off, value = line.split("\t", 3)
            out.append((int(ts.split(":")[1]), int(part.split(":")[1]), int(off.split(":")[1]), value))
        return out


def chaos_subject(message_id):
    """The Subject of the chaos_mail with that Message-ID."""
    return "chaos-%04d" % int(re.match(r"<?chaos-(\d+)-\d+@", message_id).group(1))


def transform_handled(port):
    """Records the transform process on port has handled (loop outcome ok)."""
    return metric(metrics(port), "mailfleet_loop_records_total", worker="transform", outcome="ok") or 0


class ExactlyOnceKill9Test(EosClients, harness.TestCase):
    MAILS = 2000
    RATE = 40          # mails/s offered: the load spans ~50 s, several kill rounds
    MIN_KILLS = 5

    def test_transform_killed_9_over_and_over_every_mail_exactly_once(self):
        t_start = time.time()
        fleet = Fleet(self, "kafka", per_worker=True, workers=("ingest", "transform"),
                      settings={"ingest": {"max_connections_per_ip": "100"}})
        self.kafka = fleet.kafka
        fleet.start()

        stop = threading.Event()
        kills = []                 # (time, records the killed process had handled)
        killer_errors = []

        def killer():
            while not stop.is_set():
                # barrier: the new process is in the group and handling
                # records; then it dies at a random moment, batches in flight
                while not stop.is_set() and transform_handled(fleet.metrics["transform"]) == 0:
                    time.sleep(0.05)
                if stop.wait(random.uniform(0.5, 2.0)):
                    return
                try:
                    handled = transform_handled(fleet.metrics["transform"])
                    fleet.procs["transform"].kill9()
                    kills.append((time.time(), handled))
                    fleet.start_worker("transform")
                except Exception as e:     # noqa: BLE001 - reported by the test
                    killer_errors.append(repr(e))
                    return

        kt = threading.Thread(target=killer, daemon=True)
        kt.start()
        gen = LoadGenerator(fleet.smtp_port, self.MAILS, rate=self.RATE).start()
        done = gen.join(timeout=150)
        self.assertTrue(done, "load generator still running; accepted %d" % len(gen.accepted))
        self.assertEqual(len(gen.accepted), self.MAILS)
        t_load = time.time() - t_start
        # at least MIN_KILLS kills in all, and the killer stops
        harness.wait_for(lambda: len(kills) >= self.MIN_KILLS or killer_errors, timeout=90, interval=0.5,
                         what="%d kills of transform" % self.MIN_KILLS)
        stop.set()
        kt.join(60)
        self.assertFalse(kt.is_alive())
        self.assertEqual(killer_errors, [], fleet.logs())
        self.assertGreaterEqual(len(kills), self.MIN_KILLS)
        self.assertTrue(fleet.alive(), fleet.logs())

        # Barrier: the last transform committed every inbound record, and no
        # transaction is still open (a killed process's is aborted by the
        # broker within transaction.timeout.ms + 1 s); only then can a
        # read_committed reader read to the end.
        def drained():
            rows = self.describe("transform")
            ends = sum(r["LOG-END-OFFSET"] for r in rows)
            return (rows and ends >= self.MAILS and self.lag(rows, "transform", "mailfleet.inbound") == 0
                    and not self.open_transactions())
        harness.wait_for(lambda: drained() or not fleet.alive(), timeout=120, interval=1.0,
                         what="transform's lag 0 and no open transaction")
        self.assertTrue(fleet.alive(), fleet.logs())
        t_drained = time.time() - t_start

        inbound = [validate("inbound", json.loads(v)) for _, _, _, v in self.records("mailfleet.inbound")]
        ids = collections.defaultdict(set)      # subject -> inbound ids (via the mail's Message-ID)
        for d in inbound:
            ids[chaos_subject(d["message_id"])].add(d["id"])
        # ingest (never killed here) made one inbound record per accepted mail
        self.assertEqual(sorted(ids), sorted(gen.accepted))
        self.assertEqual({s: i for s, i in ids.items() if len(i) != 1}, {})
        subject_of = {next(iter(i)): s for s, i in ids.items()}

        outbound = [validate("outbound", json.loads(v)) for _, _, _, v in self.records("mailfleet.outbound")]
        fallback = [validate("fallback", json.loads(v)) for _, _, _, v in self.records("mailfleet.fallback")]
        uncommitted = self.records("mailfleet.outbound", "read_uncommitted")
        seen = collections.Counter([o["inbound_id"] for o in outbound] + [f["inbound_id"] for f in fallback])
        missing = sorted(subject_of[i] for i in subject_of if seen[i] == 0)
        doubled = sorted((subject_of.get(i, i), n) for i, n in seen.items() if n > 1)
        unknown = sorted(i for i in seen if i not in subject_of)
        aborted = len(uncommitted) - len(outbound)
        report = ("accepted %d, client retries %d, kills %d (records the killed process had handled: %s), "
                  "outbound %d read_committed / %d read_uncommitted (%d in aborted transactions), fallback %d, "
                  "missing %d %s, doubled %d %s, unknown %d; load done at %.1fs, drained at %.1fs" % (
                      len(gen.accepted), gen.retries, len(kills), [h for _, h in kills], len(outbound),
                      len(uncommitted), aborted, len(fallback), len(missing), missing[:5], len(doubled),
                      doubled[:5], len(unknown), t_load, t_drained))
        print("eos:", report)
        self.assertEqual(missing, [], report)
        self.assertEqual(doubled, [], report)
        self.assertEqual(unknown, [], report)
        self.assertGreaterEqual(len(uncommitted), len(outbound), report)
        # where each went: coded mails to outbound with their recipients, the
        # coded-less ones to fallback
        by_id = {o["inbound_id"]: o for o in outbound}
        for subject, rcpts in gen.accepted.items():
            iid = next(iter(ids[subject]))
            if rcpts:
                self.assertEqual(sorted(by_id[iid]["recipients"]), sorted(rcpts), subject)
                self.assertEqual(by_id[iid]["subject"], subject)
            else:
                self.assertEqual([f["reason"] for f in fallback if f["inbound_id"] == iid], ["no_recipients"])
        self.assertTrue(fleet.alive(), fleet.logs())


class ScaleOutTest(EosClients, harness.TestCase):
    FIRST = 50
    BURST = 150
    MARGIN = 10.0      # s beyond the session timeout for the survivor to own everything
    GROUPS = (("transform", "mailfleet.inbound"), ("send", "mailfleet.outbound"))

    def start_second(self, fleet, w):
        """A second `mailfleet <w>` on the fleet's config: its own metrics
        port and its own state_dir (a pod of its own)."""
        port = harness.free_port()
        p = self.start([harness.MAILFLEET, w, "-c", fleet.cfg], w + "-2",
                       env={"MAILFLEET__%s__METRICS_LISTEN" % w.upper(): "127.0.0.1:%d" % port,
                            "MAILFLEET__MAILFLEET__STATE_DIR": self.path("state-%s-2" % w)})
        fleet.wait_ready(port, p)
        return p

    def pairs_at_sink(self, sink):
        c = collections.Counter()
        for rcpts, msg in sink.transactions():
            m = SUBJECT_RE.search(msg.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0])
            for r in rcpts:
                c[(m.group(1).decode() if m else "?", r)] += 1
        return c

    def delivery_events(self, fleet):
        """(subject, recipient) of every Delivery event (read_committed)."""
        return collections.Counter((e["mail"]["commonHeaders"]["subject"], r) for e in fleet.events()
                                   if e["eventType"] == "Delivery" for r in e["delivery"]["recipients"])

    def burst(self, fleet, sink, numbers, procs):
        """Offers chaos mails numbers; waits until each recipient has its copy
        at the sink and send has committed its Delivery event (outputs and
        offsets are one transaction: the batch is committed).  procs: the
        processes that must stay up meanwhile."""
        def down():
            return [p.log_path for p in procs if not p.alive()]
        gen = LoadGenerator(fleet.smtp_port, numbers).start()
        self.assertTrue(gen.join(timeout=60), "load generator still running")
        self.assertEqual(len(gen.accepted), len(numbers))
        want = {(s, r) for s, rcpts in gen.accepted.items() for r in rcpts}
        harness.wait_for(lambda: want <= set(self.pairs_at_sink(sink)) or down(), timeout=90,
                         interval=0.5, what="burst delivered at the sink")
        harness.wait_for(lambda: want <= set(self.delivery_events(fleet)) or down(), timeout=60,
                         interval=0.5, what="the burst's Delivery events committed")
        self.assertEqual(down(), [])
        return gen.accepted

    def test_two_transforms_two_sends_survivor_takes_all_partitions_exactly_once(self):
        t_start = time.time()
        sink = Sink(self)
        fleet = Fleet(self, "kafka", per_worker=True, workers=("ingest", "transform", "send"),
                      transport="smtp://127.0.0.1:%d" % sink.port,
                      topics=("mailfleet.inbound:4", "mailfleet.outbound:4"),
                      settings={"send": {"connections": "8", "per_domain": "8"}})
        self.kafka = fleet.kafka
        fleet.start()
        # a first burst through one process of each, committed before the
        # second ones join: the rebalance must not bring it back
        accepted = dict(self.burst(fleet, sink, range(0, self.FIRST), [fleet.procs[w] for w in fleet.workers]))
        second = {w: self.start_second(fleet, w) for w in ("transform", "send")}

        def balanced():
            rows = self.describe("transform", "send")
            for g, t in self.GROUPS:
                own = self.owners(rows, g, t)
                if sorted(own) != [0, 1, 2, 3] or None in own.values() or len(set(own.values())) != 2:
                    return None
            return rows
        rows = harness.wait_for(balanced, timeout=90, interval=0.5, what="two members in each group")
        members = {}
        for g, t in self.GROUPS:
            own = self.owners(rows, g, t)
            members[g] = set(own.values())
            # eager roundrobin: 2 partitions each
            self.assertEqual(sorted(collections.Counter(own.values()).values()), [2, 2], rows)

        everyone = [fleet.procs[w] for w in fleet.workers] + list(second.values())
        accepted.update(self.burst(fleet, sink, range(self.FIRST, self.FIRST + self.BURST), everyone))
        t_burst1 = time.time() - t_start

        # one transform (the fleet's) and one send (the second) die
        fleet.procs["transform"].kill9()
        second["send"].kill9()
        t_kill = time.time()
        took = {}

        def taken_over():
            rows = self.describe("transform", "send")
            for g, t in self.GROUPS:
                own = self.owners(rows, g, t)
                if g not in took and sorted(own) == [0, 1, 2, 3] and len(set(own.values())) == 1 \
                        and None not in own.values():
                    took[g] = (time.time() - t_kill, next(iter(own.values())))
            return len(took) == 2
        harness.wait_for(taken_over, timeout=SESSION_TIMEOUT + 30, interval=0.2,
                         what="the survivors owning all 4 partitions")
        for g, _ in self.GROUPS:
            secs, owner = took[g]
            # the survivor, not a newcomer, within the session timeout + margin
            self.assertIn(owner, members[g])
            self.assertLessEqual(secs, SESSION_TIMEOUT + self.MARGIN, took)

        survivors = [fleet.procs["ingest"], second["transform"], fleet.procs["send"]]
        accepted.update(self.burst(fleet, sink, range(self.FIRST + self.BURST, self.FIRST + 2 * self.BURST),
                                   survivors))
        want = collections.Counter((s, r) for s, rcpts in accepted.items() for r in rcpts)
        got = self.pairs_at_sink(sink)
        events = self.delivery_events(fleet)
        report = "bursts of %d, %d, %d mails; burst 1 delivered at %.1fs, take-over %s, runtime %.1fs" % (
            self.FIRST, self.BURST, self.BURST, t_burst1, {g: round(s, 1) for g, (s, _) in took.items()},
            time.time() - t_start)
        print("scale-out:", report)
        self.assertEqual(got, want, report)           # each recipient exactly once, nothing else
        self.assertEqual(events, want, report)        # one Delivery event each
        no_code = sorted(s for s, rcpts in accepted.items() if not rcpts)
        self.assertEqual(sorted(d["subject"] for d in fleet.docs("mailfleet.fallback", "fallback")
                                if d["reason"] == "no_recipients"), no_code)
        self.assertEqual(fleet.dlq_list(), [])
        for p in survivors:
            self.assertTrue(p.alive(), p.output()[-3000:])


class MonitorTruthTest(EosClients, harness.TestCase):
    WATCHED = (("mailfleet.inbound", "transform"), ("mailfleet.outbound", "send"))
    # s between the two halves of the inbound backlog: its oldest and newest
    # records are seconds apart, so an age from the wrong record would show
    SPREAD = 6.0

    def monitor_reading(self, fleet):
        """(when read, {(topic, group): (backlog, oldest age)}) from the monitor's /metrics."""
        text = metrics(fleet.metrics["monitor"])
        t = time.time()
        return t, {(t_, g): (metric(text, "mailfleet_topic_backlog_records", topic=t_, group=g),
                             metric(text, "mailfleet_topic_oldest_age_seconds", topic=t_, group=g))
                   for t_, g in self.WATCHED}

    def offer(self, fleet, numbers):
        gen = LoadGenerator(fleet.smtp_port, numbers).start()
        self.assertTrue(gen.join(timeout=60), "load generator still running")
        self.assertEqual(len(gen.accepted), len(numbers))
        return gen.accepted

    def test_monitor_lag_and_age_match_kafka_tools(self):
        t_start = time.time()
        fleet = Fleet(self, "kafka", per_worker=True, workers=("ingest", "transform", "send", "monitor"),
                      topics=("mailfleet.inbound:4", "mailfleet.outbound:4"))
        self.kafka = fleet.kafka
        fleet.start()
        n = 0

        # 1. Everything flows until both groups have committed offsets on
        # every partition (a group without members shows only those).
        def everything_committed():
            rows = self.describe("transform", "send")
            return all(sorted(r["PARTITION"] for r in rows if r["GROUP"] == g and r["TOPIC"] == t and
                              r["CURRENT-OFFSET"] is not None) == [0, 1, 2, 3]
                       for t, g in self.WATCHED) and self.lag(rows, "transform", "mailfleet.inbound") == 0
        while True:
            self.offer(fleet, range(n, n + 40))
            n += 40
            try:
                harness.wait_for(everything_committed, timeout=60, interval=0.5, what="commits on every partition")
                break
            except TimeoutError:
                self.assertLess(n, 200, "a partition still without records")

        # 2. send stops: transform's outputs wait on mailfleet.outbound
        self.assertEqual(fleet.procs["send"].stop(), 0)
        coded = sum(1 for rcpts in self.offer(fleet, range(n, n + 30)).values() if rcpts)
        n += 30
        harness.wait_for(lambda: self.lag(self.describe("transform"), "transform", "mailfleet.inbound") == 0,
                         timeout=60, interval=0.5, what="transform caught up")
        # 3. transform stops: two bursts SPREAD s apart wait on mailfleet.inbound
        self.assertEqual(fleet.procs["transform"].stop(), 0)
        inbound_before = sum(r["LOG-END-OFFSET"] for r in self.describe("transform"))
        self.offer(fleet, range(n, n + 20))
        time.sleep(self.SPREAD)     # not a barrier: it spreads the backlog's record timestamps
        self.offer(fleet, range(n + 20, n + 40))
        n += 40
        harness.wait_for(lambda: sum(r["LOG-END-OFFSET"] for r in self.describe("transform")) ==
                         inbound_before + 40, timeout=60, interval=0.5, what="ingest forwarded the backlog")

        # 4. Nothing moves now: the tool's lag holds from the last record's
        # timestamp on.  The oldest waiting record of each partition is the
        # first at or after its committed offset (read_committed, as the
        # monitor reads it).  The monitor's age is (its sample's time - that
        # record's timestamp), so each reading implies when its sample was
        # taken; one sample has one time for every watch.
        rows = self.describe("transform", "send")
        tool = {(t, g): self.lag(rows, g, t) for t, g in self.WATCHED}
        self.assertEqual(tool[("mailfleet.inbound", "transform")], 40, rows)
        self.assertGreaterEqual(tool[("mailfleet.outbound", "send")], coded, rows)   # + commit markers
        oldest, last = {}, {}      # ms
        for t, g in self.WATCHED:
            committed = {r["PARTITION"]: r["CURRENT-OFFSET"] for r in rows if r["GROUP"] == g and r["TOPIC"] == t}
            recs = self.records(t)
            first = {}
            for ts, p, off, _ in sorted(recs, key=lambda x: (x[1], x[2])):
                if off >= committed[p] and p not in first:
                    first[p] = ts
            oldest[(t, g)] = min(first.values())
            last[(t, g)] = max(ts for ts, _, _, _ in recs)
        self.assertEqual(self.describe("transform", "send"), rows)    # still nothing moved

        readings = []     # (watch, when read (ms), implied sample time (ms), backlog)

        def sampled(w, after):
            return sorted({s for w_, _, s, _ in readings if w_ == w and s > after})

        def enough():
            t_read, vals = self.monitor_reading(fleet)
            for w in self.WATCHED:
                readings.append((w, round(t_read * 1000), oldest[w] + round(vals[w][1] * 1000), vals[w][0]))
            return len(set.intersection(*(set(sampled(w, last[w])) for w in self.WATCHED))) >= 3
        harness.wait_for(enough, timeout=90, interval=0.1,
                         what="3 monitor samples after the last record read for both watches")
        report = []
        for w in self.WATCHED:
            times = sampled(w, 0)
            report.append("%s: %d samples in %d readings, %s ms apart, reading - sample %d..%d ms, backlog "
                          "after the last record %s, tool %s" % (
                              w, len(times), len(readings) // 2, [b - a for a, b in zip(times, times[1:])],
                              min(t - s for w_, t, s, _ in readings if w_ == w),
                              max(t - s for w_, t, s, _ in readings if w_ == w),
                              sorted({b for w_, _, s, b in readings if w_ == w and s > last[w]}), tool[w]))
        report = "; ".join(report)
        print("monitor:", report, "runtime %.1fs" % (time.time() - t_start))
        for w in self.WATCHED:
            # every sample taken after the last record shows the tool's lag
            self.assertEqual({b for w_, _, s, b in readings if w_ == w and s > last[w]}, {tool[w]}, report)
            # A sample precedes the reading that shows it.  A watch's value
            # appears once that watch is read (up to one sample's duration
            # after the sample's time) and stays until the next sample's
            # replaces it: two periods at most.
            times = sampled(w, 0)
            period = max(b - a for a, b in zip(times, times[1:]))
            for w_, t_read, s, _ in readings:
                if w_ == w:
                    self.assertGreaterEqual(t_read - s, -50, report)
                    self.assertLessEqual(t_read - s, 2 * period + 500, report)
        # Each watch's age implies the same sample times, to the millisecond
        # (one now_ms() per sample): the two oldest records are the right ones.
        # The inbound watch is set first in a sample: the newest sample may
        # lack its outbound reading, the oldest its inbound one.
        ins, outs = (set(sampled(w, 0)) for w in self.WATCHED)
        self.assertGreaterEqual(len(ins & outs), 3, report)
        self.assertLessEqual(ins - outs, {max(ins)}, report)
        self.assertLessEqual(outs - ins, {min(outs)}, report)
