#!/usr/bin/python3
"""Counts the mails Postfix's smtp-sink accepted (run with `-d DIR/%M.`, one
dump file per mail) and joins them with bench/loadgen's records.

  sinkcount.py wait DIR EXPECTED [--timeout S] [--stall S]
      polls until DIR holds EXPECTED dump files, or nothing new arrived for
      --stall seconds (default 30), or --timeout (default 600); prints the count.
  sinkcount.py report DIR RECORDS TAG T0_US [--recipients 3]
      one JSON line: deliveries, messages complete (every coded recipient got
      exactly one mail), duplicates, missing, latency from loadgen's 250 to the
      sink's acceptance (p50/p90/p99/max ms), end-to-end msgs/s (complete
      messages / (last acceptance - loadgen's first connect)).

A mail's acceptance time is its dump file's mtime: the kernel's coarse clock
(one tick, 1-4 ms) at smtp-sink's last write of the mail (end of DATA).  The
loadgen's t_250 is CLOCK_REALTIME; both clocks are the same machine's.
"""
import argparse
import json
import os
import re
import sys
import time


def count(d):
    try:
        return sum(1 for e in os.scandir(d) if e.is_file())
    except FileNotFoundError:
        return 0


def wait(a):
    t_end = time.monotonic() + a.timeout
    last, last_change = -1, time.monotonic()
    while True:
        n = count(a.dir)
        now = time.monotonic()
        if n != last:
            last, last_change = n, now
        if n >= a.expected or now > t_end or now - last_change > a.stall:
            print(n)
            return 0 if n >= a.expected else 1
        time.sleep(0.2)


def pct(v, p):
    return round(v[min(len(v) - 1, int(p * len(v)))], 2) if v else None


def report(a):
    t250 = {}
    with open(a.records) as f:
        for line in f:
            n, t = line.split("\t")
            t250[int(n)] = int(t)
    subj = re.compile(rb"^Subject: bench " + re.escape(a.tag.encode()) + rb" (\d+)\r?$", re.M)
    rcpt = re.compile(rb"^X-Rcpt-Args: <(.*?)>", re.M)
    got = {}       # n -> {recipient: deliveries}
    lat = []
    first = last = None
    foreign = 0
    for e in os.scandir(a.dir):
        if not e.is_file():
            continue
        with open(e.path, "rb") as f:
            head = f.read(8192)
        m = subj.search(head)
        if not m:
            foreign += 1
            continue
        n = int(m.group(1))
        t_ns = e.stat().st_mtime_ns
        first = t_ns if first is None or t_ns < first else first
        last = t_ns if last is None or t_ns > last else last
        for r in rcpt.findall(head):
            got.setdefault(n, {}).setdefault(r.decode().lower(), 0)
            got[n][r.decode().lower()] += 1
        if n in t250:
            lat.append((t_ns / 1000 - t250[n]) / 1000.0)
    lat.sort()
    complete = sum(1 for n, rs in got.items() if len(rs) == a.recipients and all(c == 1 for c in rs.values()))
    dups = sum(c - 1 for rs in got.values() for c in rs.values() if c > 1)
    missing = sum(max(0, a.recipients - len(got.get(n, {}))) for n in t250)
    span = (last / 1000 - a.t0_us) / 1e6 if last else 0
    print(json.dumps({
        "accepted_at_ingest": len(t250), "deliveries": sum(sum(rs.values()) for rs in got.values()),
        "messages_complete": complete, "duplicates": dups, "missing_deliveries": missing,
        "foreign": foreign, "seconds": round(span, 3),
        "msgs_per_s": round(complete / span, 1) if span > 0 else 0,
        "p50_ms": pct(lat, 0.50), "p90_ms": pct(lat, 0.90), "p99_ms": pct(lat, 0.99),
        "max_ms": round(lat[-1], 2) if lat else None}))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait")
    w.add_argument("dir")
    w.add_argument("expected", type=int)
    w.add_argument("--timeout", type=float, default=600)
    w.add_argument("--stall", type=float, default=30)
    r = sub.add_parser("report")
    r.add_argument("dir")
    r.add_argument("records")
    r.add_argument("tag")
    r.add_argument("t0_us", type=int)
    r.add_argument("--recipients", type=int, default=3)
    a = ap.parse_args()
    return wait(a) if a.cmd == "wait" else report(a)


if __name__ == "__main__":
    sys.exit(main())
