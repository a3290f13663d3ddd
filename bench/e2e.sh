#!/usr/bin/env bash
# bench/e2e.sh — end to end: bench/loadgen -> ingest -> transform -> send ->
# Postfix's smtp-sink, DESIGN.md §8 "end to end, local" and "end to end, Kafka",
# against a stock Postfix relaying the same load in the same invocation.
#
#   bench/e2e.sh [local|kafka|postfix|both|all]...  (both = local kafka; default all)
#   MSGS=5000 SESSIONS=16 RUNS=5 RATE=0 SEND_CONNECTIONS=16 bench/e2e.sh local postfix
#   EXTRA_INI=$'[kafka]\nlinger.ms = 0' bench/e2e.sh kafka    (config appended)
#   PERF=1 KEEP=1 bench/e2e.sh local    (perf record -g of the timed part: <run dir>/perf.data)
#
# local:   `mailfleet run` (every worker in one process, local queue).
# kafka:   a real 1-node Apache Kafka cluster (ops/kafka/cluster.py, the topics of
#          ops/k8s/base/topics.yaml) and one `mailfleet <worker>` process per
#          worker (ingest spools under state_dir).
# postfix: the baseline: a private Postfix (Debian's, from its own config
#          directory under the run's directory, queue on the same disk, chroot
#          off, defaults otherwise).  Postfix cannot read the coded list, so
#          loadgen -p sends mail n to bench-n@iot.localhost, and a virtual alias
#          map with one entry per mail number (`loadgen aliases`: the coded
#          recipients carry n, so a map of the 61-domain rotation alone cannot
#          do) expands it to mail n's 3 coded recipients; relayhost is the sink.
#          smtp_destination_recipient_limit = 1: each recipient gets a
#          transaction of its own, as the 3 different domains of a mail (and
#          mailfleet's 3 personalised copies) do; through one relayhost Postfix
#          would otherwise send one mail with 3 RCPTs.
# Modes take turns run by run (the machine is shared: load drifts).  Each run
# starts fresh (new queue, stores, sink), sends 20 warm-up mails and
# waits for them (so consumer-group joins are not timed), then MSGS mails of
# ~10 KB (coded list of 3 recipients, 4 KB base64 attachment) over SESSIONS
# connections, closed loop (RATE=0) or paced at RATE msgs/s, and waits until
# the sink holds 3 x MSGS mails.  Per run: ingest msgs/s (loadgen), end-to-end
# msgs/s (messages whose 3 mails all reached the sink / time from the first
# connect to the last acceptance), 250->sink latency p50/p99, CPU seconds per
# 1,000 messages of the mailfleet processes (and of the Kafka broker, apart) or
# of the Postfix processes (see pf_procs), and the backlog when the last 250
# went out (mailfleet: topic backlogs; Postfix: files in its queue).  Medians
# over RUNS are printed last, then mailfleet / Postfix (e2e msgs/s medians)
# when both ran.
# Leave a minute between two invocations on ext4 without a journal: the
# first one's cleanup deletes its files at exit, and for 5-40 s after a
# delete ext4 skips those inodes when it allocates one, which taxes every
# file the next invocation creates (see the cleanup in one_run).
# State, stores and Postfix's queue live under ${TMPDIR:-/tmp} (the disk); sink
# dumps on /dev/shm.  Everything started here, Postfix included, is stopped at
# exit, on error too.
set -euo pipefail
cd "$(dirname "$0")/.."
modes=" ${*:-all} "
modes=${modes// both / local kafka }
modes=${modes// all / local kafka postfix }
for m in $modes; do
  case $m in local|kafka|postfix) ;; *) echo "unknown mode $m (local kafka postfix both all)" >&2; exit 2 ;; esac
done
MSGS=${MSGS:-5000}
SESSIONS=${SESSIONS:-16}
RUNS=${RUNS:-5}
RATE=${RATE:-0}
SEND_CONNECTIONS=${SEND_CONNECTIONS:-16}
build=${BUILD:-build}
py=/usr/bin/python3
BIN=$build/mailfleet
for b in "$BIN" "$build/bench/loadgen"; do
  [ -x "$b" ] || { echo "build first: make ($b missing)" >&2; exit 2; }
done
if [[ " $modes " == *" kafka "* ]] &&
   [ ! -f "var/kafka-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' ops/kafka/pom.xml)/installed" ]; then
  echo "Apache Kafka is not installed: ops/deps.sh kafka" >&2; exit 2
fi
command -v smtp-sink >/dev/null || { echo "missing smtp-sink (make deps-test)" >&2; exit 2; }
if [[ " $modes " == *" postfix "* ]] && ! { command -v postfix && id postfix && [ -f /etc/postfix/master.cf ]; } >/dev/null 2>&1; then
  echo "missing postfix (make deps-test)" >&2; exit 2
fi

out=$(mktemp -d "${TMPDIR:-/tmp}/mf-bench-e2e-XXXXXX")
shm=$(mktemp -d "$( [ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/mf-bench-e2e-XXXXXX")
chmod 755 "$out" "$shm"
pids=()
kafka_dirs=()
pf_dirs=()
stop_all() {
  local p d
  for d in "${pf_dirs[@]}"; do stop_postfix "$d"; done
  pf_dirs=()
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  for d in "${kafka_dirs[@]}"; do $py ops/kafka/cluster.py stop "$d"; done
  kafka_dirs=()
}
cleanup() { stop_all; [ -n "${KEEP:-}" ] || rm -rf "$out" "$shm"; }
trap cleanup EXIT
trap 'exit 130' INT   # so that cleanup runs on ^C and kill too
trap 'exit 143' TERM

free_port() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; return 1; }
wait_ready() { for _ in $(seq 300); do curl -fs -o /dev/null "http://127.0.0.1:$1/readyz" && return 0; sleep 0.1; done; echo "port $1 never ready" >&2; return 1; }
# thread_ticks PID: "name ticks" per thread (workers name theirs mf-<worker>)
thread_ticks() { local t; for t in /proc/"$1"/task/*; do
  printf '%s %s\n' "$(tr ' ' _ <"$t/comm" 2>/dev/null)" "$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null || echo 0)"; done; }
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
json() { $py -c "import json,sys; d=json.loads(sys.argv[1]); print(d['$2'])" "$1"; }
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
hz=$(getconf CLK_TCK)

# ---- the private Postfix of the baseline --------------------------------------
# An instance dir holds conf/ (main.cf, master.cf, the alias map; root's, as
# postfix-script checks), queue/, data/ and maillog.  Its processes are those
# whose environment holds MAIL_CONFIG=DIR/conf: `postfix -c` sets it and master
# hands it on (import_environment).
#   pf_procs DIR pids    their pids
#   pf_procs DIR ticks   their CPU: utime+stime of each, plus cutime+cstime,
#                        where the children master has reaped keep counting
#                        (smtp, cleanup, smtpd exit after max_use/max_idle)
pf_procs() {
  $py - "$1" "$2" <<'PY'
import os, sys
want, ticks, pids = b"MAIL_CONFIG=" + sys.argv[1].encode() + b"/conf", 0, []
for p in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open("/proc/%s/environ" % p, "rb") as f:
            if want not in f.read().split(b"\0"):
                continue
        with open("/proc/%s/stat" % p) as f:
            st = f.read()
    except OSError:  # gone meanwhile
        continue
    pids.append(p)
    ticks += sum(int(x) for x in st[st.rfind(")") + 2:].split()[11:15])
print(ticks if sys.argv[2] == "ticks" else " ".join(pids))
PY
}

start_postfix() {  # $1 instance dir; listens on SMTP_PORT, relays to SINK_PORT
  local d=$1 c=$1/conf
  mkdir -p "$c" "$d/queue" "$d/data"
  chmod 755 "$d"
  chown postfix "$d/data"
  # Debian's master.cf with chroot off (upstream's default; Debian's chroot
  # would need copies of /etc files) and smtpd on our port
  awk -v listen="127.0.0.1:$SMTP_PORT" '
    $0 !~ /^[#[:space:]]/ && NF >= 8 { if ($1 == "smtp" && $2 == "inet") $1 = listen; $5 = "n" }
    { print }' /etc/postfix/master.cf >"$c/master.cf"
  # the warm-up sends mails 0..19 too; the recipients depend on n alone
  "$build/bench/loadgen" aliases "$(( MSGS > 20 ? MSGS : 20 ))" >"$c/virtual"
  # Defaults except where it lives, what it accepts (bench-n@iot.localhost,
  # expanded by the alias map), where it relays (the sink) and one recipient
  # per transaction (see the top).  Local mail (postmaster notices) is
  # discarded rather than written to /var/mail.
  cat >"$c/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
meta_directory = /etc/postfix
mail_owner = postfix
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = bench.localhost
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_transport = discard
virtual_alias_domains = iot.localhost
virtual_alias_maps = texthash:$c/virtual
relayhost = [127.0.0.1]:$SINK_PORT
smtp_destination_recipient_limit = 1
maillog_file = $d/maillog
maillog_file_prefixes = /var, $d
EOF
  pf_dirs+=("$d")   # stopped at exit, even after a failed start
  if ! postfix -c "$c" start >"$d/start.log" 2>&1; then
    # Postfix explains itself only on a terminal
    script -qc "postfix -c $c check" /dev/null | tail -5 >&2
    echo "postfix did not start (see $d)" >&2
    return 1
  fi
}

stop_postfix() {  # $1 instance dir: `postfix stop`, then nothing of it may be left
  local d=$1 left _
  postfix -c "$d/conf" stop >>"$d/stop.log" 2>&1 || true
  for _ in $(seq 50); do
    left=$(pf_procs "$d" pids)
    [ -n "$left" ] || return 0
    sleep 0.1
  done
  echo "postfix $d: still running after stop, killed: $left" >&2
  # shellcheck disable=SC2086  # a list of pids
  kill -9 $left 2>/dev/null || true
}

pf_queued() {  # $1 instance dir -> mails in its queue (not yet delivered)
  find "$1/queue/incoming" "$1/queue/active" "$1/queue/deferred" -type f 2>/dev/null | wc -l
}

common_ini() {  # $1 dir, $2 bus
  cat <<EOF
[mailfleet]
bus = $2
store_incoming = file:$1/store/incoming
store_attachments = file:$1/store/attachments
state_dir = $1/state
log_level = warn
http_listen = 127.0.0.1:$(free_port)
public_listen = 127.0.0.1:$(free_port)
public_base_url = http://127.0.0.1:8025
token_keys = bench:$(printf '6d66%.0s' $(seq 16))
[ingest]
listen = 127.0.0.1:$SMTP_PORT
listen_tls =
metrics_listen = 127.0.0.1:$(free_port)
hostname = bench.localhost
tls_cert = $1/tls/cert.pem
tls_key = $1/tls/key.pem
tls_generate = true
users_file = $1/users
max_connections_per_ip = 1000
[rule.capture]
recipients = alerts@iot.localhost
action = capture
[rule.bounces]
recipients = bounce+*@iot.localhost
action = feedback
[transform]
metrics_listen = 127.0.0.1:$(free_port)
capture_addresses = alerts@iot.localhost
tmp_dir = $1
[links]
metrics_listen = 127.0.0.1:$(free_port)
public_listen = 127.0.0.1:$(free_port)
[feedback]
metrics_listen = 127.0.0.1:$(free_port)
public_listen = 127.0.0.1:$(free_port)
[monitor]
metrics_listen = 127.0.0.1:$(free_port)
retention_interval = 0
sample_interval = 1s
[send]
metrics_listen = 127.0.0.1:$(free_port)
transport = smtp://127.0.0.1:$SINK_PORT
smtp_starttls = off
connections = $SEND_CONNECTIONS
per_domain = $SEND_CONNECTIONS
batch_max = 256
EOF
  # EXTRA_INI: more config for a diagnostic run, e.g. $'[kafka]\nlinger.ms = 0'
  [ -z "${EXTRA_INI:-}" ] || printf '%s\n' "$EXTRA_INI"
}
ini_port() { awk -v s="[$2]" -v k="$3" '$0==s{f=1;next} /^\[/{f=0} f && $1==k {sub(/.*:/,"",$3); print $3}' "$1"; }

fleet_ticks() {  # CPU ticks of what is measured: the Postfix instance or the mailfleet processes
  if [ -n "$pf" ]; then pf_procs "$pf" ticks; else cpu_ticks "$@"; fi
}

one_run() {  # $1 mode, $2 run number -> one JSON line on stdout
  local mode=$1 i=$2 dir="$out/$1-$2" dump="$shm/$1-$2" bus ready=() wpids=() bpids=() mport= pf= lgopt=() names
  mkdir -p "$dir" "$dump"
  chmod 777 "$dump"
  SMTP_PORT=$(free_port); SINK_PORT=$(free_port)
  smtp-sink -u nobody -m 1000 -d "$dump/%H%M%S." "127.0.0.1:$SINK_PORT" 1000 >"$dir/sink.log" 2>&1 &
  pids+=($!)
  wait_port "$SINK_PORT"
  case $mode in
  local)
    bus="local:$dir/queue"
    common_ini "$dir" "$bus" >"$dir/bench.ini"
    "$BIN" run -c "$dir/bench.ini" 2>"$dir/mailfleet.log" &
    pids+=($!); wpids+=($!)
    ready=("$(ini_port "$dir/bench.ini" mailfleet http_listen)")
    mport=${ready[0]}
    names=all ;;
  kafka)
    kafka_dirs+=("$dir/kafka")
    bus="kafka:$($py ops/kafka/cluster.py start "$dir/kafka" --manifest 2>"$dir/kafka.log")"
    bpids=($(cat "$dir"/kafka/node-*/pid))   # the broker's CPU is counted apart
    common_ini "$dir" "$bus" >"$dir/bench.ini"
    for w in ingest transform send links feedback monitor; do
      "$BIN" "$w" -c "$dir/bench.ini" 2>"$dir/$w.log" &
      pids+=($!); wpids+=($!)
      ready+=("$(ini_port "$dir/bench.ini" "$w" metrics_listen)")
    done
    mport=$(ini_port "$dir/bench.ini" monitor metrics_listen)
    names="ingest transform send links feedback monitor" ;;
  postfix)
    pf="$dir/pf"
    start_postfix "$pf"
    lgopt=(-p)        # per-mail envelope recipient, expanded by the alias map
    names=postfix ;;
  esac
  wait_port "$SMTP_PORT"
  for p in "${ready[@]}"; do wait_ready "$p"; done
  # warm-up: group joins, first files and connections, not timed
  "$build/bench/loadgen" "127.0.0.1:$SMTP_PORT" -s 4 -m 20 -t "warm$i" "${lgopt[@]}" >/dev/null
  $py bench/sinkcount.py wait "$dump" 60 --timeout 120 --stall 60 >/dev/null ||
    { echo "$mode run $i: warm-up mails did not all arrive (see $dir)" >&2; KEEP=1; return 1; }
  local c0 c1 b0 b1 lg rep per0=() per=() k
  c0=$(fleet_ticks "${wpids[@]}")
  b0=$(cpu_ticks "${bpids[@]}")
  for k in "${wpids[@]}"; do per0+=("$(cpu_ticks "$k")"); done
  [ "$mode" != local ] || thread_ticks "${wpids[0]}" >"$dir/threads0.txt"
  local perf_pid=
  if [ -n "${PERF:-}" ] && [ "$mode" != postfix ]; then   # PERF=1: a call-graph profile of the timed part
    perf record -q -g -o "$dir/perf.data" -p "$(IFS=,; echo "${wpids[*]}")" 2>"$dir/perf.log" &
    perf_pid=$!
  fi
  lg=$("$build/bench/loadgen" "127.0.0.1:$SMTP_PORT" -s "$SESSIONS" -m "$MSGS" -r "$RATE" -t "run$i" -o "$dir/records.tsv" "${lgopt[@]}") ||
    echo "$mode run $i: loadgen: $lg" >&2
  # where the backlog sits when the last 250 went out (monitor samples every 1 s)
  sleep 1.2
  if [ -n "$pf" ]; then
    echo "postfix_queue $(pf_queued "$pf")" >"$dir/backlog.txt"
  else
    curl -fs "http://127.0.0.1:$mport/metrics" | grep '^mailfleet_topic_backlog_records' >"$dir/backlog.txt" || true
  fi
  $py bench/sinkcount.py wait "$dump" $((60 + 3 * MSGS)) --timeout 600 --stall 30 >/dev/null ||
    echo "$mode run $i: not every mail reached the sink" >&2
  c1=$(fleet_ticks "${wpids[@]}")
  [ -z "$perf_pid" ] || { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
  b1=$(cpu_ticks "${bpids[@]}")
  for k in "${!wpids[@]}"; do per+=("$(( $(cpu_ticks "${wpids[$k]}") - per0[k] ))"); done
  if [ "$mode" = local ]; then thread_ticks "${wpids[0]}" >"$dir/threads1.txt"; else : >"$dir/threads1.txt"; fi
  [ -z "$pf" ] || per=("$(( c1 - c0 ))")
  rep=$($py bench/sinkcount.py report "$dump" "$dir/records.tsv" "run$i" "$(json "$lg" t0_us)")
  stop_all
  $py - "$lg" "$rep" "$(( c1 - c0 ))" "$hz" "$MSGS" "${per[*]}" "$dir/backlog.txt" "$(( b1 - b0 ))" "$names" "$dir" <<'PY'
import json, re, sys
lg, rep = json.loads(sys.argv[1]), json.loads(sys.argv[2])
broker = int(sys.argv[8]) / int(sys.argv[4])
hz, msgs = int(sys.argv[4]), int(sys.argv[5])
cpu = int(sys.argv[3]) / hz
per = [int(x) / hz / msgs * 1000 for x in sys.argv[6].split()]
backlog = {}
for line in open(sys.argv[7]):
    m = re.match(r'mailfleet_topic_backlog_records\{topic="mailfleet\.(inbound|outbound)",group="(transform|send)"\} (\S+)', line)
    if m:
        backlog[m.group(1)] = int(float(m.group(3)))
    m = re.match(r'postfix_queue (\d+)', line)
    if m:
        backlog["postfix_queue"] = int(m.group(1))
names = sys.argv[9].split()
def thread_sums(path):  # CPU ticks per thread name (local mode: one process)
    sums = {}
    try:
        for line in open(path):
            name, ticks = line.split()
            sums[name] = sums.get(name, 0) + int(ticks)
    except FileNotFoundError:
        pass
    return sums
t0, t1 = thread_sums(sys.argv[10] + "/threads0.txt"), thread_sums(sys.argv[10] + "/threads1.txt")
by_thread = {n: round((t1[n] - t0.get(n, 0)) / hz / msgs * 1000, 3) for n in sorted(t1)}
print(json.dumps({"ingest_msgs_per_s": lg["msgs_per_s"], "data_250_p99_ms": lg["p99_ms"], "ingest_errors": lg["errors"],
                  "e2e_msgs_per_s": rep["msgs_per_s"], "complete": rep["messages_complete"],
                  "duplicates": rep["duplicates"], "missing": rep["missing_deliveries"],
                  "lat_p50_ms": rep["p50_ms"], "lat_p99_ms": rep["p99_ms"], "lat_max_ms": rep["max_ms"],
                  "cpu_s_per_1000": round(cpu / msgs * 1000, 3),
                  "broker_cpu_s_per_1000": round(broker / msgs * 1000, 3),
                  "cpu_s_per_1000_by_worker": {n: round(c, 3) for n, c in zip(names, per)},
                  "cpu_s_per_1000_by_thread": by_thread,
                  "backlog_after_last_250": backlog}))
PY
  # The sink's dump (tmpfs) goes now; queues and stores stay on the disk until
  # the bench ends: ext4 without a journal skips inodes deleted in the last
  # 5-40 s when it allocates one, so deleting a run's ~10,000 files here would
  # tax every file the next run creates (a cost of this cleanup, not of either
  # system; Postfix's own deletes during its run still count).
  [ -n "${KEEP:-}" ] || rm -rf "$dump"
}

echo "== e2e $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg); $MSGS msgs x $RUNS runs," \
     "$SESSIONS sessions, rate ${RATE} (0 = closed loop), send connections $SEND_CONNECTIONS; modes:$modes"
bench/machine.sh "$out" | sed 's/^/  /'   # the limits beside the figures
for mode in $modes; do : >"$out/$mode.jsonl"; done
for i in $(seq "$RUNS"); do
  for mode in $modes; do
    one_run "$mode" "$i" >"$out/run.json"
    echo "$mode run $i: $(cat "$out/run.json")"
    cat "$out/run.json" >>"$out/$mode.jsonl"
  done
done
declare -A e2e_med
for mode in $modes; do
  case $mode in
  local)   what='mailfleet run' ;;
  kafka)   what='Apache Kafka + one process per worker' ;;
  postfix) what='private Postfix: virtual alias -> smtp relay' ;;
  esac
  printf '%s e2e (%s): ' "$mode" "$what"
  for k in e2e_msgs_per_s lat_p50_ms lat_p99_ms ingest_msgs_per_s cpu_s_per_1000 broker_cpu_s_per_1000; do
    printf '%s %s  ' "$k" "$($py -c "import json,sys; [print(json.loads(l)['$k']) for l in open(sys.argv[1])]" "$out/$mode.jsonl" | median)"
  done
  e2e_med[$mode]=$($py -c "import json,sys; [print(json.loads(l)['e2e_msgs_per_s']) for l in open(sys.argv[1])]" "$out/$mode.jsonl" | median)
  printf 'complete %s/%s dups %s  (medians of %s)\n' \
    "$($py -c "import json,sys; print(min(json.loads(l)['complete'] for l in open(sys.argv[1])))" "$out/$mode.jsonl")" "$MSGS" \
    "$($py -c "import json,sys; print(sum(json.loads(l)['duplicates'] for l in open(sys.argv[1])))" "$out/$mode.jsonl")" "$RUNS"
done
if [ -n "${e2e_med[postfix]:-}" ]; then
  for mode in local kafka; do
    [ -n "${e2e_med[$mode]:-}" ] || continue
    printf 'mailfleet %s / postfix = %s  (e2e msgs/s medians %s / %s)\n' "$mode" \
      "$($py -c "import sys; a, b = map(float, sys.argv[1:]); print(round(a / b, 2) if b else 'n/a')" "${e2e_med[$mode]}" "${e2e_med[postfix]}")" \
      "${e2e_med[$mode]}" "${e2e_med[postfix]}"
  done
fi
