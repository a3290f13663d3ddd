#!/usr/bin/env bash
# `make run-kafka`: the fleet as on Kubernetes, on one machine — a local
# 1-node Apache Kafka (ops/kafka/cluster.py, KRaft, 127.0.0.1:9092, the
# topics of ops/k8s/base/topics.yaml) and one `mailfleet <worker>` process
# per worker, with ops/mailfleet.dev.ini's stores, ports and dev user.
# Each worker serves its own metrics port (ingest 9101, transform 9102, send
# 9103, feedback 9104, monitor 9105, links 9106); links keeps 8025, so the
# feedback API moves to 8026.  Kafka's data stays in var/kafka-dev/ and the
# next run resumes it.  Ctrl-C stops the workers (they drain), then Kafka.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/mailfleet
cfg=ops/mailfleet.dev.ini
kafka_dir=var/kafka-dev
mkdir -p var/outbox

pids=()
stop_all() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  python3 ops/kafka/cluster.py stop "$kafka_dir" || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM

echo "mailfleet: starting Apache Kafka in $kafka_dir" >&2
bootstrap=$(python3 ops/kafka/cluster.py start "$kafka_dir" --keep --manifest --port 9092)
export MAILFLEET__MAILFLEET__BUS="kafka:$bootstrap"
# the ingest spool and other worker state, apart from `make run`'s local queue
export MAILFLEET__MAILFLEET__STATE_DIR=var/state-kafka
"$bin" config check -c "$cfg" >/dev/null

printf '\nmailfleet is starting on Kafka %s (Ctrl-C to stop).  Send a first mail:\n\n' "$bootstrap"
cat ops/first-mail.txt
cat <<'EOT'

Then look at:
  var/outbox/<recipient>/<id>.eml        the mail each recipient gets (attachment -> link)
  http://127.0.0.1:8025/a/<token>        the link in that mail (download)
  http://127.0.0.1:9105/alarms           the monitor's alarms; every worker's /metrics
                                         on 9101-9106 (ingest, transform, send,
                                         feedback, monitor, links)
  kcat -b 127.0.0.1:9092 -C -t mailfleet.events -e   the events, with any Kafka client

EOT
for w in feedback monitor links send transform ingest; do
  if [ "$w" = feedback ]; then
    MAILFLEET__FEEDBACK__PUBLIC_LISTEN=127.0.0.1:8026 "$bin" "$w" -c "$cfg" &
  else
    "$bin" "$w" -c "$cfg" &
  fi
  pids+=($!)
done

# one worker exiting (a crash, a port in use) stops the rest
wait -n "${pids[@]}" || true
