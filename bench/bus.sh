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
  # the mock picks its own port and prints the bootstrap list first
  "$build/tools/kafka_mock" --brokers 1 >"$dir/kafka_mock.out" 2>"$dir/kafka_mock.log" &
  mock_pid=$!
  for _ in $(seq 200); do
    grep -qE '^127\.0\.0\.1:[0-9]+' "$dir/kafka_mock.out" && break
    sleep 0.05
  done
  bootstrap=$(head -1 "$dir/kafka_mock.out")
  "$build/bench/bus" "kafka:$bootstrap" "$n" "$runs"
else
  echo "kafka: skipped ($build/tools/kafka_mock not built yet)"
fi
