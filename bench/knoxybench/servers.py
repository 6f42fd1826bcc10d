"""The servers a scenario starts: backends, the peers (HAProxy and nginx as plain proxies), and
Knoxy's gateway and queue. Each start function writes its config, starts the process and
waits until it listens; it returns the pids whose CPU is the system's own."""
import os
import signal
import subprocess

from .procs import answers, children, listening, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(ROOT, "target", "release")
KNOXY_CLASS = "knoxy.ingress.networking.knative.dev"


# ---- backends ----

def nginx_backend(procs, port, cpu):
    """nginx, 1 worker, answering every request with 13 bytes (HTTP/1.1)."""
    conf = _nginx_conf(procs.work, f"backend-{port}", 1, f"""
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type text/plain; return 200 "Hello, World!"; }}
  }}""")
    proc = procs.start(f"backend-{port}", ["nginx", "-c", conf, "-p", procs.work], cpu)
    wait_until(lambda: listening(port), f"the nginx backend on {port}", proc=proc)
    return _nginx_workers(proc)


def test_backend(procs, port, cpu):
    """Knoxy's test backend: HTTP/1.1 and h2c on one port, WebSocket echo and gRPC Ping."""
    proc = procs.start(f"testbackend-{port}", [os.path.join(RELEASE, "knoxy-testbackend"),
                                               "--listen", f"127.0.0.1:{port}"], cpu)
    wait_until(lambda: listening(port), f"the test backend on {port}", proc=proc)
    return [proc.pid]


# ---- peers ----

def haproxy(procs, port, upstream, cpu, threads=1, mode="h1", edge_headers=True, tls=None):
    """HAProxy as a plain reverse proxy to 127.0.0.1:upstream (http-reuse always).

    mode: h1 (HTTP/1.1 in and out), h2c (h2 prior knowledge in), h2 (h2c in and out),
    tls (TLS with ALPN h2 and http/1.1 in; `tls` is the PEM of certificate and key).
    """
    bind = {"h1": "", "h2c": " proto h2", "h2": " proto h2",
            "tls": f" ssl crt {tls} alpn h2,http/1.1"}[mode]
    server = " proto h2" if mode == "h2" else ""
    edge = ("  option forwardfor\n  http-request set-header X-Forwarded-Proto http\n"
            "  unique-id-format %[uuid()]\n  unique-id-header X-Request-Id\n") if edge_headers else ""
    cfg = _haproxy_cfg(procs.work, f"haproxy-{port}", threads, f"127.0.0.1:{port}{bind}", edge,
                       f"127.0.0.1:{upstream}{server}")
    proc = procs.start(f"haproxy-{port}", ["haproxy", "-f", cfg, "-db"], cpu)
    wait_until(lambda: listening(port), f"HAProxy on {port}", proc=proc)
    return [proc.pid]


def nginx_proxy(procs, port, upstream, cpu, workers=1, mode="h1", edge_headers=True, tls=None):
    """nginx as a plain reverse proxy to 127.0.0.1:upstream (upstream keep-alive); modes h1,
    h2c and tls as `haproxy`'s (HTTP/1.1 out: nginx proxies HTTP/2 only to gRPC), grpc (h2c in,
    grpc_pass out) and ws (the Upgrade passed on)."""
    listen = {"h1": "", "ws": "", "h2c": " http2", "grpc": " http2", "tls": " ssl http2"}[mode]
    tls_lines = f"ssl_certificate {tls}; ssl_certificate_key {tls};" if mode == "tls" else ""
    edge = (" proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
            " proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Request-Id $request_id;"
            if edge_headers else "")
    if mode == "grpc":
        location = "grpc_pass grpc://up;"
    elif mode == "ws":
        location = ("proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade;"
                    f" proxy_set_header Connection upgrade; proxy_read_timeout 60s;{edge}")
    else:
        location = f'proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";{edge}'
    conf = _nginx_conf(procs.work, f"nginx-{port}", workers, f"""
  upstream up {{ server 127.0.0.1:{upstream}; keepalive 128; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port}{listen};
    {tls_lines}
    location / {{ {location} }}
  }}""")
    proc = procs.start(f"nginx-{port}", ["nginx", "-c", conf, "-p", procs.work], cpu)
    wait_until(lambda: listening(port), f"nginx on {port}", proc=proc)
    return _nginx_workers(proc)


def haproxy_hosts(ctx, port, upstream, hosts):
    """HAProxy (master-worker) answering `hosts` (a map; others 404), and how to add one: a map
    line, then a reload (SIGUSR2 to the master). Returns (master pid, add)."""
    host_map = os.path.join(ctx.work, f"hosts-{port}.map")
    with open(host_map, "w") as f:
        f.writelines(f"{h} 1\n" for h in hosts)
    cfg = _haproxy_cfg(ctx.work, f"haproxy-hosts-{port}", 1, f"127.0.0.1:{port}",
                       f"  http-request return status 404 unless {{ req.hdr(host),lower,map({host_map}) -m found }}\n",
                       f"127.0.0.1:{upstream}")
    proc = ctx.procs.start(f"haproxy-hosts-{port}", ["haproxy", "-W", "-db", "-f", cfg], ctx.pins.sut)
    wait_until(lambda: answers(f"http://127.0.0.1:{port}/", hosts[len(hosts) // 2]), "HAProxy with hosts",
               proc=proc)

    def add(host):
        with open(host_map, "a") as f:
            f.write(f"{host} 1\n")
        os.kill(proc.pid, signal.SIGUSR2)
    return proc.pid, add


def nginx_hosts(ctx, port, upstream, hosts):
    """nginx answering `hosts` (a server block each; others 404), and how to add one: a new
    included file, then `nginx -s reload` (SIGHUP to the master). Returns (master pid, add)."""
    included = os.path.join(ctx.work, f"hosts-{port}")
    os.makedirs(included, exist_ok=True)
    block = lambda host: f"server {{ listen 127.0.0.1:{port}; server_name {host}; location / {{ proxy_pass http://up; " \
                         'proxy_http_version 1.1; proxy_set_header Connection ""; } }\n'
    with open(os.path.join(included, "hosts.conf"), "w") as f:
        f.writelines(block(h) for h in hosts)
    conf = _nginx_conf(ctx.work, f"nginx-hosts-{port}", 1, f"""
  server_names_hash_max_size 65536;
  server_names_hash_bucket_size 128;
  upstream up {{ server 127.0.0.1:{upstream}; keepalive 128; keepalive_requests 1000000; }}
  server {{ listen 127.0.0.1:{port} default_server; return 404; }}
  include {included}/*.conf;""")
    proc = ctx.procs.start(f"nginx-hosts-{port}", ["nginx", "-c", conf, "-p", ctx.work], ctx.pins.sut)
    wait_until(lambda: answers(f"http://127.0.0.1:{port}/", hosts[len(hosts) // 2]), "nginx with hosts",
               proc=proc)

    def add(host):
        with open(os.path.join(included, host + ".conf"), "w") as f:
            f.write(block(host))
        os.kill(proc.pid, signal.SIGHUP)
    return proc.pid, add


# ---- Knoxy ----

def knoxy_queue(procs, port, user_port, cpu, cc=0):
    """knoxy-queue in front of 127.0.0.1:user_port with CONTAINER_CONCURRENCY=cc."""
    env = {
        "CONTAINER_CONCURRENCY": str(cc), "QUEUE_SERVING_PORT": str(port), "QUEUE_SERVING_TLS_PORT": "0",
        "USER_PORT": str(user_port), "REVISION_TIMEOUT_SECONDS": "300", "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "warn", "SERVING_NAMESPACE": "default", "SERVING_CONFIGURATION": "hello",
        "SERVING_REVISION": "hello-00001", "SERVING_POD": f"hello-00001-{port}", "SERVING_POD_IP": "127.0.0.1",
        "KNOXY_BIND_ADDRESS": "127.0.0.1", "KNOXY_ADMIN_PORT": "0", "KNOXY_METRICS_PORT": "0",
    }
    proc = procs.start(f"queue-{port}", [os.path.join(RELEASE, "knoxy-queue")], cpu, env)
    wait_until(lambda: listening(port), f"knoxy-queue on {port}", proc=proc)
    return [proc.pid]


def knoxy_gateway(procs, config_dir, ports, cpu, threads=1, probe_host=None):
    """The knoxy gateway serving the KIngresses of `config_dir`; `ports` has http, https and
    admin. Waits until `probe_host` is served (or the admin port answers)."""
    admin = ports["admin"]
    argv = [os.path.join(RELEASE, "knoxy"), "--config-dir", config_dir,
            "--http", f"127.0.0.1:{ports['http']}", "--https", f"127.0.0.1:{ports.get('https', 0)}",
            "--private-http", "127.0.0.1:0", "--private-https", "127.0.0.1:0",
            "--admin", f"127.0.0.1:{admin}", "--threads", str(threads), "--autoscaler-url", "",
            "--upgrade-sock", os.path.join(procs.work, f"upgrade-{admin}.sock")]
    proc = procs.start(f"knoxy-{admin}", argv, cpu)
    if probe_host:
        wait_until(lambda: answers(f"http://127.0.0.1:{ports['http']}/", probe_host),
                   f"the gateway to serve {probe_host}", timeout=60, proc=proc)
    else:
        wait_until(lambda: listening(admin), "the gateway's admin port", proc=proc)
    return [proc.pid]


# ---- KIngress and friends, for the gateway's config directory ----

def ingress(name, host, splits, tls_secret=None):
    """A KIngress of knoxy's class for `host`; splits are (service, percent) pairs, each split
    appending the Knative-Serving-Revision and -Namespace headers, as Knative's do."""
    lines = [f"""apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: {name}
  namespace: default
  annotations: {{networking.knative.dev/ingress.class: {KNOXY_CLASS}}}
spec:"""]
    if tls_secret:
        lines.append(f"  tls: [{{hosts: [{host}], secretName: {tls_secret}, secretNamespace: default}}]")
    lines.append(f"""  rules:
  - hosts: [{host}]
    visibility: ExternalIP
    http:
      paths:
      - splits:""")
    for service, percent in splits:
        lines.append(f"        - {{serviceNamespace: default, serviceName: {service}, servicePort: 80, "
                     f"percent: {percent}, appendHeaders: {{Knative-Serving-Revision: {service}, "
                     "Knative-Serving-Namespace: default}}")
    return "\n".join(lines) + "\n---\n"


def service(name, port, port_name="http"):
    """A Service and its EndpointSlice: one endpoint, 127.0.0.1:port (port_name h2c: the
    gateway speaks h2c to it, as Knative's gateways do for such ports)."""
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: {port_name}, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-x, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{name: {port_name}, port: {port}}}]
---
"""


def revision(name, queue_port, cc=0):
    """A Knative Revision (so the gateway throttles and probes it, as the activator) whose one
    pod is the knoxy-queue on queue_port."""
    return f"""apiVersion: serving.knative.dev/v1
kind: Revision
metadata: {{name: {name}, namespace: default}}
spec: {{containerConcurrency: {cc}, containers: [{{image: x}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-private-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}-private}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
ports: [{{name: http, port: {queue_port}}}]
---
"""


def tls_secret(name, cert_pem, key_pem):
    import base64
    b64 = lambda text: base64.b64encode(text.encode()).decode()
    return f"""apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
data:
  tls.crt: {b64(cert_pem)}
  tls.key: {b64(key_pem)}
---
"""


def certificate(work, host):
    """A self-signed ECDSA P-256 certificate for `host`: (cert PEM, key PEM, path of both)."""
    key, crt, both = (os.path.join(work, f"tls.{ext}") for ext in ("key", "crt", "pem"))
    if not os.path.exists(both):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "2", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
                        "-keyout", key, "-out", crt], check=True, capture_output=True)
        with open(both, "w") as f:
            f.write(open(crt).read() + open(key).read())
    return open(crt).read(), open(key).read(), both


# ---- helpers ----

def _haproxy_cfg(work, name, threads, bind, frontend, server):
    """One frontend (`frontend`: its extra lines) to one server, http-reuse always."""
    path = os.path.join(work, f"{name}.cfg")
    with open(path, "w") as f:
        f.write(f"""global
  nbthread {threads}
  maxconn 8000
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 60s
  http-reuse always
frontend fe
  bind {bind}
  default_backend be
{frontend}backend be
  server s1 {server}
""")
    return path


def _nginx_conf(work, name, workers, servers):
    path = os.path.join(work, f"{name}.conf")
    with open(path, "w") as f:
        f.write(f"""worker_processes {workers};
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.error.log;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  keepalive_requests 1000000;
{servers}
}}
""")
    return path


def _nginx_workers(proc):
    wait_until(lambda: children(proc.pid), "nginx's workers")
    return children(proc.pid)
