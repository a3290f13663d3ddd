#!/usr/bin/env bash
# bench/machine.sh — the physical limits the benches are read against
# (DESIGN.md §8): CPU and load, fsync latency of the disk, loopback TCP
# throughput, SHA-256 and base64 speed of this CPU.  ~10 s.
#   bench/machine.sh [DIR]     DIR: file system for the fsync probe (default ${TMPDIR:-/tmp})
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
py=/usr/bin/python3
dir=${1:-${TMPDIR:-/tmp}}
[ -x "$build/bench/bus" ] || make --no-print-directory "$build/bench/bus" >/dev/null
work=$(mktemp -d "$dir/mf-bench-machine-XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) cpus ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), " \
     "$(awk '/MemTotal/ {printf "%.1f GB", $2/1048576}' /proc/meminfo), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
# 200 x (4 KB pwrite + fdatasync), median
"$build/bench/bus" fsync "$work" | sed 's/^disk:/fsync:/'

# loopback TCP: one connection, 1 MB writes, 2 GB, reader discards
$py - <<'PY'
import socket, threading, time
N, CH = 2 << 30, 1 << 20
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
def sink():
    c, _ = srv.accept(); buf = bytearray(CH); v = memoryview(buf)
    while c.recv_into(v):
        pass
t = threading.Thread(target=sink); t.start()
cl = socket.create_connection(srv.getsockname()); data = b"x" * CH
t0 = time.perf_counter()
for _ in range(N // CH):
    cl.sendall(data)
cl.close(); t.join()
dt = time.perf_counter() - t0
print("loopback tcp: %.0f MB/s (one connection, 1 MB writes, %d MB)" % (N / dt / 1e6, N >> 20))
PY

# SHA-256: openssl's EVP, 16 KB blocks (the last column)
openssl speed -seconds 1 -evp sha256 2>/dev/null |
  awk '/^sha256/ {v=$NF; sub(/k$/,"",v); printf "sha256: %.0f MB/s (openssl speed -evp sha256, 16 KB blocks)\n", v*1000/1e6}'

# base64: openssl's encoder/decoder over 64 MB of random bytes
head -c 64M /dev/urandom >"$work/raw"
openssl base64 -e <"$work/raw" >"$work/b64"
t0=$(date +%s.%N); openssl base64 -e <"$work/raw" >/dev/null; t1=$(date +%s.%N)
openssl base64 -d <"$work/b64" >/dev/null; t2=$(date +%s.%N)
b64=$(stat -c %s "$work/b64")
awk -v r=67108864 -v b="$b64" -v t0="$t0" -v t1="$t1" -v t2="$t2" \
  'BEGIN {printf "base64: encode %.0f MB/s of input, decode %.0f MB/s of base64 input (openssl base64, 64 MB)\n", r/(t1-t0)/1e6, b/(t2-t1)/1e6}'
