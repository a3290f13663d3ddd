#!/usr/bin/env bash
# `make run`: the embedded default of DESIGN.md §10 — every worker in one
# process on 127.0.0.1, local queue, file stores, delivery into var/outbox/.
# First run creates var/ (a self-signed certificate, the dev SMTP user).
# Ctrl-C drains and exits; the next run resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/mailfleet
cfg=ops/mailfleet.dev.ini
mkdir -p var/tls var/outbox

if [ ! -s var/tls/cert.pem ] || [ ! -s var/tls/key.pem ]; then
  echo "mailfleet: creating a self-signed certificate in var/tls/ (development only)"
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout var/tls/key.pem -out var/tls/cert.pem 2>/dev/null
  chmod 600 var/tls/key.pem
fi
if [ ! -s var/users ] && { "$bin" 2>&1 || true; } | grep -q '^  users'; then
  echo "mailfleet: adding the dev SMTP user 'device' to var/users"
  printf 'device-password\n' | "$bin" users add device -c "$cfg" >/dev/null
fi

"$bin" config check -c "$cfg" >/dev/null

cat <<'EOT'

mailfleet is starting (Ctrl-C to stop).  Send a first mail:

  swaks --server 127.0.0.1:2525 --tls --auth LOGIN \
        --auth-user device --auth-password device-password \
        --from sensor@iot.localhost --to alerts@iot.localhost \
        --header 'Subject: disk alarm on sensor-7' \
        --body ':Email_Rxers_Code:[ops@example.com, oncall@example.org]:Email_Rxers_Code: disk /var is 97% full' \
        --attach-type text/plain --attach @/etc/os-release

Then look at:
  var/outbox/<recipient>/<id>.eml        the mail each recipient gets (attachment -> link)
  http://127.0.0.1:8025/a/<token>        the link in that mail (download)
  http://127.0.0.1:9100/metrics          metrics; /healthz, /readyz, /alarms

EOT
exec "$bin" run -c "$cfg"
