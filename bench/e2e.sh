#!/usr/bin/env bash
# bench/e2e.sh — end to end: bench/loadgen -> ingest -> transform -> send ->
# Postfix's smtp-sink, DESIGN.md §8 "end to end, local" and "end to end, Kafka".
#
#   bench/e2e.sh [local|kafka|both]        (default both)
#   MSGS=5000 SESSIONS=16 RUNS=5 RATE=0 SEND_CONNECTIONS=16 bench/e2e.sh local
#   EXTRA_INI=$'[kafka]\nlinger.ms = 0' bench/e2e.sh kafka    (config appended)
#
# local: `mailfleet run` (every worker in one process, local queue).
# kafka: a real 1-node Apache Kafka cluster (ops/kafka/cluster.py, the topics of
#        ops/k8s/base/topics.yaml) and one `mailfleet <worker>` process per
#        worker (ingest spools under state_dir).
# Each run starts fresh (new queue, stores, sink), sends 20 warm-up mails and
# waits for them (so consumer-group joins are not timed), then MSGS mails of
# ~10 KB (coded list of 3 recipients, 4 KB base64 attachment) over SESSIONS
# connections, closed loop (RATE=0) or paced at RATE msgs/s, and waits until
# the sink holds 3 x MSGS mails.  Per run: ingest msgs/s (loadgen), end-to-end
# msgs/s (messages whose 3 mails all reached the sink / time from the first
# connect to the last acceptance), 250->sink latency p50/p99, CPU seconds per
# 1,000 messages of the mailfleet processes (and of the Kafka broker, apart).  Medians over RUNS are printed last.
# State and stores live under ${TMPDIR:-/tmp} (the disk); sink dumps on /dev/shm.
set -euo pipefail
cd "$(dirname "$0")/.."
modes=${1:-both}
[ "$modes" = both ] && modes="local kafka"
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

out=$(mktemp -d "${TMPDIR:-/tmp}/mf-bench-e2e-XXXXXX")
shm=$(mktemp -d "$( [ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/mf-bench-e2e-XXXXXX")
chmod 755 "$out" "$shm"
pids=()
kafka_dirs=()
stop_all() {
  local p d
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  for d in "${kafka_dirs[@]}"; do $py ops/kafka/cluster.py stop "$d"; done
  kafka_dirs=()
}
cleanup() { stop_all; [ -n "${KEEP:-}" ] || rm -rf "$out" "$shm"; }
trap cleanup EXIT

free_port() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; return 1; }
wait_ready() { for _ in $(seq 300); do curl -fs -o /dev/null "http://127.0.0.1:$1/readyz" && return 0; sleep 0.1; done; echo "port $1 never ready" >&2; return 1; }
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
json() { $py -c "import json,sys; d=json.loads(sys.argv[1]); print(d['$2'])" "$1"; }
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
hz=$(getconf CLK_TCK)

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

one_run() {  # $1 mode, $2 run number -> one JSON line on stdout
  local mode=$1 i=$2 dir="$out/$1-$2" dump="$shm/$1-$2" bus ready=() wpids=() bpids=() mport
  mkdir -p "$dir" "$dump"
  chmod 777 "$dump"
  SMTP_PORT=$(free_port); SINK_PORT=$(free_port)
  smtp-sink -u nobody -m 1000 -d "$dump/%H%M%S." "127.0.0.1:$SINK_PORT" 1000 >"$dir/sink.log" 2>&1 &
  pids+=($!)
  wait_port "$SINK_PORT"
  if [ "$mode" = local ]; then
    bus="local:$dir/queue"
    common_ini "$dir" "$bus" >"$dir/bench.ini"
    "$BIN" run -c "$dir/bench.ini" 2>"$dir/mailfleet.log" &
    pids+=($!); wpids+=($!)
    ready=("$(ini_port "$dir/bench.ini" mailfleet http_listen)")
    mport=${ready[0]}
  else
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
  fi
  wait_port "$SMTP_PORT"
  for p in "${ready[@]}"; do wait_ready "$p"; done
  # warm-up: group joins, first files and connections, not timed
  "$build/bench/loadgen" "127.0.0.1:$SMTP_PORT" -s 4 -m 20 -t "warm$i" >/dev/null
  $py bench/sinkcount.py wait "$dump" 60 --timeout 120 --stall 60 >/dev/null ||
    { echo "$mode run $i: warm-up mails did not all arrive (see $dir)" >&2; KEEP=1; return 1; }
  local c0 c1 b0 b1 lg rep per0=() per=() k
  c0=$(cpu_ticks "${wpids[@]}")
  b0=$(cpu_ticks "${bpids[@]}")
  for k in "${wpids[@]}"; do per0+=("$(cpu_ticks "$k")"); done
  lg=$("$build/bench/loadgen" "127.0.0.1:$SMTP_PORT" -s "$SESSIONS" -m "$MSGS" -r "$RATE" -t "run$i" -o "$dir/records.tsv") ||
    echo "$mode run $i: loadgen: $lg" >&2
  # where the backlog sits when the last 250 went out (monitor samples every 1 s)
  sleep 1.2
  curl -fs "http://127.0.0.1:$mport/metrics" | grep '^mailfleet_topic_backlog_records' >"$dir/backlog.txt" || true
  $py bench/sinkcount.py wait "$dump" $((60 + 3 * MSGS)) --timeout 600 --stall 30 >/dev/null ||
    echo "$mode run $i: not every mail reached the sink" >&2
  c1=$(cpu_ticks "${wpids[@]}")
  b1=$(cpu_ticks "${bpids[@]}")
  for k in "${!wpids[@]}"; do per+=("$(( $(cpu_ticks "${wpids[$k]}") - per0[k] ))"); done
  rep=$($py bench/sinkcount.py report "$dump" "$dir/records.tsv" "run$i" "$(json "$lg" t0_us)")
  stop_all
  $py - "$lg" "$rep" "$(( c1 - c0 ))" "$hz" "$MSGS" "${per[*]}" "$dir/backlog.txt" "$(( b1 - b0 ))" <<'PY'
import json, sys
lg, rep = json.loads(sys.argv[1]), json.loads(sys.argv[2])
broker = int(sys.argv[8]) / int(sys.argv[4])
hz, msgs = int(sys.argv[4]), int(sys.argv[5])
cpu = int(sys.argv[3]) / hz
per = [int(x) / hz / msgs * 1000 for x in sys.argv[6].split()]
backlog = {}
for line in open(sys.argv[7]):
    import re
    m = re.match(r'mailfleet_topic_backlog_records\{topic="mailfleet\.(inbound|outbound)",group="(transform|send)"\} (\S+)', line)
    if m:
        backlog[m.group(1)] = int(float(m.group(3)))
names = ["ingest", "transform", "send", "links", "feedback", "monitor"] if len(per) > 1 else ["all"]
print(json.dumps({"ingest_msgs_per_s": lg["msgs_per_s"], "data_250_p99_ms": lg["p99_ms"], "ingest_errors": lg["errors"],
                  "e2e_msgs_per_s": rep["msgs_per_s"], "complete": rep["messages_complete"],
                  "duplicates": rep["duplicates"], "missing": rep["missing_deliveries"],
                  "lat_p50_ms": rep["p50_ms"], "lat_p99_ms": rep["p99_ms"], "lat_max_ms": rep["max_ms"],
                  "cpu_s_per_1000": round(cpu / msgs * 1000, 3),
                  "broker_cpu_s_per_1000": round(broker / msgs * 1000, 3),
                  "cpu_s_per_1000_by_worker": {n: round(c, 3) for n, c in zip(names, per)},
                  "backlog_after_last_250": backlog}))
PY
  [ -n "${KEEP:-}" ] || rm -rf "$dump" "$dir/queue" "$dir/store" "$dir/state"
}

echo "== e2e $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg); $MSGS msgs x $RUNS runs," \
     "$SESSIONS sessions, rate ${RATE} (0 = closed loop), send connections $SEND_CONNECTIONS"
bench/machine.sh "$out" | sed 's/^/  /'   # the limits beside the figures
for mode in $modes; do
  : >"$out/$mode.jsonl"
  for i in $(seq "$RUNS"); do
    one_run "$mode" "$i" >"$out/run.json"
    echo "$mode run $i: $(cat "$out/run.json")"
    cat "$out/run.json" >>"$out/$mode.jsonl"
  done
  printf '%s e2e (%s): ' "$mode" "$([ "$mode" = local ] && echo 'mailfleet run' || echo 'Apache Kafka + one process per worker')"
  for k in e2e_msgs_per_s lat_p50_ms lat_p99_ms ingest_msgs_per_s cpu_s_per_1000 broker_cpu_s_per_1000; do
    printf '%s %s  ' "$k" "$($py -c "import json,sys; [print(json.loads(l)['$k']) for l in open(sys.argv[1])]" "$out/$mode.jsonl" | median)"
  done
  printf 'complete %s/%s dups %s  (medians of %s)\n' \
    "$($py -c "import json,sys; print(min(json.loads(l)['complete'] for l in open(sys.argv[1])))" "$out/$mode.jsonl")" "$MSGS" \
    "$($py -c "import json,sys; print(sum(json.loads(l)['duplicates'] for l in open(sys.argv[1])))" "$out/$mode.jsonl")" "$RUNS"
done
