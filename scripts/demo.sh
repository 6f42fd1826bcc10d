#!/usr/bin/env bash
# Runs Knoxy's main job on a shipped example: `knoxy local` runs the Knative Services of
# deploy/examples/local on this machine (Knative's autoscale sample as `hello`, and
# helloworld), each revision's instances local processes behind their own knoxy-queue,
# scaled to and from zero by the KPA, served by the knoxy gateway on 127.0.0.1:8080
# (private 8081, admin 9095).
#
#   scripts/demo.sh            start, print the curl/hey lines to try, run until Ctrl-C
#   scripts/demo.sh --smoke    start, check both Services answer, stop, check nothing is left (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo build --release -q --bin knoxy --bin knoxy-queue --bin knoxy-autoscale --bin knoxy-helloworld
BIN=$PWD/target/release

for port in 8080 8081 8443 8444 9095; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; stop whatever listens there and retry" >&2
    exit 1
  fi
done

"$BIN/knoxy" local deploy/examples/local >/tmp/knoxy-local.out 2>/tmp/knoxy-local.log &
PID=$!
# TERM: knoxy local stops every instance it started before it exits.
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT

answers() { curl -sf -H "Host: $1" "http://127.0.0.1:8080$2"; }
for _ in $(seq 1 600); do
  answers hello.default.example.com / >/dev/null && answers helloworld.default.example.com / >/dev/null && break
  sleep 0.1
done

# A failed check says which, with the end of knoxy local's log.
fail() {
  echo "demo smoke check failed: $1" >&2
  tail -20 /tmp/knoxy-local.log /tmp/knoxy-local.out >&2
  exit 1
}
if [ "${1:-}" = "--smoke" ]; then
  # Whole answers, then matched: a pipe into `grep -q` can fail curl on a closed pipe.
  prime=$(answers hello.default.example.com '/?sleep=10&prime=100&bloat=1') || fail "hello did not answer"
  [[ $prime == *'The largest prime less than 100 is 97.'* ]] || fail "hello answered: $prime"
  hello=$(answers helloworld.default.example.com /) || fail "helloworld did not answer"
  [ "$hello" = "Hello Knoxy!" ] || fail "helloworld answered: $hello"
  metrics=$(curl -sf http://127.0.0.1:9095/metrics) || fail "no /metrics on the admin port"
  [[ $metrics == *activator_request_concurrency* ]] || fail "no activator metrics"
  kill -TERM $PID
  wait $PID
  trap - EXIT
  if pgrep -f "$BIN/knoxy-(queue|autoscale|helloworld)" >/dev/null; then
    echo "instances outlived knoxy local" >&2
    exit 1
  fi
  echo "demo smoke check passed"
  exit 0
fi

cat /tmp/knoxy-local.out
cat <<'TXT'

knoxy local runs deploy/examples/local: each Service's revision as local processes behind
knoxy-queue, scaled by the KPA (an idle Service goes to zero after about a minute, and the
next request brings it back). Logs: /tmp/knoxy-local.log. Try:

  curl -H 'Host: helloworld.default.example.com' http://127.0.0.1:8080/
  curl -H 'Host: hello.default.example.com' 'http://127.0.0.1:8080/?sleep=100&prime=10000&bloat=5'
  hey -z 30s -c 20 -host hello.default.example.com "http://127.0.0.1:8080?sleep=100&prime=10000&bloat=5"
  pgrep -fa knoxy-autoscale                                    # the instances, while hey runs
  curl -s http://127.0.0.1:9095/metrics | grep activator_      # the gateway's activator role

Edit deploy/examples/local/*.yaml while it runs: a template change makes a new revision and
moves the traffic to it. Ctrl-C stops everything.
TXT
wait $PID
