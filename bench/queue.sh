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
WORK=$(mktemp -d /tmp/knoxy-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q -p knoxy-queue
QUEUE_BIN=$ROOT/target/release/knoxy-queue

BACKEND=18080; HAPROXY=18101; NGINX=18102; QUEUE=18112; QUEUE_CC=18113

for port in $BACKEND $HAPROXY $NGINX $QUEUE $QUEUE_CC; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is already in use" >&2; exit 1; fi
done
mkdir -p "$WORK"/{backend,proxy}
cat > "$WORK/backend/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$BACKEND;
    location / { default_type text/plain; return 200 "Hello, World!"; }
  }
}
NGX
cat > "$WORK/proxy/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $WORK/proxy/nginx.pid;
error_log $WORK/proxy/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
cat > "$WORK/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPROXY
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND
HAP

nginx -c "$WORK/backend/nginx.conf" -p "$WORK/backend" & PIDS+=($!)
nginx -c "$WORK/proxy/nginx.conf" -p "$WORK/proxy" & PIDS+=($!)
haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 & PIDS+=($!); HAPROXY_PID=$!
start_queue() { # port cc
  env CONTAINER_CONCURRENCY="$2" QUEUE_SERVING_PORT="$1" QUEUE_SERVING_TLS_PORT=0 USER_PORT=$BACKEND \
    REVISION_TIMEOUT_SECONDS=300 SERVING_LOGGING_CONFIG= SERVING_LOGGING_LEVEL=warn SERVING_NAMESPACE=bench \
    SERVING_CONFIGURATION=bench SERVING_REVISION=bench-00001 SERVING_POD=bench-pod SERVING_POD_IP=127.0.0.1 \
    KNOXY_BIND_ADDRESS=127.0.0.1 KNOXY_ADMIN_PORT=0 KNOXY_METRICS_PORT=0 "$QUEUE_BIN" >"$WORK/queue-$1.log" 2>&1 &
}
start_queue $QUEUE 0; PIDS+=($!); QUEUE_PID=$!
start_queue $QUEUE_CC 10; PIDS+=($!); QUEUE_CC_PID=$!
sleep 1
# nginx's worker is the child of the master we started.
NGINX_PID=$(pgrep -P "$(cat "$WORK/proxy/nginx.pid")" | head -1)
for port in $BACKEND $HAPROXY $NGINX $QUEUE $QUEUE_CC; do
  curl -sf -o /dev/null "http://127.0.0.1:$port/" || { echo "port $port is not answering" >&2; exit 1; }
done

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
TARGETS=("haproxy:$HAPROXY:$HAPROXY_PID" "nginx:$NGINX:$NGINX_PID" "knoxy-queue:$QUEUE:$QUEUE_PID" "knoxy-queue-cc10:$QUEUE_CC:$QUEUE_CC_PID")
RAW=$WORK/raw.tsv
: > "$RAW"
for target in "${TARGETS[@]}"; do  # warm-up: connections, pools, page faults
  IFS=: read -r _ port _ <<<"$target"; wrk -t1 -c50 -d2s "http://127.0.0.1:$port/" >/dev/null
done
for round in $(seq 1 "$ROUNDS"); do
  for target in "${TARGETS[@]}"; do
    IFS=: read -r name port pid <<<"$target"
    before=$(cpu "$pid")
    out=$(wrk -t1 -c50 -d"${SECS}s" --latency "http://127.0.0.1:$port/")
    after=$(cpu "$pid")
    echo "$out" > "$WORK/wrk-$name-$round.txt"
    printf '%s\t%s\t%s\t%s\n' "$name" "$round" "$((after - before))" "$(echo "$out" | base64 -w0)" >> "$RAW"
    echo "round $round $name done" >&2
  done
done
RSS=$WORK/rss.tsv
for target in "${TARGETS[@]}"; do
  IFS=: read -r name _ pid <<<"$target"
  printf '%s\t%s\n' "$name" "$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")" >> "$RSS"
done
OUT=bench/results/queue-$(date -u +%Y-%m-%d).md
python3 bench/report.py "$RAW" "$RSS" "$(getconf CLK_TCK)" "$ROUNDS" "$SECS" > "$OUT"
cat "$OUT"
