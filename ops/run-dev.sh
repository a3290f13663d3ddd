#!/usr/bin/env bash
# `make run`: the embedded default of DESIGN.md §10 — every worker in one
# process on 127.0.0.1, local queue, file stores, delivery into var/outbox/.
# First run creates var/ (queue, stores, state, a self-signed certificate).
# Ctrl-C drains and exits; the next run resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/mailfleet
cfg=ops/mailfleet.dev.ini
mkdir -p var/outbox
# ingest writes a self-signed certificate into var/tls/ on first start
# (tls_generate = true, dev only); the dev SMTP user is in ops/dev.users.
"$bin" config check -c "$cfg" >/dev/null

printf '\nmailfleet is starting (Ctrl-C to stop).  Send a first mail:\n\n'
cat ops/first-mail.txt
cat <<'EOT'

Then look at:
  var/outbox/<recipient>/<id>.eml        the mail each recipient gets (attachment -> link)
  http://127.0.0.1:8025/a/<token>        the link in that mail (download)
  http://127.0.0.1:9100/metrics          metrics; /healthz, /readyz, /alarms

EOT
exec "$bin" run -c "$cfg"
