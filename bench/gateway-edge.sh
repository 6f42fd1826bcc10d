#!/usr/bin/env bash
# The gateway as an edge, beside HAProxy: (1) 2,000 idle keep-alive client connections held
# open: memory per idle connection, and the p99 of active clients (wrk -c50) before and while
# they are held; (2) a zero-downtime upgrade under wrk load: non-2xx and socket errors.
#
#   bench/gateway-edge.sh [IDLE]      (default 2000 idle connections)
# Writes bench/results/gateway-edge-<date>.md and prints it.
set -euo pipefail
IDLE=${1:-2000}
ROUNDS=1; SECS=6
cd "$(dirname "$0")/.."
source bench/peers.sh
cargo build --release -q -p knoxy
GATEWAY=18211; ADMIN=18213
require_free $GATEWAY $ADMIN
start_peers 18090 18111 18112
ulimit -n 65536 2>/dev/null || true

mkdir -p "$WORK/config"
revision_yaml hello-00001 > "$WORK/config/hello.yaml"
ingress_head >> "$WORK/config/hello.yaml"
cat >> "$WORK/config/hello.yaml" <<YAML
  - hosts: [hello.example.com]
    http: {paths: [{splits: [{serviceNamespace: default, serviceName: hello-00001, servicePort: 80}]}]}
YAML
start_knoxy() {  # start_knoxy [extra flags...]: prints the pid
  target/release/knoxy --config-dir "$WORK/config" --http 127.0.0.1:$GATEWAY --https 127.0.0.1:0 \
    --private-http 127.0.0.1:0 --private-https 127.0.0.1:0 --admin 127.0.0.1:$ADMIN --threads 1 \
    --drain-delay 0 --upgrade-sock "$WORK/upgrade.sock" "$@" >>"$WORK/knoxy.log" 2>&1 &
  echo $!
}
KNOXY_PID=$(start_knoxy); PIDS+=("$KNOXY_PID")
for _ in $(seq 100); do curl -sf -o /dev/null -H "Host: hello.example.com" "http://127.0.0.1:$GATEWAY/" && break; sleep 0.1; done

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
p99() { wrk -t1 -c50 -d"${SECS}s" --latency -H "Host: hello.example.com" "http://127.0.0.1:$1/" | awk '$1 == "99%" {print $2}'; }
# Holds N keep-alive connections, each after one request, until killed; sets HOLDER.
hold() {
  python3 - "$1" "$2" >/dev/null 2>"$WORK/hold.err" <<'PY' &
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: hello.example.com\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"!"):
        got += s.recv(4096)
    conns.append(s)
open("/tmp/knoxy-bench-held", "w").write(str(len(conns)))
time.sleep(3600)
PY
  HOLDER=$!
}
OUT="bench/results/gateway-edge-$(date -u +%Y-%m-%d).md"
{
  echo "# The gateway as an edge: idle connections and a zero-downtime upgrade"
  echo
  echo "knoxy --threads 1 vs HAProxy nbthread 1, both in front of the 13-byte nginx backend; $IDLE idle keep-alive connections (one request each, then held); \`wrk -t1 -c50 -d${SECS}s\` for p99."
  echo
  echo "| proxy | RSS before MB | RSS with $IDLE idle MB | per idle connection KB | p99 before ms | p99 while held ms |"
  echo "|---|---|---|---|---|---|"
} > "$OUT"
for target in "knoxy:$GATEWAY:$KNOXY_PID" "haproxy:$HAPROXY:$HAPROXY_PID"; do
  IFS=: read -r name port pid <<<"$target"
  p99 "$port" >/dev/null  # warm-up
  before=$(rss "$pid"); lat_before=$(p99 "$port")
  rm -f /tmp/knoxy-bench-held
  hold "$port" "$IDLE"
  for _ in $(seq 600); do [ -s /tmp/knoxy-bench-held ] && break; sleep 0.1; done
  [ -s /tmp/knoxy-bench-held ] || { echo "holding $IDLE connections failed: $(cat "$WORK/hold.err")" >&2; exit 1; }
  held=$(rss "$pid"); lat_held=$(p99 "$port")
  kill "$HOLDER" 2>/dev/null || true; wait "$HOLDER" 2>/dev/null || true
  awk -v n="$name" -v b="$before" -v h="$held" -v i="$IDLE" -v lb="$lat_before" -v lh="$lat_held" \
    'BEGIN { printf "| %s | %.1f | %.1f | %.1f | %s | %s |\n", n, b/1024, h/1024, (h-b)/i, lb, lh }' >> "$OUT"
  echo "idle connections: $name done" >&2
done

# The upgrade: wrk runs 12 s; after 2 s a new knoxy starts with --upgrade and the old one gets SIGQUIT.
wrk -t1 -c50 -d12s -H "Host: hello.example.com" "http://127.0.0.1:$GATEWAY/" > "$WORK/wrk-upgrade.txt" &
WRK=$!
sleep 2
NEW_PID=$(start_knoxy --upgrade); PIDS+=("$NEW_PID")
for _ in $(seq 100); do [ -S "$WORK/upgrade.sock" ] && break; sleep 0.05; done
kill -QUIT "$KNOXY_PID"
wait "$WRK"
for _ in $(seq 100); do kill -0 "$KNOXY_PID" 2>/dev/null || break; sleep 0.1; done
{
  echo
  echo "## Upgrade under load"
  echo
  echo "\`wrk -t1 -c50 -d12s\`; at 2 s \`knoxy --upgrade\` starts and the old process gets SIGQUIT (it hands its sockets over, keeps accepting 5 s, then drains)."
  echo
  echo '```'
  grep -E "requests in|Socket errors|Non-2xx|Requests/sec" "$WORK/wrk-upgrade.txt" || true
  echo "old process still running after the drain: $(kill -0 "$KNOXY_PID" 2>/dev/null && echo yes || echo no)"
  echo '```'
} >> "$OUT"
cat "$OUT"
