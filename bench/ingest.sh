#!/usr/bin/env bash
# bench/ingest.sh — durable ingest, side by side in one run (DESIGN.md §8):
#   mailfleet ingest (local queue + file store, 250 only after fsync + commit)
#   a private Postfix smtpd on loopback (defaults, delivering to discard)
# Throughput: smtp-source -s SESSIONS -m MSGS -l SIZE, RUNS times each,
# alternating servers; median msgs/s.  Latency: bench/smtp_latency.py
# (DATA->250 p50/p90/p99, LAT_SESSIONS connections).  Also prints the fsync
# floor of the disk under bench/out.
#   MSGS=20000 SESSIONS=50 SIZE=10240 RUNS=5 bench/ingest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MSGS=${MSGS:-5000}
SESSIONS=${SESSIONS:-50}
SIZE=${SIZE:-10240}
RUNS=${RUNS:-5}
LAT_SESSIONS=${LAT_SESSIONS:-8}
LAT_MSGS=${LAT_MSGS:-250}
BIN=${MAILFLEET:-build/mailfleet}
[ -x "$BIN" ] || { echo "build first: make" >&2; exit 2; }
for t in smtp-source postfix python3; do command -v $t >/dev/null || { echo "missing $t (make deps-test)" >&2; exit 2; }; done

out=$(pwd)/bench/out/ingest-$$
mkdir -p "$out"
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MF_PORT=$(free_port); MF_HTTP=$(free_port); PF_PORT=$(free_port)

# ---- mailfleet ingest ---------------------------------------------------------
cat >"$out/ingest.ini" <<EOF
[mailfleet]
bus = local:$out/mf/queue
store_incoming = file:$out/mf/store
state_dir = $out/mf/state
log_level = warn
[ingest]
listen = 127.0.0.1:$MF_PORT
listen_tls =
metrics_listen = 127.0.0.1:$MF_HTTP
hostname = bench.localhost
tls_cert = $out/mf/tls/cert.pem
tls_key = $out/mf/tls/key.pem
tls_generate = true
users_file = $out/mf/users
max_connections_per_ip = 500
dedupe_ttl = ${DEDUPE_TTL:-10m}
[rule.capture]
recipients = alerts@iot.localhost
action = capture
EOF
"$BIN" ingest -c "$out/ingest.ini" 2>"$out/ingest.log" &
MF_PID=$!

# ---- private Postfix (DESIGN.md §7 "Private Postfix") -----------------------
pf=$out/postfix
mkdir -p "$pf/queue" "$pf/data"
chown postfix "$pf/data" 2>/dev/null || true
cp /etc/postfix/master.cf "$pf/master.cf"
sed -i -E "s/^smtp[[:space:]]+inet[[:space:]].*smtpd\$/127.0.0.1:$PF_PORT inet n - n - - smtpd/" "$pf/master.cf"
cat >"$pf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
meta_directory = /etc/postfix
mail_owner = postfix
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = bench.localhost
mydestination = iot.localhost
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
default_transport = discard
local_transport = discard
relay_transport = discard
smtpd_recipient_restrictions = permit_mynetworks, reject
maillog_file = $pf/maillog
maillog_file_prefixes = /var, $pf
EOF
PF_STARTED=0
cleanup() {
  kill "$MF_PID" 2>/dev/null || true
  wait "$MF_PID" 2>/dev/null || true
  [ "$PF_STARTED" = 1 ] && postfix -c "$pf" stop >/dev/null 2>&1 || true
  # the queues and stores are large; logs and configs stay for reading
  [ -n "${KEEP:-}" ] || rm -rf "$out/mf/queue" "$out/mf/store" "$out/postfix/queue"
}
trap cleanup EXIT
if ! postfix -c "$pf" start >"$out/postfix-start.log" 2>&1; then
  script -qc "postfix -c $pf check" /dev/null | tail -5 >&2
  echo "postfix did not start" >&2
  exit 1
fi
PF_STARTED=1

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing on port $1" >&2; exit 1
}
wait_port "$MF_PORT"; wait_port "$PF_PORT"

# ---- physical floor ------------------------------------------------------------
/usr/bin/python3 - "$out" <<'EOF'
import os, sys, time
p = os.path.join(sys.argv[1], "fsync.probe")
fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
ts = []
for _ in range(200):
    os.write(fd, b"x" * 10240)
    t = time.perf_counter(); os.fsync(fd); ts.append(time.perf_counter() - t)
os.close(fd); os.unlink(p)
ts.sort()
print("fsync floor here: p50 %.2f ms, p99 %.2f ms (10 KB appends); cores: %d" % (
    ts[100] * 1000, ts[198] * 1000, os.cpu_count()))
EOF

# ---- throughput ----------------------------------------------------------------
rate() {  # $1 port -> msgs/s of one smtp-source run
  local t0 t1
  t0=$(date +%s.%N)
  smtp-source -s "$SESSIONS" -m "$MSGS" -l "$SIZE" -f bench@example.com -t alerts@iot.localhost \
    "127.0.0.1:$1" >"$out/smtp-source.out" 2>&1 || { cat "$out/smtp-source.out" >&2; return 1; }
  t1=$(date +%s.%N)
  /usr/bin/python3 -c "print(round($MSGS / ($t1 - $t0), 1))"
}
median() { sort -n | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mf_rates=(); pf_rates=()
echo "throughput: smtp-source -s $SESSIONS -m $MSGS -l $SIZE, $RUNS runs each, alternating"
for i in $(seq "$RUNS"); do
  mf_rates+=("$(rate "$MF_PORT")")
  pf_rates+=("$(rate "$PF_PORT")")
  echo "  run $i: mailfleet ${mf_rates[-1]} msgs/s, postfix ${pf_rates[-1]} msgs/s"
done
mf_med=$(printf '%s\n' "${mf_rates[@]}" | median)
pf_med=$(printf '%s\n' "${pf_rates[@]}" | median)

# ---- latency ---------------------------------------------------------------------
echo "latency: bench/smtp_latency.py, $LAT_SESSIONS sessions x $LAT_MSGS messages of $SIZE bytes"
mf_lat=$(/usr/bin/python3 bench/smtp_latency.py "127.0.0.1:$MF_PORT" --sessions "$LAT_SESSIONS" --messages "$LAT_MSGS" --size "$SIZE")
pf_lat=$(/usr/bin/python3 bench/smtp_latency.py "127.0.0.1:$PF_PORT" --sessions "$LAT_SESSIONS" --messages "$LAT_MSGS" --size "$SIZE")
echo "  mailfleet: $mf_lat"
echo "  postfix:   $pf_lat"

ratio=$(/usr/bin/python3 -c "print(round($mf_med / $pf_med, 2) if $pf_med else 'n/a')")
printf '\n%-10s %12s %10s %10s %10s\n' server "msgs/s(med)" "p50 ms" "p90 ms" "p99 ms"
for s in mailfleet postfix; do
  if [ $s = mailfleet ]; then med=$mf_med; lat=$mf_lat; else med=$pf_med; lat=$pf_lat; fi
  /usr/bin/python3 -c "import json,sys; d=json.loads(sys.argv[2]); print('%-10s %12s %10s %10s %10s' % (sys.argv[1], sys.argv[3], d['p50_ms'], d['p90_ms'], d['p99_ms']))" "$s" "$lat" "$med"
done
echo "mailfleet / postfix throughput: ${ratio}x (target >= 4x; p99 DATA->250 target <= 20 ms)"
grep -E '"level":"(error)"' "$out/ingest.log" | head -5 || true
