#!/usr/bin/env bash
# The activator's warm path, beside HAProxy's single hop: the knoxy gateway routing to a
# Knative Revision (the throttle step, probing, demand windows; containerConcurrency CC) on
# to the revision's pod, a knoxy-queue (same CC) in front of the nginx backend. HAProxy and
# nginx go straight to the backend, sending the same edge headers.
# CPU per request of the gateway alone, and of the gateway plus the queue (two rows, each
# from its own runs of the same path); and HAProxy in the gateway's place before the same
# queue (`haproxy->queue`, HAProxy's CPU only), which shows what the slower chain costs any
# proxy per request.
#
#   bench/activator.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 8 s; CC=0, WRK_ARGS)
#   RATE=6000 bench/activator.sh ...           (every system at the same offered load, with hey:
#                                               the closed-loop run charges the slower chain for
#                                               its fewer requests per wakeup)
# Writes bench/results/activator-<date>.md and prints it.
set -euo pipefail
ROUNDS=${1:-5}
SECS=${2:-8}
CC=${CC:-0}
cd "$(dirname "$0")/.."
ROOT=$PWD
EDGE_HEADERS=${EDGE_HEADERS-1}
source bench/peers.sh
cargo build --release -q -p knoxy -p knoxy-queue
GATEWAY=18221; ADMIN=18223; QUEUE=18222
require_free $GATEWAY $ADMIN $QUEUE
start_peers 18080 18101 18102
env CONTAINER_CONCURRENCY="$CC" QUEUE_SERVING_PORT=$QUEUE QUEUE_SERVING_TLS_PORT=0 USER_PORT=$BACKEND \
  REVISION_TIMEOUT_SECONDS=300 SERVING_LOGGING_CONFIG= SERVING_LOGGING_LEVEL=warn SERVING_NAMESPACE=default \
  SERVING_CONFIGURATION=hello SERVING_REVISION=hello-00001 SERVING_POD=hello-00001-pod SERVING_POD_IP=127.0.0.1 \
  KNOXY_BIND_ADDRESS=127.0.0.1 KNOXY_ADMIN_PORT=0 KNOXY_METRICS_PORT=0 \
  "$ROOT/target/release/knoxy-queue" >"$WORK/queue.log" 2>&1 &
PIDS+=($!); QUEUE_PID=$!

mkdir -p "$WORK/config"
ingress_head > "$WORK/config/hello.yaml"
cat >> "$WORK/config/hello.yaml" <<YAML
  - hosts: [hello.example.com]
    http:
      paths:
      - splits:
        - {serviceNamespace: default, serviceName: hello-00001, servicePort: 80,
           appendHeaders: {Knative-Serving-Revision: hello-00001, Knative-Serving-Namespace: default}}
---
apiVersion: serving.knative.dev/v1
kind: Revision
metadata: {name: hello-00001, namespace: default}
spec: {containerConcurrency: $CC, containers: [{image: x}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: hello-00001-private-1
  namespace: default
  labels: {kubernetes.io/service-name: hello-00001-private}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
ports: [{name: http, port: $QUEUE}]
YAML
target/release/knoxy --config-dir "$WORK/config" --http 127.0.0.1:$GATEWAY --private-http 127.0.0.1:0 \
  --https 127.0.0.1:0 --private-https 127.0.0.1:0 --admin 127.0.0.1:$ADMIN --threads 1 \
  --autoscaler-url "" --upgrade-sock "$WORK/upgrade.sock" >"$WORK/knoxy.log" 2>&1 &
PIDS+=($!); GATEWAY_PID=$!
for _ in $(seq 100); do curl -sf -o /dev/null -H "Host: hello.example.com" "http://127.0.0.1:$GATEWAY/" && break; sleep 0.1; done
# The same chain with HAProxy in the gateway's place (HAProxy -> knoxy-queue -> backend): what
# the slower path costs a proxy per request (fewer requests per wakeup), apart from the code.
HAPROXY_CHAIN=18224
require_free $HAPROXY_CHAIN
sed -e "s/127.0.0.1:$HAPROXY\$/127.0.0.1:$HAPROXY_CHAIN/" -e "s/server s1 127.0.0.1:$BACKEND/server s1 127.0.0.1:$QUEUE/" \
  "$WORK/haproxy.cfg" > "$WORK/haproxy-chain.cfg"
haproxy -f "$WORK/haproxy-chain.cfg" -db >/dev/null 2>&1 & PIDS+=($!); HAPROXY_CHAIN_PID=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$HAPROXY_CHAIN/" && break; sleep 0.1; done
LOAD="wrk ${WRK_ARGS:--t1 -c50}"; [ -n "${RATE:-}" ] && LOAD="$RATE requests/s offered to each (hey)"
HOST=hello.example.com run_rounds "the activator's warm path: knoxy gateway (revision throttler, CC=$CC) -> knoxy-queue (CC=$CC) -> backend, vs HAProxy and nginx straight to the backend, 1 thread each, $LOAD" \
  "bench/results/activator${RATE:+-rate$RATE}-$(date -u +%Y-%m-%d).md" \
  "haproxy:$HAPROXY:$HAPROXY_PID" "nginx:$NGINX:$NGINX_PID" \
  "knoxy-gateway:$GATEWAY:$GATEWAY_PID" "knoxy-gateway+queue:$GATEWAY:$GATEWAY_PID,$QUEUE_PID" \
  "haproxy->queue:$HAPROXY_CHAIN:$HAPROXY_CHAIN_PID"
