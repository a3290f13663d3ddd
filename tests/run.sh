#!/usr/bin/env bash
# Runs every test and ends with one summary line: "tests: N passed, M failed",
# followed by ", K skipped" when tests were skipped (never counted as passed).
#   unit:        build/tests/test_* (cmocka), then the same under ASan+UBSan
#   integration: tests/integration/test_*.py (real processes on 127.0.0.1,
#                Debian's /usr/bin/python3 so python3-botocore etc. import)
#   tsan:        test_startstop against build-tsan/mailfleet (`make tsan`)
#   fuzz:        build-fuzz/fuzz/* (`make fuzz`): each harness replays its
#                corpus and regression inputs, then fuzzes for FUZZ_SECONDS
# TESTS_ONLY=unit|asan|integration|tsan|fuzz narrows; TESTS_MATCH=substr filters files.
set -uo pipefail
cd "$(dirname "$0")/.."
only=${TESTS_ONLY:-all}
match=${TESTS_MATCH:-}
pass=0; fail=0; skip=0; failed_names=()
log=build/test-logs; mkdir -p "$log"

run_cmocka() {  # $1 binary, $2 label
  local bin=$1 label=$2 out="$log/$(basename "$1").$2.log"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    timeout 300 "$bin" >"$out" 2>&1
  local rc=$?
  local p f k
  p=$(grep -Eo '\[  PASSED  \] [0-9]+' "$out" | awk '{s+=$4} END{print s+0}')
  f=$(grep -Eo '\[  FAILED  \] [0-9]+ test' "$out" | awk '{s+=$4} END{print s+0}')
  k=$(grep -Eo '\[  SKIPPED \] [0-9]+ test' "$out" | awk '{s+=$4} END{print s+0}')
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + k))
  if [ "$f" != 0 ]; then failed_names+=("$label $(basename "$bin")"); echo "FAIL $label $(basename "$bin") (see $out)"; tail -30 "$out"; else echo "ok   $label $(basename "$bin"): $p"; fi
}

# Sets ran, bad (failures + errors) and skipped from a `python3 -m unittest`
# log: "Ran N tests", then "OK", "OK (skipped=K)" or
# "FAILED (failures=F, errors=E, skipped=K, expected failures=X)".
unittest_counts() {  # $1 log, $2 exit status
  local summary
  ran=$(grep -Eo '^Ran [0-9]+ test' "$1" | awk '{print $2}'); ran=${ran:-0}
  summary=$(grep -E '^(OK|FAILED)( \(.*\))?$' "$1" | tail -1)
  bad=$(grep -Eo '(failures|errors|unexpected successes)=[0-9]+' <<<"$summary" | grep -Eo '[0-9]+' | awk '{s+=$1} END{print s+0}')
  skipped=$(grep -Eo 'skipped=[0-9]+' <<<"$summary" | grep -Eo '[0-9]+' | awk '{s+=$1} END{print s+0}')
  if [ "$2" != 0 ] && [ "$bad" = 0 ]; then bad=1; fi
}

if [ "$only" = all ] || [ "$only" = unit ]; then
  for t in build/tests/test_*; do
    [ -x "$t" ] || continue; [[ "$t" == *.d ]] && continue
    [ -n "$match" ] && [[ "$t" != *"$match"* ]] && continue
    run_cmocka "$t" unit
  done
fi
if [ "$only" = all ] || [ "$only" = asan ]; then
  for t in build-asan/tests/test_*; do
    [ -x "$t" ] || continue; [[ "$t" == *.d ]] && continue
    [ -n "$match" ] && [[ "$t" != *"$match"* ]] && continue
    run_cmocka "$t" asan
  done
fi
if [ "$only" = all ] || [ "$only" = integration ]; then
  for t in tests/integration/test_*.py; do
    [ -f "$t" ] || continue
    [ -n "$match" ] && [[ "$t" != *"$match"* ]] && continue
    out="$log/$(basename "$t").log"
    start=$(date +%s)
    # start/stop rounds: a few here, 200 in the ASan pass below
    (cd tests/integration && MAILFLEET_STARTSTOP_ROUNDS=${MAILFLEET_STARTSTOP_ROUNDS:-20} \
      timeout 1200 /usr/bin/python3 -m unittest -v "$(basename "$t" .py)") >"$out" 2>&1
    rc=$?
    unittest_counts "$out" "$rc"
    pass=$((pass + ran - bad - skipped)); fail=$((fail + bad)); skip=$((skip + skipped))
    if [ "$bad" != 0 ]; then failed_names+=("integration $(basename "$t")"); echo "FAIL integration $(basename "$t") (see $out)"; tail -60 "$out"; else echo "ok   integration $(basename "$t"): $((ran - skipped))$([ "$skipped" -gt 0 ] && echo " (+$skipped skipped)") ($(( $(date +%s) - start ))s)"; fi
  done
fi

# A few integration files again against the ASan/UBSan build of the binary
# and tools: sanitizer reports go to files, and any report fails the file.
asan_files=${ASAN_INTEGRATION-test_http test_feedback test_links test_ingest test_startstop}
if { [ "$only" = all ] || [ "$only" = integration ]; } && [ -x build-asan/mailfleet ] && [ -n "$asan_files" ]; then
  for f in $asan_files; do
    t=tests/integration/$f.py
    [ -f "$t" ] || continue
    [ -n "$match" ] && [[ "$t" != *"$match"* ]] && continue
    rep=$(mktemp -d /tmp/mf-asan-reports.XXXXXX)
    out="$log/$f.asan.log"
    (cd tests/integration && MAILFLEET_BUILD="$PWD/../../build-asan" MAILFLEET_STARTSTOP_ROUNDS=200 \
      ASAN_OPTIONS="detect_leaks=1:log_path=$rep/asan" UBSAN_OPTIONS="print_stacktrace=1:log_path=$rep/ubsan" \
      timeout 1200 /usr/bin/python3 -m unittest -v "$f") >"$out" 2>&1
    rc=$?
    unittest_counts "$out" "$rc"
    if [ -n "$(ls -A "$rep")" ]; then
      echo "sanitizer reports from $f:"; cat "$rep"/* | head -80
      [ "$bad" = 0 ] && bad=1
    fi
    rm -rf "$rep"
    pass=$((pass + ran - bad - skipped)); fail=$((fail + bad)); skip=$((skip + skipped))
    if [ "$bad" != 0 ]; then failed_names+=("asan-integration $f"); echo "FAIL asan-integration $f (see $out)"; tail -40 "$out"; else echo "ok   asan-integration $f: $((ran - skipped))$([ "$skipped" -gt 0 ] && echo " (+$skipped skipped)")"; fi
  done
fi

# The workers on the common batch loop again with one record per batch
# (MAILFLEET__MAILFLEET__BATCH_MAX overrides every process's config): batch
# size 1 must behave like the default 64.
batch1_files=${BATCH1_INTEGRATION-test_transform test_send test_feedback test_e2e test_chaos test_ingest_load}
if { [ "$only" = all ] || [ "$only" = integration ]; } && [ -n "$batch1_files" ]; then
  for f in $batch1_files; do
    t=tests/integration/$f.py
    [ -f "$t" ] || continue
    [ -n "$match" ] && [[ "$t" != *"$match"* ]] && continue
    out="$log/$f.batch1.log"
    (cd tests/integration && MAILFLEET__MAILFLEET__BATCH_MAX=1 \
      timeout 1200 /usr/bin/python3 -m unittest -v "$f") >"$out" 2>&1
    unittest_counts "$out" $?
    pass=$((pass + ran - bad - skipped)); fail=$((fail + bad)); skip=$((skip + skipped))
    if [ "$bad" != 0 ]; then failed_names+=("batch1-integration $f"); echo "FAIL batch1-integration $f (see $out)"; tail -40 "$out"; else echo "ok   batch1-integration $f: $((ran - skipped))"; fi
  done
fi

# `mailfleet run` started and stopped under ThreadSanitizer (slower: fewer
# rounds).  Any report fails it; tests/tsan.supp may only name third-party code.
if { [ "$only" = all ] || [ "$only" = integration ] || [ "$only" = tsan ]; } && [ -x build-tsan/mailfleet ] &&
   { [ -z "$match" ] || [[ test_startstop == *"$match"* ]]; }; then
  rep=$(mktemp -d /tmp/mf-tsan-reports.XXXXXX)
  out="$log/test_startstop.tsan.log"
  (cd tests/integration && MAILFLEET_BUILD="$PWD/../../build-tsan" MAILFLEET_STARTSTOP_ROUNDS=20 \
    TSAN_OPTIONS="log_path=$rep/tsan:suppressions=$PWD/../tsan.supp:halt_on_error=0" \
    timeout 1200 /usr/bin/python3 -m unittest -v test_startstop.StartStopTest) >"$out" 2>&1
  unittest_counts "$out" $?
  if [ -n "$(ls -A "$rep")" ]; then
    echo "ThreadSanitizer reports:"; cat "$rep"/* | head -120
    [ "$bad" = 0 ] && bad=1
  fi
  rm -rf "$rep"
  pass=$((pass + ran - bad - skipped)); fail=$((fail + bad)); skip=$((skip + skipped))
  if [ "$bad" != 0 ]; then failed_names+=("tsan-integration test_startstop"); echo "FAIL tsan-integration test_startstop (see $out)"; tail -40 "$out"; else echo "ok   tsan-integration test_startstop: $ran"; fi
fi

# libFuzzer harnesses.  Each one first replays every file of
# tests/fuzz/corpus/<h>/ and tests/fuzz/regress/<h>/ (the crashes found
# before: they must stay fixed), then fuzzes from that corpus for
# FUZZ_SECONDS.  The seed is libFuzzer's own (random, printed in the log):
# a crash found here is a real bug, never flakiness, and the log names the
# input saved under build/fuzz-artifacts/ to turn into a regression file.
fuzz_seconds=${FUZZ_SECONDS:-10}
run_fuzz() {  # $1 harness name
  local h=$1 bin=build-fuzz/fuzz/$1 out="$log/fuzz_$1.log" dirs=() files=() work rc
  for d in tests/fuzz/corpus/$h tests/fuzz/regress/$h; do
    [ -d "$d" ] && dirs+=("$d") && files+=("$d"/*)
  done
  local opts=(-timeout=60 -rss_limit_mb=2048)
  mkdir -p build/fuzz-artifacts
  UBSAN_OPTIONS=print_stacktrace=1 timeout 600 "$bin" "${opts[@]}" -artifact_prefix="build/fuzz-artifacts/$h-" \
    "${files[@]}" >"$out.replay" 2>&1
  rc=$?
  if [ "$rc" != 0 ]; then
    fail=$((fail + 1)); failed_names+=("fuzz-replay $h")
    echo "FAIL fuzz-replay $h (see $out.replay)"; tail -40 "$out.replay"
    return
  fi
  pass=$((pass + 1)); echo "ok   fuzz-replay $h: ${#files[@]} inputs"
  work=$(mktemp -d /tmp/mf-fuzz-corpus.XXXXXX)   # new inputs go here, not into the repository
  UBSAN_OPTIONS=print_stacktrace=1 timeout $((fuzz_seconds + 300)) "$bin" "${opts[@]}" \
    -max_total_time="$fuzz_seconds" -print_final_stats=1 -artifact_prefix="build/fuzz-artifacts/$h-" \
    "$work" "${dirs[@]}" >"$out" 2>&1
  rc=$?
  rm -rf "$work"
  if [ "$rc" != 0 ]; then
    fail=$((fail + 1)); failed_names+=("fuzz $h")
    echo "FAIL fuzz $h (see $out; $(grep -m1 -o 'Seed: [0-9]*' "$out"))"; tail -60 "$out"
    return
  fi
  pass=$((pass + 1))
  echo "ok   fuzz $h: ${fuzz_seconds}s, $(grep -o 'stat::number_of_executed_units: [0-9]*' "$out" | grep -o '[0-9]*$') runs," \
       "$(grep -E '^#[0-9]+' "$out" | tail -1 | grep -o 'cov: [0-9]* ft: [0-9]*')"
}
if { [ "$only" = all ] || [ "$only" = fuzz ]; } && [ -d build-fuzz/fuzz ]; then
  for bin in build-fuzz/fuzz/*; do
    [ -x "$bin" ] && [ -f "$bin" ] || continue; [[ "$bin" == *.d ]] && continue
    h=$(basename "$bin")
    [ -n "$match" ] && [[ "fuzz_$h" != *"$match"* ]] && continue
    run_fuzz "$h"
  done
fi

for n in "${failed_names[@]}"; do echo "failed: $n"; done
if [ "$skip" -gt 0 ]; then echo "tests: $pass passed, $fail failed, $skip skipped"; else echo "tests: $pass passed, $fail failed"; fi
[ "$fail" = 0 ] && [ "$pass" -gt 0 ]
