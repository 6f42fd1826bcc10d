#!/usr/bin/env bash
# The knoxy gateway against HAProxy and nginx as plain reverse proxies, side by side in one run.
#
# Setup (issue #3): as bench/queue.sh (`wrk -t1 -c50`, HTTP/1.1 keep-alive, 13-byte nginx
# backend), the gateway doing host routing into a 50/50 split with appendHeaders, metrics on.
#
#   bench/gateway.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 8 s)
#   THREADS=2 WRK_ARGS="-t2 -c100" bench/gateway.sh   (every proxy on 2 threads/workers)
# Writes bench/results/gateway-<date>.md (gateway-t<N>-<date>.md for THREADS=N > 1) and prints it.
set -euo pipefail
ROUNDS=${1:-5}
SECS=${2:-8}
cd "$(dirname "$0")/.."
# The peers send the edge headers the gateway sends (X-Forwarded-For/-Proto, X-Request-Id).
EDGE_HEADERS=${EDGE_HEADERS-1}
source bench/peers.sh
cargo build --release -q -p knoxy
GATEWAY=18201; PRIVATE=18202; ADMIN=18203
require_free $GATEWAY $PRIVATE $ADMIN
start_peers 18080 18101 18102

# Two revisions, both backed by the nginx backend, split 50/50 under one host.
mkdir -p "$WORK/config"
for rev in hello-00001 hello-00002; do revision_yaml "$rev" >> "$WORK/config/revisions.yaml"; done
ingress_head > "$WORK/config/hello.yaml"
cat >> "$WORK/config/hello.yaml" <<YAML
  - hosts: [hello.example.com]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {serviceNamespace: default, serviceName: hello-00001, servicePort: 80, percent: 50,
           appendHeaders: {Knative-Serving-Revision: hello-00001, Knative-Serving-Namespace: default}}
        - {serviceNamespace: default, serviceName: hello-00002, servicePort: 80, percent: 50,
           appendHeaders: {Knative-Serving-Revision: hello-00002, Knative-Serving-Namespace: default}}
YAML
target/release/knoxy --config-dir "$WORK/config" --http 127.0.0.1:$GATEWAY --private-http 127.0.0.1:$PRIVATE \
  --https 127.0.0.1:0 --private-https 127.0.0.1:0 --admin 127.0.0.1:$ADMIN --threads "${THREADS:-1}" >"$WORK/knoxy.log" 2>&1 &
PIDS+=($!); GATEWAY_PID=$!
sleep 1
SUFFIX=$([ "${THREADS:-1}" -gt 1 ] && echo "-t$THREADS" || true)
PEERS=$([ -n "$EDGE_HEADERS" ] && echo "HAProxy and nginx also sending X-Forwarded-For/-Proto and X-Request-Id" || echo "HAProxy and nginx as plain proxies")
HOST=hello.example.com run_rounds "knoxy gateway (host routing, 50/50 split, appendHeaders, X-Forwarded-*, X-Request-Id, metrics), ${THREADS:-1} thread(s) each, wrk ${WRK_ARGS:--t1 -c50}, vs $PEERS" \
  "bench/results/gateway$SUFFIX-$(date -u +%Y-%m-%d).md" \
  "haproxy:$HAPROXY:$HAPROXY_PID" "nginx:$NGINX:$NGINX_PID" "knoxy:$GATEWAY:$GATEWAY_PID"

# PROFILE=1: one more wrk run with `perf record` on the gateway; the hottest symbols.
if [ -n "${PROFILE:-}" ]; then
  perf record -F 2000 -g -o "$WORK/perf.data" -p "$GATEWAY_PID" -- sleep "$SECS" >/dev/null 2>&1 &
  PERF=$!
  wrk -t1 -c50 -d"${SECS}s" -H "Host: hello.example.com" "http://127.0.0.1:$GATEWAY/" >/dev/null
  wait $PERF
  perf report -i "$WORK/perf.data" --no-children --percent-limit 0.7 --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | sed 's/  */ /g' | cut -c1-150 > bench/results/gateway-profile.txt
  cat bench/results/gateway-profile.txt
fi
