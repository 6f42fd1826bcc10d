# Sourced by the side-by-side benchmarks: the peers (HAProxy and nginx as plain reverse
# proxies) and the nginx backend they all front, the alternating rounds, and the report.
# Expects ROUNDS and SECS; sets WORK (a scratch directory) and PIDS (processes to stop), both
# cleaned up on exit.

WORK=$(mktemp -d /tmp/knoxy-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v hey >/dev/null || need+=(hey)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# ingress_head: the KIngress `default/hello` of knoxy's class, down to `rules:` (each script
# writes its own rules after it).
ingress_head() {
  cat <<YAML
apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  namespace: default
  annotations: {networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev}
spec:
  rules:
YAML
}

# revision_yaml NAME: a revision's Service and EndpointSlice, its one pod the nginx backend.
revision_yaml() {
  cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: $BACKEND}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1-x, namespace: default, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}]
ports: [{name: http, port: $BACKEND}]
---
YAML
}

# require_free PORT...: fails when something already listens there (it would be measured instead).
require_free() {
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is already in use" >&2; exit 1; fi
  done
}

# start_peers BACKEND HAPROXY NGINX: the 13-byte nginx backend (1 worker) and both peers
# (HAProxy THREADS threads with http-reuse always; nginx THREADS workers with upstream
# keep-alive; THREADS defaults to 1). Sets HAPROXY_PID and NGINX_PID (its workers, which do
# the work, comma-separated).
start_peers() {
  BACKEND=$1; HAPROXY=$2; NGINX=$3
  # EDGE_HEADERS=1: the peers also send what an edge sends upstream (as the gateway does):
  # X-Forwarded-For (appended), X-Forwarded-Proto and an X-Request-Id (a UUID).
  NGINX_EDGE=""; HAPROXY_EDGE=""
  if [ -n "${EDGE_HEADERS:-}" ]; then
    NGINX_EDGE=' proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Request-Id $request_id;'
    HAPROXY_EDGE=$'  option forwardfor\n  http-request set-header X-Forwarded-Proto http\n  unique-id-format %[uuid()]\n  unique-id-header X-Request-Id'
  fi
  require_free "$BACKEND" "$HAPROXY" "$NGINX"
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
worker_processes ${THREADS:-1};
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
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";$NGINX_EDGE }
  }
}
NGX
  cat > "$WORK/haproxy.cfg" <<HAP
global
  nbthread ${THREADS:-1}
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
$HAPROXY_EDGE
backend be
  server s1 127.0.0.1:$BACKEND
HAP
  nginx -c "$WORK/backend/nginx.conf" -p "$WORK/backend" & PIDS+=($!)
  nginx -c "$WORK/proxy/nginx.conf" -p "$WORK/proxy" & PIDS+=($!)
  haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 & PIDS+=($!); HAPROXY_PID=$!
  sleep 0.5
  NGINX_PID=$(pgrep -P "$(cat "$WORK/proxy/nginx.pid")" | paste -sd,)
}

# run_rounds TITLE OUT TARGET... with TARGET name:port:pids (pids comma-separated); HOST,
# when set, is sent as the Host header to every target; WRK_ARGS (default `-t1 -c50`) sets
# the load. Warms each target up, runs them ROUNDS times in a new random order each round,
# writes the report to OUT.
run_rounds() {
  local title=$1 report=$2; shift 2
  local targets=("$@") raw=$WORK/raw.tsv rss=$WORK/rss.tsv
  local load=${WRK_ARGS:--t1 -c50}
  # RATE=N: hey offers N requests/s in all from CLIENTS (50) clients instead of wrk's
  # saturation, so every system is measured at the same load (per-request CPU rises as
  # fewer requests share each wakeup, and a slower path would otherwise be charged for it).
  drive() {  # drive PORT SECONDS [--latency]
    if [ -n "${RATE:-}" ]; then
      local clients=${CLIENTS:-50}
      hey -z "$2s" -c "$clients" -q $((RATE / clients)) ${HOST:+-host "$HOST"} "http://127.0.0.1:$1/"
    else
      wrk $load -d"$2s" ${3:-} ${HOST:+-H "Host: $HOST"} "http://127.0.0.1:$1/"
    fi
  }
  cpu() { local sum=0 p; for p in ${1//,/ }; do sum=$((sum + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $sum; }
  for target in "${targets[@]}"; do
    IFS=: read -r name port _ <<<"$target"
    curl -sf -o /dev/null ${HOST:+-H "Host: $HOST"} "http://127.0.0.1:$port/" || { echo "$name on $port is not answering" >&2; exit 1; }
    drive "$port" 2 >/dev/null  # warm-up: connections, pools, page faults
  done
  : > "$raw"
  for round in $(seq 1 "$ROUNDS"); do
    mapfile -t order < <(printf '%s\n' "${targets[@]}" | shuf)
    for target in "${order[@]}"; do
      IFS=: read -r name port pid <<<"$target"
      before=$(cpu "$pid")
      result=$(drive "$port" "$SECS" --latency)
      after=$(cpu "$pid")
      printf '%s\t%s\t%s\t%s\n' "$name" "$round" "$((after - before))" "$(echo "$result" | base64 -w0)" >> "$raw"
      echo "round $round $name done" >&2
    done
  done
  : > "$rss"
  for target in "${targets[@]}"; do
    IFS=: read -r name _ pid <<<"$target"
    local files=(); for p in ${pid//,/ }; do files+=("/proc/$p/status"); done
    printf '%s\t%s\n' "$name" "$(awk '/VmHWM/ {s += $2} END {print s}' "${files[@]}")" >> "$rss"
  done
  python3 bench/report.py "$title" "$raw" "$rss" "$(getconf CLK_TCK)" "$ROUNDS" "$SECS" > "$report"
  cat "$report"
}
