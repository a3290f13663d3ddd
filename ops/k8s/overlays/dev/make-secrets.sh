#!/usr/bin/env bash
# Makes the dev overlay's secrets: a random link/VERP token key, a random
# suppression-API token and the SMTP user `device` with a random password,
# into ops/k8s/overlays/dev/secrets/ (git-ignored), only when missing.
# mailfleet refuses to start with the published development values on a
# non-loopback listener, and pods listen on every address, so the overlay
# cannot ship fixed ones.  Prints the SMTP password once.
set -euo pipefail
d="$(cd "$(dirname "$0")" && pwd)/secrets"
[ -f "$d/users" ] && [ -f "$d/keys" ] && [ -f "$d/api-token" ] && exit 0
umask 077
mkdir -p "$d"
pass=$(openssl rand -hex 12)
printf 'device:%s\n' "$(openssl passwd -6 "$pass")" >"$d/users"
printf 'dev%s:%s\n' "$(date +%Y%m%d)" "$(openssl rand -hex 32)" >"$d/keys"
openssl rand -hex 24 >"$d/api-token"
echo "dev overlay secrets written to $d; SMTP user device, password $pass" >&2
