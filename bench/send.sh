#!/usr/bin/env bash
# send worker throughput into Postfix's smtp-sink (no dump files, so the sink
# is not the bottleneck) over 1, 4 and 16 parallel connections, and the send
# process's CPU seconds per 1,000 messages.
#   bench/send.sh [N] [RUNS]     (defaults: 2000 messages of ~10 KB, 5 runs; medians)
# Each run: a fresh local queue holding N outbound records (one recipient
# each), `mailfleet send` started against the sink, timed from process start
# until the group has committed all N records (every message accepted by the
# sink, its Delivery event produced and the offset committed).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
runs=${2:-5}
build=${BUILD:-build}
py=/usr/bin/python3

make --no-print-directory "$build/mailfleet" "$build/tools/send_tool" >/dev/null

dir=$(mktemp -d "${TMPDIR:-/tmp}/mf-bench-send-XXXXXX")
chmod 755 "$dir"
sink_pid=""; send_pid=""
cleanup() {
  for p in $send_pid $sink_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# N records with ~10 KB bodies, generated once.
$py - "$n" >"$dir/records.tsv" <<'PY'
import json, os, sys, time, uuid
def uuid7():
    b = bytearray(os.urandom(16)); b[0:6] = int(time.time() * 1000).to_bytes(6, "big")
    b[6] = (b[6] & 0x0F) | 0x70; b[8] = (b[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(b)))
line = "sensor 17 reading 23.5C threshold 22.0C -- diagnostic text line padding\r\n"
body = line * (10240 // len(line))
for i in range(int(sys.argv[1])):
    oid, iid = uuid7(), uuid7()
    text = ("From: mailfleet <noreply@iot.localhost>\r\nTo: r%d@example.com\r\nSubject: alert %d\r\n"
            "Message-ID: <%s@iot.localhost>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n%s") % (i, i, oid, body)
    rec = {"schema": "mailfleet.outbound.v1", "id": oid, "inbound_id": iid,
           "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "from": "noreply@iot.localhost",
           "recipients": ["r%d@example.com" % i], "subject": "alert %d" % i,
           "body": {"encoding": "text", "data": text}, "links": [], "attempt": 0}
    print("%s\t%s" % (iid, json.dumps(rec, separators=(",", ":"))))
PY

echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cpus, $(uname -r); $n messages of ~10 KB, 1 recipient each, $runs runs"
hz=$(getconf CLK_TCK)
for conns in 1 4 16; do
  rates=(); cpus=()
  for run in $(seq "$runs"); do
    rm -rf "$dir/run"; mkdir -p "$dir/run"
    sport=$(free_port); mport=$(free_port)
    smtp-sink -u nobody -m 512 "127.0.0.1:$sport" 256 >"$dir/run/sink.log" 2>&1 &
    sink_pid=$!
    wait_port "$sport"
    cat >"$dir/run/bench.ini" <<INI
[mailfleet]
bus = local:$dir/run/queue
state_dir = $dir/run/state
token_keys = bench:$(printf '6d66%.0s' $(seq 16))
log_level = warn
[send]
metrics_listen = 127.0.0.1:$mport
transport = smtp://127.0.0.1:$sport
smtp_starttls = off
connections = $conns
per_domain = $conns
batch_max = 256
INI
    "$build/tools/send_tool" produce "local:$dir/run/queue" mailfleet.outbound <"$dir/records.tsv" >/dev/null
    t0=$($py -c 'import time; print(time.time())')
    "$build/mailfleet" send -c "$dir/run/bench.ini" 2>"$dir/run/send.log" &
    send_pid=$!
    while :; do
      c=$("$build/tools/send_tool" committed "local:$dir/run/queue" mailfleet.outbound send 2>/dev/null || echo 0)
      [ "$c" -ge "$n" ] && break
      kill -0 "$send_pid" 2>/dev/null || { echo "send exited early"; cat "$dir/run/send.log"; exit 1; }
      sleep 0.05
    done
    t1=$($py -c 'import time; print(time.time())')
    read -r ut st < <(awk '{print $14, $15}' "/proc/$send_pid/stat")
    kill "$send_pid"; wait "$send_pid" 2>/dev/null || true; send_pid=""
    kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true; sink_pid=""
    rates+=("$($py -c "print('%.0f' % ($n / ($t1 - $t0)))")")
    cpus+=("$($py -c "print('%.3f' % (($ut + $st) / $hz / $n * 1000))")")
  done
  med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
  printf 'send -> smtp-sink  connections=%-2d  msgs/s median %6s  (runs: %s)  cpu s/1000 msgs median %s (runs: %s)\n' \
    "$conns" "$(med "${rates[@]}")" "${rates[*]}" "$(med "${cpus[@]}")" "${cpus[*]}"
done
