#!/usr/bin/env bash
# The gateway with 10,000 KIngresses against the same gateway with 1, side by side (issue #3):
# CPU per request, latency and RSS under `wrk -t1 -c50`; then how long a changed
# 10,000-ingress table takes to serve a new host, measured while wrk keeps the load on.
#
#   bench/gateway-scale.sh [ROUNDS] [SECONDS] [INGRESSES]     (defaults: 5, 8, 10000)
# Writes bench/results/gateway-scale-<date>.md and prints it.
set -euo pipefail
ROUNDS=${1:-5}
SECS=${2:-8}
COUNT=${3:-10000}
MID=$((COUNT / 2))  # the host measured: in the middle of the big table, alone in the small one
cd "$(dirname "$0")/.."
source bench/peers.sh
cargo build --release -q -p knoxy
require_free 18301 18302 18303 18311 18312 18313
start_peers 18080 18101 18102

revision() { # dir
  cat > "$1/revision.yaml" <<YAML
apiVersion: v1
kind: Service
metadata: {name: rev, namespace: default}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: rev-x, namespace: default, labels: {kubernetes.io/service-name: rev}}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}]
ports: [{name: http, port: $BACKEND}]
YAML
}
ingresses() { # dir first count: one file of KIngresses h<first>..h<first+count-1>.example.com
  python3 - "$1" "$2" "$3" <<'PY'
import sys
out, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(f"{out}/ingresses-{first}.yaml", "w") as f:
    for i in range(first, first + count):
        f.write(f"""apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: h{i}
  namespace: default
  annotations: {{networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev}}
spec:
  rules:
  - hosts: [h{i}.example.com]
    http:
      paths:
      - splits: [{{serviceNamespace: default, serviceName: rev, servicePort: 80, percent: 100,
                   appendHeaders: {{Knative-Serving-Revision: rev}}}}]
---
""")
PY
}
mkdir -p "$WORK/one" "$WORK/many"
revision "$WORK/one"; ingresses "$WORK/one" "$MID" 1
revision "$WORK/many"; ingresses "$WORK/many" 0 "$COUNT"
start_gateway() { # dir http private admin
  target/release/knoxy --config-dir "$1" --http 127.0.0.1:$2 --private-http 127.0.0.1:$3 --admin 127.0.0.1:$4 \
    --https 127.0.0.1:0 --private-https 127.0.0.1:0 >"$1.log" 2>&1 &
}
start_gateway "$WORK/one" 18301 18302 18303; PIDS+=($!); ONE_PID=$!
started=$(date +%s.%N)
start_gateway "$WORK/many" 18311 18312 18313; PIDS+=($!); MANY_PID=$!
until curl -sf -o /dev/null -H "Host: h$MID.example.com" http://127.0.0.1:18311/; do sleep 0.05; done
startup=$(python3 -c "print(f'{$(date +%s.%N) - $started:.2f}')")
load=$(curl -s http://127.0.0.1:18313/metrics | awk '/^knoxy_route_table_load_seconds/ {print $2}')

OUT=bench/results/gateway-scale-$(date -u +%Y-%m-%d).md
HOST=h$MID.example.com run_rounds "knoxy gateway with $COUNT KIngresses vs 1" "$OUT" \
  "haproxy:$HAPROXY:$HAPROXY_PID" "knoxy-1:18301:$ONE_PID" "knoxy-$COUNT:18311:$MANY_PID" >/dev/null

# A changed table under load: each new file adds one host; time until it is served. Five
# swaps, each on a table of COUNT+k KIngresses, with wrk keeping the load on throughout.
# served_ms HOST T0: waits until the big gateway serves HOST; the ms since T0.
served_ms() {
  until curl -sf -o /dev/null -H "Host: $1" http://127.0.0.1:18311/; do sleep 0.002; done
  python3 -c "print(f'{($(date +%s.%N) - $2) * 1000:.0f}')"
}
wrk -t1 -c50 -d16s -H "Host: h$MID.example.com" http://127.0.0.1:18311/ > "$WORK/swap-wrk.txt" &
WRK=$!
sleep 1
swaps=()
for k in 0 1 2 3 4; do
  n=$((COUNT + k))
  ingresses "$WORK" "$n" 1
  t0=$(date +%s.%N)
  mv "$WORK/ingresses-$n.yaml" "$WORK/many/"
  swaps+=("$(served_ms "h$n.example.com" "$t0")")
  sleep 1
done
# The same for an edit inside the big file: one KIngress's host changes, the file is replaced.
edits=()
for k in 0 1 2 3 4; do
  sed "s/hosts: \[h$((k + 1)).example.com\]/hosts: [e$k.example.com]/" "$WORK/many/ingresses-0.yaml" > "$WORK/edit.yaml"
  t0=$(date +%s.%N)
  mv "$WORK/edit.yaml" "$WORK/many/ingresses-0.yaml"
  edits+=("$(served_ms "e$k.example.com" "$t0")")
  sleep 0.5
done
wait $WRK
swap_ms=$(printf '%s\n' "${swaps[@]}" | sort -n | sed -n 3p)
edit_ms=$(printf '%s\n' "${edits[@]}" | sort -n | sed -n 3p)
swap_load=$(curl -s http://127.0.0.1:18313/metrics | awk '/^knoxy_route_table_load_seconds/ {print $2}')
errors=$(grep -E "Socket errors|Non-2xx" "$WORK/swap-wrk.txt" || echo "none")
{
  echo
  echo "- $COUNT KIngresses: gateway start to first answer ${startup} s; table derive and swap ${load} s."
  echo "- A changed $COUNT-ingress table (one new file) was served ${swap_ms} ms after the write, median of 5 (each: ${swaps[*]} ms); an edit of one KIngress inside the $COUNT-ingress file was served ${edit_ms} ms after the file was replaced, median of 5 (each: ${edits[*]} ms; last reload's derive and swap: ${swap_load} s); all under \`wrk -c50\` load, errors during the swaps: ${errors}."
} >> "$OUT"
cat "$OUT"
