#!/usr/bin/env bash
# Install what mailfleet needs on a Debian machine, only what is missing.
#   ops/deps.sh run    build + runtime libraries (make run)
#   ops/deps.sh test   the above plus the real peers the tests drive (make test),
#                      Apache Kafka included
#   ops/deps.sh kafka  build + runtime libraries and Apache Kafka (make run-kafka)
# As root it runs apt-get; otherwise it prints the exact command and stops.
# npm test tools go into tests/node_modules (project-local).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}

build_pkgs="gcc make pkg-config openssl libssl-dev libuv1-dev liblmdb-dev lmdb-utils
 librdkafka-dev libgmime-3.0-dev libcurl4-openssl-dev libjansson-dev libinih-dev
 libmicrohttpd-dev libcrypt-dev libopendkim-dev"
# make run also prints a swaks line for the first mail
run_pkgs="swaks libnet-ssleay-perl curl"
test_pkgs="libcmocka-dev clang libclang-rt-dev kcat swaks libnet-ssleay-perl postfix python3 python3-botocore python3-jsonschema
 python3-dkim prometheus yamllint cppcheck curl nodejs npm kubernetes-client binutils python3-yaml haproxy"

# Apache Kafka runs on Java; Maven fetches it (ops/kafka/pom.xml)
kafka_pkgs="openjdk-17-jdk-headless maven"

want="$build_pkgs $run_pkgs"
[ "$mode" = test ] && want="$build_pkgs $test_pkgs $kafka_pkgs"
[ "$mode" = kafka ] && want="$build_pkgs $run_pkgs python3 python3-yaml $kafka_pkgs"

missing=""
for p in $want; do
  # nodejs may come from another repository that bundles npm: accept a working npm.
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  if [ "$p" = nodejs ] && command -v node >/dev/null 2>&1; then continue; fi
  # kubectl (for `kubectl kustomize`) may come from another repository too.
  if [ "$p" = kubernetes-client ] && kubectl kustomize --help >/dev/null 2>&1; then continue; fi
  # any JDK 17+ and Maven on the PATH will do
  if [ "$p" = openjdk-17-jdk-headless ] && command -v javac >/dev/null 2>&1; then continue; fi
  if [ "$p" = maven ] && command -v mvn >/dev/null 2>&1; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done

if [ -n "$missing" ]; then
  cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends$missing"
  if [ "$(id -u)" != 0 ]; then
    echo "mailfleet: missing Debian packages:$missing" >&2
    echo "run as root:  $cmd" >&2
    exit 1
  fi
  echo "mailfleet: installing$missing" >&2
  # postfix asks questions at install time; answer them once, non-interactively.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
fi

# Install when any package tests/package.json names is missing.
npm_missing() {
  local d
  for d in $(sed -n '/"dependencies"/,/}/s/^ *"\([^"]*\)": *"[^"]*",\{0,1\}$/\1/p' tests/package.json); do
    [ -f "tests/node_modules/$d/package.json" ] || return 0
  done
  return 1
}
if [ "$mode" = test ] && npm_missing; then
  echo "mailfleet: installing npm test tools into tests/node_modules" >&2
  (cd tests && npm install --no-audit --no-fund --loglevel=error >&2)
fi

# Apache Kafka (broker + tools jars and their dependencies) from Maven Central
# into var/kafka-<version>/lib, once per version: the stamp is written last.
if [ "$mode" = test ] || [ "$mode" = kafka ]; then
  kv=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' ops/kafka/pom.xml)
  home=var/kafka-$kv
  if [ ! -f "$home/installed" ]; then
    for tool in java javac mvn; do
      if ! command -v $tool >/dev/null 2>&1; then
        echo "mailfleet: Apache Kafka $kv needs $tool (a JDK 17+ and Maven) on the PATH" >&2
        exit 1
      fi
    done
    echo "mailfleet: fetching Apache Kafka $kv with Maven into $home/lib" >&2
    rm -rf "$home/lib"; mkdir -p "$home"
    if ! mvn -q -B -f ops/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
         -DoutputDirectory="$PWD/$home/lib" >"var/kafka-$kv.mvn.log" 2>&1; then
      tail -30 "var/kafka-$kv.mvn.log" >&2
      echo "mailfleet: Maven could not fetch Apache Kafka $kv (full log: var/kafka-$kv.mvn.log)" >&2
      exit 1
    fi
    rm -f "var/kafka-$kv.mvn.log"
    touch "$home/installed"
  fi
fi
# The manifests use kustomize's `resources` of directories and `patches`
# (kustomize v3.1+; the older fields are deprecated).  kubectl 1.21+ embeds
# such a kustomize; Debian 12's kubectl is 1.20 (kustomize 2.0.3).  Then build
# kustomize v4.5.7 from the Go module proxy into var/tools/bin, with Debian's
# Go (1.19) if there is no other: tests/integration/test_ops.py prefers it.
kustomize_ok() {
  local d rc
  d=$(mktemp -d)
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata: {k: old}\n' >"$d/cm.yaml"
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata: {k: new}\n' >"$d/patch.yaml"
  printf 'resources: [cm.yaml]\npatches:\n  - path: patch.yaml\n' >"$d/kustomization.yaml"
  "$@" "$d" 2>/dev/null | grep -q 'k: new'
  rc=$?
  rm -rf "$d"
  return $rc
}
if [ "$mode" = test ] && [ ! -x var/tools/bin/kustomize ] && ! kustomize_ok kubectl kustomize; then
  go=$(command -v go || true)
  if [ -z "$go" ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "mailfleet: kustomize v4 is built with Go; run as root:  apt-get install -y golang-go" >&2
      exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go >&2
    go=$(command -v go)
  fi
  echo "mailfleet: building kustomize v4.5.7 into var/tools/bin (kubectl's is too old)" >&2
  mkdir -p var/tools/bin
  if ! GOBIN="$PWD/var/tools/bin" GOFLAGS=-mod=mod "$go" install sigs.k8s.io/kustomize/kustomize/v4@v4.5.7 \
       >var/tools/kustomize.log 2>&1 || ! kustomize_ok var/tools/bin/kustomize build; then
    tail -20 var/tools/kustomize.log >&2
    echo "mailfleet: could not build kustomize (log: var/tools/kustomize.log)" >&2
    rm -f var/tools/bin/kustomize
    exit 1
  fi
fi
exit 0
