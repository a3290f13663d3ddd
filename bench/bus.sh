#!/usr/bin/env bash
# Bus throughput on the local queue and, when Apache Kafka is installed
# (ops/deps.sh kafka), on a real 1-node Kafka cluster (ops/kafka/cluster.py,
# topics created on first use: fresh ones per run); the disk's fsync latency
# is printed first, since a local commit cannot beat it.
#   bench/bus.sh [N] [RUNS]      (defaults 20000 records per shape, 5 runs)
# Set BUS_BENCH_DIR to measure another file system (default: a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
runs=${2:-5}
build=${BUILD:-build}

make --no-print-directory "$build/bench/bus" >/dev/null

dir=$(mktemp -d "${BUS_BENCH_DIR:-${TMPDIR:-/tmp}}/mf-bench-bus-XXXXXX")
cleanup() {
  [ ! -d "$dir/kafka" ] || python3 ops/kafka/cluster.py stop "$dir/kafka"
  rm -rf "$dir"
}
trap cleanup EXIT

echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cpus, $(uname -r)"
"$build/bench/bus" fsync "$dir"
"$build/bench/bus" "local:$dir/queue" "$n" "$runs"

kafka_home=var/kafka-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' ops/kafka/pom.xml)
if [ -f "$kafka_home/installed" ]; then
  bootstrap=$(python3 ops/kafka/cluster.py start "$dir/kafka" --auto-create)
  "$build/bench/bus" "kafka:$bootstrap" "$n" "$runs"
else
  echo "kafka: skipped (Apache Kafka not installed: ops/deps.sh kafka)"
fi
