#!/usr/bin/env bash
# knoxy-queue against HAProxy and nginx as plain reverse proxies, side by side in one run.
#
# Setup (issue #2): HTTP/1.1 keep-alive, `wrk -t1 -c50`, 13-byte responses from an nginx
# backend (1 worker); HAProxy (1 thread, http-reuse always) and nginx (1 worker, upstream
# keep-alive) in front of the same backend; rounds alternate between the proxies.
# CPU per request = (utime+stime of the proxy process over the run, /proc/PID/stat) / requests.
#
#   bench/queue.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 8 s)
# Writes bench/results/queue-<date>.md and prints it.
set -euo pipefail
ROUNDS=${1:-5}
SECS=${2:-8}
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/peers.sh
cargo build --release -q -p knoxy-queue
QUEUE_BIN=$ROOT/target/release/knoxy-queue
QUEUE=18112; QUEUE_CC=18113
require_free $QUEUE $QUEUE_CC
start_peers 18080 18101 18102
start_queue() { # port cc
  env CONTAINER_CONCURRENCY="$2" QUEUE_SERVING_PORT="$1" QUEUE_SERVING_TLS_PORT=0 USER_PORT=$BACKEND \
    REVISION_TIMEOUT_SECONDS=300 SERVING_LOGGING_CONFIG= SERVING_LOGGING_LEVEL=warn SERVING_NAMESPACE=bench \
    SERVING_CONFIGURATION=bench SERVING_REVISION=bench-00001 SERVING_POD=bench-pod SERVING_POD_IP=127.0.0.1 \
    KNOXY_BIND_ADDRESS=127.0.0.1 KNOXY_ADMIN_PORT=0 KNOXY_METRICS_PORT=0 "$QUEUE_BIN" >"$WORK/queue-$1.log" 2>&1 &
}
start_queue $QUEUE 0; PIDS+=($!); QUEUE_PID=$!
start_queue $QUEUE_CC 10; PIDS+=($!); QUEUE_CC_PID=$!
sleep 1
run_rounds "knoxy-queue vs HAProxy and nginx" "bench/results/queue-$(date -u +%Y-%m-%d).md" \
  "haproxy:$HAPROXY:$HAPROXY_PID" "nginx:$NGINX:$NGINX_PID" \
  "knoxy-queue:$QUEUE:$QUEUE_PID" "knoxy-queue-cc10:$QUEUE_CC:$QUEUE_CC_PID"
