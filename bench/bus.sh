#!/usr/bin/env bash
# Bus throughput on the local queue and, when the librdkafka mock tool is
# built (build/tools/kafka_mock), on Kafka; the disk's fsync latency is
# printed first, since a local commit cannot beat it.
#   bench/bus.sh [N] [RUNS]      (defaults 20000 records per shape, 5 runs)
# Set BUS_BENCH_DIR to measure another file system (default: a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
runs=${2:-5}
build=${BUILD:-build}

make --no-print-directory "$build/bench/bus" >/dev/null

dir=$(mktemp -d "${BUS_BENCH_DIR:-${TMPDIR:-/tmp}}/mf-bench-bus-XXXXXX")
mock_pid=""
cleanup() {
  if [ -n "$mock_pid" ]; then kill "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cpus, $(uname -r)"
"$build/bench/bus" fsync "$dir"
"$build/bench/bus" "local:$dir/queue" "$n" "$runs"

if [ -x "$build/tools/kafka_mock" ]; then
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$build/tools/kafka_mock" --brokers 1 --port "$port" >"$dir/kafka_mock.log" 2>&1 &
  mock_pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  "$build/bench/bus" "kafka:127.0.0.1:$port" "$n" "$runs"
else
  echo "kafka: skipped ($build/tools/kafka_mock not built yet)"
fi
