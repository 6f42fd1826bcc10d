#!/usr/bin/env bash
# Instructions per proxied request of knoxy-queue or the knoxy gateway, counted by callgrind:
# repeatable on a noisy 2-core machine, where wall-clock CPU varies ±15% between runs. Use it
# to compare changes to the request path; bench/run gives the
# side-by-side CPU/latency/RSS tables.
#
#   bench/instructions.sh queue [CONTAINER_CONCURRENCY]     (default 0)
#   bench/instructions.sh gateway      (host routing into a 50/50 split with appendHeaders)
#   bench/instructions.sh activator    (the gateway's throttle step: a Revision, CC=0, whose
#                                        pod is a knoxy-queue in front of nginx; not counted)
# Setup: nginx backend (1 worker, 13-byte response), `wrk -t1 -c10`, 2 s warm-up (not
# counted), then 8 s counted; prints instructions per request and the 25 costliest functions.
set -euo pipefail
WHAT=${1:-queue}
CC=${2:-0}
cd "$(dirname "$0")/.."
for tool in nginx wrk valgrind; do
  command -v $tool >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk valgrind >/dev/null; break; }
done
cargo build --release -q -p knoxy-queue -p knoxy
WORK=$(mktemp -d /tmp/knoxy-instr.XXXXXX)
PIDS=()
# TERM, not KILL: a killed nginx master leaves its worker holding our stdout.
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait; rm -rf "$WORK"' EXIT
BACKEND=18180; QUEUE=18181
cat > "$WORK/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND; location / { default_type text/plain; return 200 "Hello, World!"; } } }
NGX
nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
CALLGRIND=(valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" --instr-atstart=no)
HOST=localhost
if [ "$WHAT" = activator ]; then
  HOST=hello.example.com
  POD=18182
  env CONTAINER_CONCURRENCY=0 QUEUE_SERVING_PORT=$POD QUEUE_SERVING_TLS_PORT=0 USER_PORT=$BACKEND \
    REVISION_TIMEOUT_SECONDS=300 SERVING_LOGGING_CONFIG= SERVING_LOGGING_LEVEL=warn SERVING_NAMESPACE=default \
    SERVING_CONFIGURATION=hello SERVING_REVISION=hello-00001 SERVING_POD=hello-pod SERVING_POD_IP=127.0.0.1 \
    KNOXY_BIND_ADDRESS=127.0.0.1 KNOXY_ADMIN_PORT=0 KNOXY_METRICS_PORT=0 \
    target/release/knoxy-queue >"$WORK/queue.log" 2>&1 & PIDS+=($!)
  mkdir -p "$WORK/config"
  printf '%s\n' "apiVersion: networking.internal.knative.dev/v1alpha1" "kind: Ingress" \
    "metadata: {name: hello, namespace: default, annotations: {networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev}}" \
    "spec: {rules: [{hosts: [$HOST], http: {paths: [{splits: [{serviceNamespace: default, serviceName: hello-00001, servicePort: 80}]}]}}]}" \
    "---" "apiVersion: serving.knative.dev/v1" "kind: Revision" "metadata: {name: hello-00001, namespace: default}" \
    "spec: {containerConcurrency: 0, containers: [{image: x}]}" "---" \
    "apiVersion: discovery.k8s.io/v1" "kind: EndpointSlice" \
    "metadata: {name: hello-00001-private-1, namespace: default, labels: {kubernetes.io/service-name: hello-00001-private}}" \
    "addressType: IPv4" "endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]" "ports: [{name: http, port: $POD}]" \
    > "$WORK/config/hello.yaml"
  "${CALLGRIND[@]}" target/release/knoxy --config-dir "$WORK/config" --http 127.0.0.1:$QUEUE \
    --https 127.0.0.1:0 --private-http 127.0.0.1:0 --private-https 127.0.0.1:0 --admin 127.0.0.1:0 --threads 1 \
    --autoscaler-url "" ${KNOXY_FLAGS:-} >"$WORK/proxy.log" 2>&1 &
elif [ "$WHAT" = gateway ]; then
  HOST=hello.example.com
  mkdir -p "$WORK/config"
  for rev in hello-00001 hello-00002; do
    printf '%s\n' "apiVersion: v1" "kind: Service" "metadata: {name: $rev, namespace: default}" \
      "spec: {ports: [{name: http, port: 80, targetPort: $BACKEND}]}" "---" \
      "apiVersion: discovery.k8s.io/v1" "kind: EndpointSlice" \
      "metadata: {name: $rev-x, namespace: default, labels: {kubernetes.io/service-name: $rev}}" \
      "addressType: IPv4" "endpoints: [{addresses: [127.0.0.1]}]" "ports: [{name: http, port: $BACKEND}]" "---"
  done > "$WORK/config/revisions.yaml"
  split() { echo "{serviceNamespace: default, serviceName: $1, servicePort: 80, percent: 50, appendHeaders: {Knative-Serving-Revision: $1, Knative-Serving-Namespace: default}}"; }
  printf '%s\n' "apiVersion: networking.internal.knative.dev/v1alpha1" "kind: Ingress" \
    "metadata: {name: hello, namespace: default, annotations: {networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev}}" \
    "spec: {rules: [{hosts: [$HOST], http: {paths: [{splits: [$(split hello-00001), $(split hello-00002)]}]}}]}" \
    > "$WORK/config/hello.yaml"
  "${CALLGRIND[@]}" target/release/knoxy --config-dir "$WORK/config" --http 127.0.0.1:$QUEUE \
    --https 127.0.0.1:0 --private-http 127.0.0.1:0 --private-https 127.0.0.1:0 --admin 127.0.0.1:0 --threads 1 ${KNOXY_FLAGS:-} \
    >"$WORK/proxy.log" 2>&1 &
else
  env CONTAINER_CONCURRENCY="$CC" QUEUE_SERVING_PORT=$QUEUE QUEUE_SERVING_TLS_PORT=0 USER_PORT=$BACKEND \
    REVISION_TIMEOUT_SECONDS=300 SERVING_LOGGING_CONFIG= SERVING_LOGGING_LEVEL=warn SERVING_NAMESPACE=bench \
    SERVING_CONFIGURATION=bench SERVING_REVISION=bench-00001 SERVING_POD=bench-pod SERVING_POD_IP=127.0.0.1 \
    KNOXY_BIND_ADDRESS=127.0.0.1 KNOXY_ADMIN_PORT=0 KNOXY_METRICS_PORT=0 \
    "${CALLGRIND[@]}" target/release/knoxy-queue >"$WORK/proxy.log" 2>&1 &
fi
PID=$!; PIDS+=($PID)
for _ in $(seq 1 100); do curl -sf -o /dev/null -H "Host: $HOST" "http://127.0.0.1:$QUEUE/" && break; sleep 0.1; done
wrk -t1 -c10 -d2s -H "Host: $HOST" "http://127.0.0.1:$QUEUE/" >/dev/null
callgrind_control -i on $PID >/dev/null
wrk -t1 -c10 -d8s -H "Host: $HOST" "http://127.0.0.1:$QUEUE/" > "$WORK/wrk.txt"
callgrind_control -i off $PID >/dev/null
callgrind_control -d $PID >/dev/null
sleep 1
kill -9 $PID  # the dump is written; skip the drain
cp "$(ls -S "$WORK"/cg.out* | head -1)" "/tmp/knoxy-$WHAT.callgrind" 2>/dev/null || true
REQS=$(grep -oP '\d+(?= requests in)' "$WORK/wrk.txt")
OUT=$(ls -S "$WORK"/cg.out* | head -1)
IR=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n {gsub(",","",$1); print $1; n=1}')
echo "$WHAT (CONTAINER_CONCURRENCY=$CC for the queue): $REQS requests, $((IR / REQS)) instructions per request"
callgrind_annotate --inclusive=no "$OUT" 2>/dev/null | grep -E "^\s*[0-9,]+ \(" | sed -n "2,26p" | cut -c1-160 || true
