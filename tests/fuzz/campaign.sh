#!/usr/bin/env bash
# campaign — one libFuzzer campaign per harness, one after the other, and a
# table of what each did (for tests/fuzz/RESULTS.md).
#
#   tests/fuzz/campaign.sh SECONDS [HARNESS...]     (make fuzz-run FUZZ_TIME=3600)
#
# Needs `make fuzz`.  A campaign lasts until the harness has had SECONDS of
# CPU (user + system), not of wall time, so that a campaign on a machine
# shared with other work still gets its full time: it runs in chunks of at
# most FUZZ_CHUNK (900) wall seconds, each going on from the corpus the last
# one left.  The totals are kept in var/fuzz/<h>.state after each chunk,
# so a campaign that was stopped (a session or machine that ended) goes on
# where it was when run again with the same SECONDS; FUZZ_FRESH=1, or a
# campaign that had finished, starts from zero.  Each campaign starts from tests/fuzz/corpus/<h>/ and
# regress/<h>/ and keeps what it finds in var/fuzz/corpus/<h>/ (not
# committed; a later campaign goes on from it).  A crash stops that
# harness's campaign: the input is saved under var/fuzz/artifacts/<h>/,
# to be fixed and then kept as tests/fuzz/regress/<h>/<name>.  The full
# libFuzzer output of each chunk is var/fuzz/<h>.<chunk>.log.  FUZZ_NICE=19
# runs at low priority.  Never SIGSTOP a campaign: libFuzzer's per-input
# timeout is wall time, so a paused input reads as a 60-second hang.
#
# Columns: harness, wall seconds, CPU seconds, executions (all chunks),
# executions per CPU second, cov (edges covered) and ft (features) and
# corpus size (inputs) at the end, crashes in this campaign, chunks, and the
# last chunk's status ("DONE" or what stopped it).
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=${1:?usage: campaign.sh SECONDS [HARNESS...]}
shift
harnesses=("$@")
if [ ${#harnesses[@]} = 0 ]; then
  for b in build-fuzz/fuzz/*; do
    [ -x "$b" ] && [ -f "$b" ] && [[ "$b" != *.d ]] && harnesses+=("$(basename "$b")")
  done
fi
[ ${#harnesses[@]} -gt 0 ] || { echo "campaign: no harnesses (run make fuzz)" >&2; exit 1; }

printf '%-14s %6s %6s %12s %8s %7s %8s %7s %7s %6s  %s\n' harness wall_s cpu_s execs exec/cpu_s cov ft corpus crashes chunks status
worst=0
chunk_max=${FUZZ_CHUNK:-900}
for h in "${harnesses[@]}"; do
  bin=build-fuzz/fuzz/$h
  [ -x "$bin" ] || { echo "campaign: no $bin" >&2; worst=1; continue; }
  work=var/fuzz/corpus/$h art=var/fuzz/artifacts/$h
  mkdir -p "$work" "$art"
  dirs=("$work" tests/fuzz/corpus/"$h")
  [ -d tests/fuzz/regress/"$h" ] && dirs+=(tests/fuzz/regress/"$h")
  state=var/fuzz/$h.state
  cpu=0 execs=0 chunks=0 took=0 rc=0 log=
  [ "${FUZZ_FRESH:-0}" = 1 ] || [ ! -f "$state" ] || read -r _ cpu execs chunks took <"$state"
  if [ "$cpu" -ge "$secs" ] || [ "$chunks" = 0 ]; then
    cpu=0 execs=0 chunks=0 took=0
    touch "var/fuzz/$h.start"   # crashes of this campaign: artifacts newer than it
    rm -f var/fuzz/"$h".*.log
  fi
  while [ "$cpu" -lt "$secs" ] && [ "$rc" = 0 ]; do
    chunks=$((chunks + 1))
    log=var/fuzz/$h.$chunks.log
    left=$((secs - cpu))
    # a chunk's wall time: what is left of the CPU time, at most chunk_max
    wall=$(( left < chunk_max ? left : chunk_max ))
    chunk_start=$(date +%s)
    UBSAN_OPTIONS=print_stacktrace=1 /usr/bin/time -o "var/fuzz/$h.time" -f '%U %S' \
      nice -n "${FUZZ_NICE:-0}" "$bin" -max_total_time="$wall" -timeout=60 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art/" "${dirs[@]}" >"$log" 2>&1
    rc=$?
    cpu=$(( cpu + $(awk 'END { printf "%d", $1 + $2 }' "var/fuzz/$h.time" 2>/dev/null) ))
    n=$(grep -oE 'stat::number_of_executed_units: +[0-9]+' "$log" | grep -o '[0-9]*$')
    execs=$(( execs + ${n:-0} ))
    took=$(( took + $(date +%s) - chunk_start ))
    echo "$secs $cpu $execs $chunks $took" >"$state"
  done
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*')
  ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*')
  corp=$(grep -o 'corp: [0-9]*' <<<"$last" | grep -o '[0-9]*')
  crashes=$(find "$art" -type f -newer "var/fuzz/$h.start" | wc -l)
  status=$(awk '{print $2}' <<<"$last")
  if [ "$rc" != 0 ]; then
    status="rc=$rc: $(grep -m1 -E '^==[0-9]+==ERROR|^SUMMARY|deadly signal|ERROR: libFuzzer' "$log" | cut -c1-60)"
    worst=1
  fi
  printf '%-14s %6s %6s %12s %8s %7s %8s %7s %7s %6s  %s\n' "$h" "$took" "$cpu" "$execs" \
    "$(( cpu > 0 ? execs / cpu : 0 ))" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes" "$chunks" "$status"
done
exit $worst
