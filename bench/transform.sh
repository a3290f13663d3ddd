#!/usr/bin/env bash
# bench/transform.sh — the two transform workloads of DESIGN.md §8, C core
# (tests/tools/transform_tool --repeat) beside the reference's Python logic
# (bench/transform_ref.py, stdlib email) on the same corpus.  Medians of
# RUNS runs (default 5).  Stores go to /dev/shm when there is one, so the
# numbers are CPU (parse, decode, hash, build), not fsync.
#
#   big:   1 MB base64 attachment per mail          -> MB/s of MIME input
#   small: 10 KB mail, one 4 KB attachment, 3 rcpts -> msgs/s
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
TOOL=build/tools/transform_tool
[ -x "$TOOL" ] || make --no-print-directory "$TOOL" >/dev/null
base=$( [ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}" )
work=$(mktemp -d "$base/mf-bench-transform.XXXXXX")
trap 'rm -rf "$work"' EXIT

/usr/bin/python3 - "$work" <<'PY'
import base64, os, random, sys
w = sys.argv[1]
def mail(i, att_len, text_len):
    rnd = random.Random(i)
    att = rnd.randbytes(att_len)
    text = ("Sensor %d reading over threshold.\r\n" % i) * max(1, text_len // 36)
    b64 = base64.encodebytes(att).replace(b"\n", b"\r\n")
    return (("From: Sensor <s%d@devices.example>\r\nTo: alerts@iot.localhost\r\nSubject: alert %d\r\n"
             "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n\r\n%s"
             ":Email_Rxers_Code:[ops@x.example, oncall@y.example, lead@z.example]:Email_Rxers_Code:\r\n"
             "--b%d\r\nContent-Type: application/octet-stream; name=\"diag-%d.bin\"\r\n"
             "Content-Disposition: attachment; filename=\"diag-%d.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
            % (i, i, i, i, text, i, i, i)).encode() + b64 + ("\r\n--b%d--\r\n" % i).encode()
for kind, n, att, text in (("big", 20, 1 << 20, 200), ("small", 200, 4096, 4000)):
    os.makedirs(os.path.join(w, kind))
    for i in range(n):
        with open(os.path.join(w, kind, "m%03d.eml" % i), "wb") as f:
            f.write(mail(i, att, text))
PY

median() { sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
field() { /usr/bin/python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }

run_c() {   # kind repeat field
  for _ in $(seq "$RUNS"); do
    rm -rf "$work/store" && mkdir "$work/store"
    MAILFLEET__TRANSFORM__TMP_DIR="$work" "$TOOL" --store "$work/store" --repeat "$2" "$work/$1"/*.eml | field "$3"
  done | median
}
run_py() {
  for _ in $(seq "$RUNS"); do
    rm -rf "$work/pyout" && mkdir "$work/pyout"
    /usr/bin/python3 bench/transform_ref.py "$work/pyout" "$2" "$work/$1"/*.eml | field "$3"
  done | median
}

echo "transform bench: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), store in $base, median of $RUNS"
size_big=$(du -cb "$work"/big/*.eml | tail -1 | cut -f1)
size_small=$(( $(du -cb "$work"/small/*.eml | tail -1 | cut -f1) / 200 ))
echo "corpus: big 20 mails, $((size_big / 20)) bytes each; small 200 mails, ~$size_small bytes each"
c_big=$(run_c big 5 mb_per_s); py_big=$(run_py big 1 mb_per_s)
c_small=$(run_c small 25 msgs_per_s); py_small=$(run_py small 2 msgs_per_s)
c_small_mb=$(run_c small 25 mb_per_s)
hwm=$("$TOOL" --store "$work/store" --repeat 1 "$work"/big/*.eml | field vm_hwm_kb)
printf '%-34s %12s %12s %8s\n' workload "C (1 core)" "Python ref" ratio
printf '%-34s %12s %12s %8s\n' "big: 1 MB attachment, MB/s" "$c_big" "$py_big" "$(awk "BEGIN{printf \"%.1fx\", $c_big/$py_big}")"
printf '%-34s %12s %12s %8s\n' "small: 10 KB + 4 KB att, msgs/s" "$c_small" "$py_small" "$(awk "BEGIN{printf \"%.1fx\", $c_small/$py_small}")"
echo "small in MB/s (C): $c_small_mb; peak RSS of the C run over the big corpus: ${hwm} KB"
openssl speed -seconds 1 -evp sha256 2>/dev/null | awk '/^sha256/ {print "this CPU: sha256 " $(NF) " per s (16 KB blocks)"}' || true
