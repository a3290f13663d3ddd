#!/usr/bin/env bash
# pin-base-images — rewrites each `FROM <image>:<tag>@sha256:<digest>` line of
# ops/Dockerfile with the digest the registry gives for <tag> today.
#
#   ops/pin-base-images.sh            (needs skopeo, or docker with buildx)
#
# Run it when you want the base images' security updates, then rebuild the
# image and run the tests before you push it.
set -euo pipefail
cd "$(dirname "$0")"
digest_of() {
  if command -v skopeo >/dev/null 2>&1; then
    skopeo inspect --format '{{.Digest}}' "docker://docker.io/library/$1"
  else
    docker buildx imagetools inspect "$1" --format '{{json .Manifest.Digest}}' | tr -d '"'
  fi
}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
while IFS= read -r line; do
  if [[ "$line" =~ ^FROM\ ([a-z0-9./-]+:[A-Za-z0-9._-]+)(@sha256:[0-9a-f]{64})?(\ .*)?$ ]]; then
    ref=${BASH_REMATCH[1]} rest=${BASH_REMATCH[3]:-}
    d=$(digest_of "$ref")
    [[ "$d" =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "pin-base-images: no digest for $ref: '$d'" >&2; exit 1; }
    echo "FROM $ref@$d$rest"
    echo "pin-base-images: $ref -> $d" >&2
  else
    printf '%s\n' "$line"
  fi
done <Dockerfile >"$tmp"
cat "$tmp" >Dockerfile
