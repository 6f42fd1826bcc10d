#!/usr/bin/env bash
# The gateway on its own (scripts/demo.sh runs `knoxy local`): the knoxy
# gateway serving deploy/examples/hello (a KIngress and its revision's Service/EndpointSlice)
# in front of knoxy-queue (Knative's queue-proxy drop-in) in front of a demo app:
# gateway 127.0.0.1:8080 (private 8081, admin 9095), queue 8012 (admin 8022, autoscaler
# metrics 9090, user metrics 9091), app 8090.
#
#   scripts/gateway-demo.sh    start, print the curl/hey lines to try, run until Ctrl-C
#   scripts/gateway-demo.sh --smoke  start, check that a request and a probe pass, stop (used by CI)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo build --release -q --bin knoxy --bin knoxy-queue --bin knoxy-testbackend
BIN=$PWD/target/release
PIDS=()
# KILL: a demo need not wait for knoxy-queue's 30 s drain.
trap 'for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done' EXIT

for port in 8080 8081 8443 8444 9095 8090 8012 8022 9090 9091; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; stop whatever listens there and retry" >&2
    exit 1
  fi
done

"$BIN/knoxy-testbackend" --listen 127.0.0.1:8090 >/tmp/knoxy-demo-app.log 2>&1 &
PIDS+=($!)
# The env Knative's revision controller sets on the queue-proxy container.
env CONTAINER_CONCURRENCY=10 QUEUE_SERVING_PORT=8012 QUEUE_SERVING_TLS_PORT=8112 USER_PORT=8090 \
  REVISION_TIMEOUT_SECONDS=300 SERVING_LOGGING_CONFIG= SERVING_LOGGING_LEVEL=info \
  SERVING_NAMESPACE=default SERVING_SERVICE=hello SERVING_CONFIGURATION=hello \
  SERVING_REVISION=hello-00001 SERVING_POD=hello-00001-deployment-demo SERVING_POD_IP=127.0.0.1 \
  SERVING_READINESS_PROBE='{"tcpSocket":{"port":8090,"host":"127.0.0.1"},"successThreshold":1}' \
  OBSERVABILITY_CONFIG='{"requestMetrics":{"protocol":"prometheus"}}' \
  KNOXY_BIND_ADDRESS=127.0.0.1 \
  "$BIN/knoxy-queue" >/tmp/knoxy-demo-queue.log 2>&1 &
PIDS+=($!)

"$BIN/knoxy" --config-dir deploy/examples/hello --http 127.0.0.1:8080 --https 127.0.0.1:8443 \
  --private-http 127.0.0.1:8081 --private-https 127.0.0.1:8444 --admin 127.0.0.1:9095 \
  >/tmp/knoxy-demo-gateway.log 2>&1 &
PIDS+=($!)

for _ in $(seq 1 100); do
  curl -sf -o /dev/null -A kube-probe/1.30 -H 'K-Network-Probe: queue' http://127.0.0.1:8012/ &&
    curl -sf -o /dev/null -H 'Host: hello.default.example.com' http://127.0.0.1:8080/ && break
  sleep 0.1
done

# Each check takes the whole answer, then matches (a pipe into `grep -q` can fail curl on a
# closed pipe), and says what failed.
expect() {  # expect WHAT PATTERN CURL-ARGS...
  local what=$1 pattern=$2 got; shift 2
  got=$(curl -sf "$@") || { echo "demo smoke check failed: $what did not answer" >&2; exit 1; }
  [[ $got == *$pattern* ]] || { echo "demo smoke check failed: $what answered: $got" >&2; exit 1; }
}
if [ "${1:-}" = "--smoke" ]; then
  expect "the public listener" '"host":"hello.default.example.com"' -H 'Host: hello.default.example.com' http://127.0.0.1:8080/hello
  expect "the private listener" '"uri":"/hello"' -H 'Host: hello.default.svc' http://127.0.0.1:8081/hello
  expect "the queue" '"uri":"/hello"' http://127.0.0.1:8012/hello
  probe=$(curl -sf -A kube-probe/1.30 -H 'K-Network-Probe: queue' http://127.0.0.1:8012/) || probe=
  [ "$probe" = queue ] || { echo "demo smoke check failed: the queue's probe answered: $probe" >&2; exit 1; }
  expect "the queue's metrics" "" http://127.0.0.1:9090/metrics
  expect "the gateway's metrics" knoxy_requests_total http://127.0.0.1:9095/metrics
  echo "demo smoke check passed"
  exit 0
fi

cat <<'TXT'
The knoxy gateway serves deploy/examples/hello on 127.0.0.1:8080, routing to knoxy-queue on
127.0.0.1:8012 (CONTAINER_CONCURRENCY=10) in front of the demo app on 127.0.0.1:8090.
Logs: /tmp/knoxy-demo-{gateway,queue,app}.log. Try:

  curl -i -H 'Host: hello.default.example.com' http://127.0.0.1:8080/hello          # gateway -> queue -> app
  curl -i --http2-prior-knowledge -H 'Host: hello.default.example.com' http://127.0.0.1:8080/hello
  curl -i -H 'Host: hello.default.svc' http://127.0.0.1:8081/                       # cluster-local: private listener only
  curl -i -H 'Host: hello.default.svc' http://127.0.0.1:8080/                       # ... so 404 on the public one
  curl -N -H 'Host: hello.default.example.com' 'http://127.0.0.1:8080/?stream=1&n=5&gap=500'
  curl -s http://127.0.0.1:9095/metrics | grep knoxy_                                # gateway metrics
  curl -i -A kube-probe/1.30 -H 'K-Network-Probe: queue' http://127.0.0.1:8012/      # kubelet readiness: 200 queue
  curl -s -H 'Accept: text/plain' http://127.0.0.1:9090/metrics                      # autoscaler stats
  curl -s http://127.0.0.1:9091/metrics | grep kn_                                   # queue user metrics
  hey -z 10s -c 50 -host hello.default.example.com 'http://127.0.0.1:8080/?text=hello'
  wrk -t1 -c50 -d10s -H 'Host: hello.default.example.com' 'http://127.0.0.1:8080/?text=hello'

Edit deploy/examples/hello/hello.yaml while it runs: the gateway reloads it at once and keeps
the last good version if the file does not parse. Ctrl-C stops everything.
TXT
wait
