#!/usr/bin/env bash
# bench/memory.sh — DESIGN.md §8 "memory": one message with a 40 MB attachment
# (~55 MB of MIME) through the transform core (tests/tools/transform_tool),
# peak RSS from /usr/bin/time -v, median of RUNS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
TOOL=${BUILD:-build}/tools/transform_tool
[ -x "$TOOL" ] || make --no-print-directory "$TOOL" >/dev/null
work=$(mktemp -d "${TMPDIR:-/tmp}/mf-bench-memory-XXXXXX")
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 - "$work/big.eml" <<'PY'
import base64, os, sys
data = os.urandom(40 * 1024 * 1024)
b64 = base64.encodebytes(data).replace(b"\n", b"\r\n")
with open(sys.argv[1], "wb") as f:
    f.write(b"From: a@b.example\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
            b":Email_Rxers_Code:[a@x.example, b@y.example, c@z.example]:Email_Rxers_Code:\r\n--B\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"\r\n--B--\r\n")
PY
rss=()
for _ in $(seq "$RUNS"); do
  rm -rf "$work/att" && mkdir "$work/att"
  MAILFLEET__TRANSFORM__TMP_DIR="$work" /usr/bin/time -v "$TOOL" --store "$work/att" \
    --key "bench:$(printf '6d66%.0s' $(seq 16))" "$work/big.eml" >/dev/null 2>"$work/time.txt"
  rss+=("$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$work/time.txt")")
done
med=$(printf '%s\n' "${rss[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
echo "memory: $(($(stat -c %s "$work/big.eml") / 1048576)) MB message (40 MB attachment) through transform:" \
     "peak RSS median ${med} KB (runs: ${rss[*]}); target <= 32768 KB"
