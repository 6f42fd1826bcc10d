#!/usr/bin/env bash
# Runs Knoxy's main job on a shipped example. Until `knoxy local` and the gateway exist, that is
# knoxy-queue (Knative's queue-proxy drop-in) in front of a demo app, on Knative's ports:
# app 127.0.0.1:8080, queue 8012, admin 8022, autoscaler metrics 9090, user metrics 9091.
#
#   scripts/demo.sh            start, print the curl/hey lines to try, run until Ctrl-C
#   scripts/demo.sh --smoke    start, check that a request and a probe pass, stop (used by CI)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo build --release -q --bin knoxy-queue --bin knoxy-testbackend
BIN=$PWD/target/release
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

for port in 8080 8012 8022 9090 9091; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; stop whatever listens there and retry" >&2
    exit 1
  fi
done

"$BIN/knoxy-testbackend" --listen 127.0.0.1:8080 >/tmp/knoxy-demo-app.log 2>&1 &
PIDS+=($!)
# The env Knative's revision controller sets on the queue-proxy container.
env CONTAINER_CONCURRENCY=10 QUEUE_SERVING_PORT=8012 QUEUE_SERVING_TLS_PORT=8112 USER_PORT=8080 \
  REVISION_TIMEOUT_SECONDS=300 SERVING_LOGGING_CONFIG= SERVING_LOGGING_LEVEL=info \
  SERVING_NAMESPACE=default SERVING_SERVICE=hello SERVING_CONFIGURATION=hello \
  SERVING_REVISION=hello-00001 SERVING_POD=hello-00001-deployment-demo SERVING_POD_IP=127.0.0.1 \
  SERVING_READINESS_PROBE='{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}' \
  OBSERVABILITY_CONFIG='{"requestMetrics":{"protocol":"prometheus"}}' \
  KNOXY_BIND_ADDRESS=127.0.0.1 \
  "$BIN/knoxy-queue" >/tmp/knoxy-demo-queue.log 2>&1 &
PIDS+=($!)

for _ in $(seq 1 100); do
  curl -sf -o /dev/null -A kube-probe/1.30 -H 'K-Network-Probe: queue' http://127.0.0.1:8012/ && break
  sleep 0.1
done

if [ "${1:-}" = "--smoke" ]; then
  curl -sf http://127.0.0.1:8012/hello | grep -q '"uri":"/hello"'
  [ "$(curl -sf -A kube-probe/1.30 -H 'K-Network-Probe: queue' http://127.0.0.1:8012/)" = queue ]
  curl -sf http://127.0.0.1:9090/metrics -o /dev/null
  echo "demo smoke check passed"
  exit 0
fi

cat <<'TXT'
knoxy-queue is serving on 127.0.0.1:8012 in front of the demo app on 127.0.0.1:8080
(CONTAINER_CONCURRENCY=10; logs in /tmp/knoxy-demo-queue.log). Try:

  curl -i http://127.0.0.1:8012/hello                                   # proxied; the app echoes what it saw
  curl -i --http2-prior-knowledge http://127.0.0.1:8012/hello           # h2c, goes upstream as h2c
  curl -i -A kube-probe/1.30 -H 'K-Network-Probe: queue' http://127.0.0.1:8012/   # kubelet readiness: 200 queue
  curl -i -H 'K-Network-Probe: probe' -H 'K-Network-Hash: abc' http://127.0.0.1:8012/  # ingress probe
  curl -N 'http://127.0.0.1:8012/?stream=1&n=5&gap=500'                # streamed chunks
  curl -s -H 'Accept: text/plain' http://127.0.0.1:9090/metrics         # autoscaler stats (protobuf without Accept)
  curl -s http://127.0.0.1:9091/metrics | grep kn_                      # user metrics
  hey -z 10s -c 50 'http://127.0.0.1:8012/?text=hello'                   # load (CC=10 queues the rest)
  wrk -t1 -c50 -d10s 'http://127.0.0.1:8012/?text=hello'
  curl -i http://127.0.0.1:8022/wait-for-drain                          # preStop hook: drain for 1 s

Ctrl-C stops both.
TXT
wait
