#!/usr/bin/env bash
# bench/run.sh — `make bench`: every bench of DESIGN.md §8, one after the
# other, each with RUNS (>= 5) runs and medians, the machine's limits first
# and last (the machine is shared: load changes during a run).
#   bench/run.sh [bench...]     benches: machine bus ingest transform memory send e2e e2e-paced (default all)
#   RUNS=5 INGEST_MSGS=20000 E2E_MSGS=5000 SEND_MSGS=2000 BUS_RECORDS=20000
#   E2E_RATE_LOCAL=250 E2E_RATE_KAFKA=60  (msgs/s of the paced e2e latency runs)
# The full log goes to bench/out/run-<UTC time>/, one file per bench;
# bench/RESULTS.md is written by hand from these logs.
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
[ "$RUNS" -ge 5 ] || echo "note: RUNS=$RUNS (< 5): not a result for RESULTS.md" >&2
benches=${*:-machine bus ingest transform memory send e2e e2e-paced}
log=bench/out/run-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$log"
make --no-print-directory all >/dev/null || exit 2
failed=()
run() {  # name command...
  local name=$1; shift
  echo "=== $name: $* ($(date -u +%H:%M:%SZ), load $(cut -d' ' -f1-3 /proc/loadavg))"
  if ! "$@" 2>&1 | tee "$log/$name.log"; then
    failed+=("$name")
  fi
}
for b in $benches; do
  case $b in
    machine)   run machine bench/machine.sh ;;
    bus)       run bus bench/bus.sh "${BUS_RECORDS:-20000}" "$RUNS" ;;
    ingest)    run ingest env MSGS="${INGEST_MSGS:-20000}" SESSIONS=50 SIZE=10240 RUNS="$RUNS" bench/ingest.sh ;;
    transform) run transform env RUNS="$RUNS" bench/transform.sh ;;
    memory)    run memory env RUNS="$RUNS" bench/memory.sh ;;
    send)      run send bench/send.sh "${SEND_MSGS:-2000}" "$RUNS" ;;
    e2e)       # mailfleet local and on Kafka, and the Postfix baseline, runs taking turns
               run e2e env MSGS="${E2E_MSGS:-5000}" RUNS="$RUNS" bench/e2e.sh all ;;
    e2e-paced) # latency below saturation: paced at about half the closed-loop rate
               run e2e-paced-local env MSGS=2500 RATE="${E2E_RATE_LOCAL:-250}" RUNS="$RUNS" bench/e2e.sh local
               run e2e-paced-kafka env MSGS=600 RATE="${E2E_RATE_KAFKA:-60}" RUNS="$RUNS" bench/e2e.sh kafka ;;
    *)         echo "unknown bench $b" >&2; failed+=("$b") ;;
  esac
done
[ "$benches" = machine ] || run machine-after bench/machine.sh
echo "logs: $log"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
