"""The scenarios of bench/run. A side-by-side scenario starts its systems and names the loads
each one gets; bench/run measures them in shuffled rounds. The others (cold start, reload
under load, the seed's load commands) measure themselves and return their own figures.

Every system is started fresh in each scenario, so its peak RSS is that scenario's."""
import json
import os
import random
import statistics
import subprocess
import threading
import time

from . import load, local, servers
from .procs import answers, children, cpu_seconds, peak_rss_mb, require_free, tree_cpu_seconds, wait_until

HOST = "hello.example.com"
# Offered load of the open-loop runs: below every system's saturation on one core here (the
# slowest, the two-hop paths, saturate above 10,000 requests/s).
RATE = 5000


class Target:
    """One system under load: `pids` are the processes whose CPU and memory are its own;
    role is knoxy, peer or ceiling (straight to the backend). A system of several hops also
    names them (`hops`: name -> pids), so that each one's CPU is reported too."""

    def __init__(self, name, port, pids, role, host=HOST, scheme="http"):
        self.name, self.port, self.pids, self.role, self.host = name, port, pids, role, host
        self.hops = {}
        self.url = f"{scheme}://{'localhost' if scheme == 'https' else '127.0.0.1'}:{port}/"


class SideBySide:
    """A scenario bench/run measures in rounds: every target under every load."""

    def __init__(self, name, title, setup, targets, loads, pinned=True):
        self.name, self.title, self.setup = name, title, setup
        self.targets, self.loads, self.pinned = targets, loads, pinned


# ---- side by side ----

def queue_h1(ctx):
    """knoxy-queue (CC 0 and 10) vs HAProxy and nginx, HTTP/1.1, closed and open loop."""
    backend = ctx.port()
    servers.nginx_backend(ctx.procs, backend, ctx.pins.other)
    return SideBySide(
        "queue-h1", "Queue sidecar, HTTP/1.1",
        "knoxy-queue (CONTAINER_CONCURRENCY 0 and 10) vs HAProxy and nginx as plain proxies, each "
        "1 thread/worker, in front of one nginx backend (13-byte answers); direct = the backend alone.",
        _peers(ctx, backend, edge_headers=False) + _queues(ctx, backend),
        [load.wrk(), load.oha(RATE)])


def queue_h2c(ctx):
    """knoxy-queue vs HAProxy and nginx, h2c clients."""
    backend = ctx.port()
    servers.test_backend(ctx.procs, backend, ctx.pins.other)
    return SideBySide(
        "queue-h2c", "Queue sidecar, h2c",
        "Clients speaking h2c (prior knowledge) to each proxy, 1 thread/worker, in front of Knoxy's test backend "
        "(HTTP/1.1 and h2c on one port). knoxy-queue speaks h2c on to the app, as Knative's queue-proxy does "
        "for HTTP/2 requests, and so does HAProxy (`proto h2`); nginx proxies HTTP/1.1 (it sends HTTP/2 only to "
        "gRPC upstreams).",
        _peers(ctx, backend, edge_headers=False, modes=("h2", "h2c")) + _queues(ctx, backend),
        [load.h2load(conns=10, streams=10)])


def gateway_1(ctx):
    """The gateway (1 and N KIngresses) vs HAProxy and nginx, 1 thread, closed and open loop."""
    backend = ctx.port()
    servers.nginx_backend(ctx.procs, backend, ctx.pins.other)
    one, many = ctx.config_dir("one"), ctx.config_dir("many")
    _write(one, "hello.yaml", _split_ingress(backend))
    middle = ctx.ingresses // 2
    _write(many, "rev.yaml", servers.service("rev", backend))
    _write(many, "ingresses.yaml", "".join(
        servers.ingress(f"h{i}", f"h{i}.example.com", [("rev", 100)]) for i in range(ctx.ingresses)))
    return SideBySide(
        "gateway-1t", "Gateway, 1 thread",
        f"The knoxy gateway routing by host into a 50/50 split of two revisions with appendHeaders, sending "
        f"X-Forwarded-For/-Proto and X-Request-Id, metrics on; `knoxy {ctx.ingresses:,}` holds {ctx.ingresses:,} "
        "KIngresses (the host measured in the middle). HAProxy and nginx send the same edge headers; all 1 "
        "thread/worker.",
        _peers(ctx, backend) + [
            _gateway(ctx, "knoxy", one, HOST),
            _gateway(ctx, f"knoxy {ctx.ingresses:,}", many, f"h{middle}.example.com"),
        ],
        [load.wrk(), load.oha(RATE)])


def gateway_n(ctx):
    """The gateway vs HAProxy and nginx, all on every CPU."""
    threads = os.cpu_count()
    backend = ctx.port()
    servers.nginx_backend(ctx.procs, backend, None)
    one = ctx.config_dir("one")
    _write(one, "hello.yaml", _split_ingress(backend))
    return SideBySide(
        f"gateway-{threads}t", f"Gateway, {threads} threads",
        f"As gateway-1t (1 KIngress), every proxy on {threads} threads/workers, nothing pinned (the proxies "
        "share the CPUs with the load and the backend).",
        _peers(ctx, backend, threads=threads, direct=False, pinned=False) + [
            _gateway(ctx, "knoxy", one, HOST, threads=threads, pinned=False)],
        [load.wrk(threads=2, conns=100)], pinned=False)


def full_path(ctx):
    """Gateway -> knoxy-queue -> app vs chains of two HAProxies and two nginxes."""
    backend = ctx.port()
    servers.nginx_backend(ctx.procs, backend, ctx.pins.other)
    queue = ctx.port()
    queue_pids = servers.knoxy_queue(ctx.procs, queue, backend, ctx.pins.sut)
    config = ctx.config_dir("path")
    _write(config, "hello.yaml", servers.ingress("hello", HOST, [("hello-00001", 100)])
           + servers.revision("hello-00001", queue))
    gateway = _gateway(ctx, "knoxy gateway+queue", config, HOST)
    gateway.hops = {"gateway": gateway.pids, "queue": queue_pids}
    gateway.pids = gateway.pids + queue_pids
    chains = []
    for name, start in (("haproxy x2", servers.haproxy), ("nginx x2", servers.nginx_proxy)):
        inner, outer = ctx.port(), ctx.port()
        second = start(ctx.procs, inner, backend, ctx.pins.sut, edge_headers=False)
        first = start(ctx.procs, outer, inner, ctx.pins.sut)
        chains.append(Target(name, outer, first + second, "peer"))
        chains[-1].hops = {"first": first, "second": second}
    return SideBySide(
        "full-path", "Full path: gateway -> queue -> app",
        "The knoxy gateway routing to a Knative Revision (the activator's throttle and probing, "
        "containerConcurrency 0) whose pod is a knoxy-queue in front of the nginx backend; the peers are "
        "two of their own in a chain (edge headers at the first). CPU is both hops', each hop's after it.",
        [Target("direct", backend, [], "ceiling")] + chains + [gateway],
        [load.wrk(), load.oha(RATE)])


def tls(ctx):
    """TLS termination: keep-alive, and a full handshake per request."""
    backend = ctx.port()
    servers.nginx_backend(ctx.procs, backend, ctx.pins.other)
    cert, key, pem = servers.certificate(ctx.work, "localhost")
    config = ctx.config_dir("tls")
    _write(config, "tls.yaml", servers.ingress("hello", "localhost", [("rev", 100)], tls_secret="cert")
           + servers.tls_secret("cert", cert, key) + servers.service("rev", backend))
    ports = ctx.gateway_ports()
    pids = servers.knoxy_gateway(ctx.procs, config, ports, ctx.pins.sut, probe_host="localhost")
    targets = [Target("knoxy", ports["https"], pids, "knoxy", "localhost", "https")]
    for name, start in (("haproxy", servers.haproxy), ("nginx", servers.nginx_proxy)):
        port = ctx.port()
        targets.append(Target(name, port, start(ctx.procs, port, backend, ctx.pins.sut, mode="tls", tls=pem),
                              "peer", "localhost", "https"))
    return SideBySide(
        "tls", "TLS termination",
        "TLS 1.3 (ECDSA P-256 certificate, SNI `localhost`) in front of the nginx backend, HTTP/1.1 inside; "
        "keep-alive, and a new connection (full handshake) per request.",
        targets, [load.wrk(), load.wrk(close=True)])


def websocket(ctx):
    """WebSocket round trips through each proxy."""
    backend = ctx.port()
    servers.test_backend(ctx.procs, backend, ctx.pins.other)
    config = ctx.config_dir("ws")
    _write(config, "ws.yaml", servers.ingress("hello", HOST, [("rev", 100)]) + servers.service("rev", backend))
    targets = [Target("direct", backend, [], "ceiling"), _gateway(ctx, "knoxy", config, HOST)]
    for name, start, mode in (("haproxy", servers.haproxy, "h1"), ("nginx", servers.nginx_proxy, "ws")):
        port = ctx.port()
        targets.append(Target(name, port, start(ctx.procs, port, backend, ctx.pins.sut, mode=mode,
                                                 edge_headers=False), "peer"))
    return SideBySide(
        "websocket", "WebSocket round trips",
        "50 WebSockets through each proxy to Knoxy's test backend, which echoes text messages.",
        targets, [load.wsbench(50)])


def grpc(ctx):
    """Unary gRPC calls over h2c through each proxy."""
    backend = ctx.port()
    servers.test_backend(ctx.procs, backend, ctx.pins.other)
    config = ctx.config_dir("grpc")
    _write(config, "grpc.yaml", servers.ingress("hello", HOST, [("rev", 100)])
           + servers.service("rev", backend, port_name="h2c"))
    body = os.path.join(ctx.work, "ping.bin")
    message = b"\x0a\x04ping"  # PingRequest{message: "ping"}
    with open(body, "wb") as f:
        f.write(b"\x00" + len(message).to_bytes(4, "big") + message)
    targets = [Target("direct", backend, [], "ceiling"), _gateway(ctx, "knoxy", config, HOST)]
    for name, start, mode in (("haproxy", servers.haproxy, "h2"), ("nginx", servers.nginx_proxy, "grpc")):
        port = ctx.port()
        targets.append(Target(name, port, start(ctx.procs, port, backend, ctx.pins.sut, mode=mode,
                                                 edge_headers=False), "peer"))
    return SideBySide(
        "grpc", "gRPC unary over h2c",
        "Unary calls of `/knoxy.test.Ping/Ping` over h2c end to end, to Knoxy's test backend (which "
        "answers them); the gateway reaches it over h2c as Knative does for a port named h2c.",
        targets, [load.h2load(conns=10, streams=10, grpc=("/knoxy.test.Ping/Ping", body))])


# ---- measured by themselves ----

def cold_start(ctx):
    """The activator's cold start, from knoxy-coldstart (one clock in the measuring process)."""
    out = os.path.join(ctx.work, "coldstart.json")
    runs, burst = (20, 200) if ctx.quick else (100, 1000)
    done = subprocess.run([os.path.join(servers.RELEASE, "knoxy-coldstart"), str(runs), str(burst)],
                          env={**os.environ, "KNOXY_COLDSTART_JSON": out}, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0 or not os.path.exists(out):
        raise RuntimeError(f"knoxy-coldstart failed: {done.stderr.strip()[-300:]}")
    result = json.load(open(out))
    samples = sorted(result["cold_start_ms"])
    return {
        "name": "cold-start", "title": "Cold start from zero, through the activator role",
        "setup": f"{runs} cold starts: a request held at a revision with no pod; the pod's EndpointSlice "
                 "renamed into the watched directory; the time from that write to the held request reaching "
                 "the app behind a real knoxy-queue. Then a burst of "
                 f"{burst} requests at a zero-pod revision (containerConcurrency 10) while 4 pods appear 50 ms "
                 "apart. Knative's activator probes a new pod on a 200 ms tick "
                 "(knative/serving pkg/activator/net/revision_backends.go), so its wait after a pod turns "
                 "ready is up to 200 ms by design.",
        "samples_ms": samples,
        "figures": {"p50": load.percentile(samples, 0.5), "p90": load.percentile(samples, 0.9),
                    "p99": load.percentile(samples, 0.99),
                    "max": samples[-1], "burst": result["burst"], "burst_ok": result["burst_ok"],
                    "burst_failed": result["burst_failed"], "burst_ms": result["burst_ms"]},
        "local": _local_cold_starts(ctx),
    }


def _local_cold_starts(ctx):
    """Whole cold starts of `knoxy local` (instance processes started), 3 of them: each waits
    ~10 s for the revision to be back at zero, too long for --quick."""
    if ctx.quick:
        return None
    ready_to_answer, whole = local.cold_starts(3)
    return {"ready_to_answer_ms": ready_to_answer, "whole_ms": whole}


def reload_under_load(ctx):
    """Hosts added under load, each system its own way: time to serve the new host, what the
    load saw meanwhile."""
    backend = ctx.port()
    servers.nginx_backend(ctx.procs, backend, ctx.pins.other)
    count, changes = ctx.ingresses, (2 if ctx.quick else 3)
    gap = 1 if ctx.quick else 2  # seconds from one change to the next
    secs = changes * gap + 2
    hosts = [f"h{i}.example.com" for i in range(count)]
    starts = {"knoxy": _knoxy_table, "haproxy": servers.haproxy_hosts, "nginx": servers.nginx_hosts}
    systems = {}
    for name in random.sample(list(starts), len(starts)):
        port = ctx.port()
        pid, add = starts[name](ctx, port, backend, hosts)
        target = Target(name, port, [pid], "knoxy" if name == "knoxy" else "peer", hosts[count // 2])
        result, waits = {}, []
        loader = threading.Thread(target=lambda: result.update(load.wrk().run(target, secs, ctx.pins.other)))
        cpu_before = tree_cpu_seconds(pid)
        loader.start()
        time.sleep(1)
        for k in range(changes):
            host = f"new{k}.example.com"
            started = time.monotonic()
            add(host)
            wait_until(lambda: answers(f"http://127.0.0.1:{port}/", host, timeout=1), f"{name} to serve {host}",
                       30, every=0.002)
            waits.append((time.monotonic() - started) * 1e3)
            time.sleep(max(0.0, gap - (time.monotonic() - started)))
        loader.join()
        result["cpu_us"] = (tree_cpu_seconds(pid) - cpu_before) / max(result["requests"], 1) * 1e6
        systems[name] = {**result, "role": target.role, "samples_ms": waits, "served_p50": statistics.median(waits),
                         "served_max": max(waits), "rss_mb": peak_rss_mb([pid] + children(pid))}
        ctx.procs.stop_one(pid)
    return {
        "name": "reload", "title": f"Table reload under load ({count:,} hosts)",
        "setup": f"Each system routing {count:,} hosts (knoxy: KIngresses; nginx: a server block each; HAProxy: a "
                 f"map) under `wrk -t1 -c50` on one of them for {secs} s, systems in a random order; {changes} times "
                 "a host is added the system's own way (knoxy: a KIngress file renamed into its directory; nginx: a "
                 "file included, then `nginx -s reload`'s SIGHUP; HAProxy: a map line, then a master-worker reload, "
                 "SIGUSR2); the time from the change until the new host answers (polled every 2 ms), and what wrk "
                 "saw meanwhile. CPU counts reloaded workers too.",
        "figures": systems,
    }


def _knoxy_table(ctx, port, backend, hosts):
    """The gateway serving `hosts`, and how to add one: a KIngress file renamed into place."""
    config = ctx.config_dir(f"reload-{port}")
    _write(config, "rev.yaml", servers.service("rev", backend))
    _write(config, "ingresses.yaml", "".join(
        servers.ingress(h.split(".")[0], h, [("rev", 100)]) for h in hosts))
    ports = {"http": port, "https": ctx.port(), "admin": ctx.port()}
    pids = servers.knoxy_gateway(ctx.procs, config, ports, ctx.pins.sut, probe_host=hosts[len(hosts) // 2])

    def add(host):
        name = host.split(".")[0]
        _write(ctx.work, f"{name}.yaml", servers.ingress(name, host, [("rev", 100)]))
        os.rename(os.path.join(ctx.work, f"{name}.yaml"), os.path.join(config, f"{name}.yaml"))
    return pids[0], add


def seed_commands(ctx):
    """The seed's load commands against `knoxy local` serving deploy/examples/local on :8080."""
    secs = 2 if ctx.quick else 10
    url = "http://127.0.0.1:8080?sleep=100&prime=10000&bloat=5"
    host = "hello.default.example.com"
    require_free(8080, 8081, 8443, 8444, 9095)
    proc = ctx.procs.start("local", [os.path.join(servers.RELEASE, "knoxy"), "local",
                                     os.path.join(servers.ROOT, "deploy/examples/local")])
    wait_until(lambda: answers(url, host, timeout=30), "knoxy local to serve hello", 120, proc=proc)
    commands = {
        "hey": ["hey", "-z", f"{secs}s", "-c", "20", "-host", host, url],
        "wrk": ["wrk", "-t2", "-c20", f"-d{secs}s", "--latency", "-H", f"Host: {host}", url.replace("?", "/?")],
    }
    figures = {}
    for name, argv in commands.items():
        before = cpu_seconds([proc.pid])
        out = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60).stdout
        fig = load.hey_figures(out) if name == "hey" else load.wrk_figures(out)
        fig["cpu_us"] = (cpu_seconds([proc.pid]) - before) / max(fig["requests"], 1) * 1e6
        figures[name] = fig
        figures[name]["command"] = " ".join(a if " " not in a and "&" not in a else f'"{a}"' for a in argv)
    return {
        "name": "seed", "title": "The seed's load commands against knoxy local",
        "setup": f"`knoxy local deploy/examples/local` (Knative's autoscale sample as `hello`, containerConcurrency "
                 f"target 10 at 60%); each command for {secs} s (the seed says 60 s). CPU per request is knoxy "
                 "local's own (gateway, activator, autoscaler, supervisor), not its instances'.",
        "figures": figures,
    }


# ---- helpers ----

def _peers(ctx, backend, modes=("h1", "h1"), edge_headers=True, threads=1, direct=True, pinned=True):
    """direct (the ceiling), HAProxy and nginx in front of `backend`; modes: HAProxy's, nginx's."""
    cpu = ctx.pins.sut if pinned else None
    targets = [Target("direct", backend, [], "ceiling")] if direct else []
    for (name, start), mode in zip((("haproxy", servers.haproxy), ("nginx", servers.nginx_proxy)), modes):
        port = ctx.port()
        kwargs = {"threads": threads} if name == "haproxy" else {"workers": threads}
        pids = start(ctx.procs, port, backend, cpu, mode=mode, edge_headers=edge_headers, **kwargs)
        targets.append(Target(name, port, pids, "peer"))
    return targets


def _queues(ctx, backend):
    """knoxy-queue with CONTAINER_CONCURRENCY 0 and 10 in front of `backend`."""
    targets = []
    for name, cc in (("knoxy-queue", 0), ("knoxy-queue cc10", 10)):
        port = ctx.port()
        targets.append(Target(name, port, servers.knoxy_queue(ctx.procs, port, backend, ctx.pins.sut, cc=cc), "knoxy"))
    return targets


def _gateway(ctx, name, config, host, threads=1, pinned=True):
    ports = ctx.gateway_ports()
    pids = servers.knoxy_gateway(ctx.procs, config, ports, ctx.pins.sut if pinned else None, threads, host)
    return Target(name, ports["http"], pids, "knoxy", host)


def _split_ingress(backend):
    return (servers.ingress("hello", HOST, [("hello-00001", 50), ("hello-00002", 50)])
            + servers.service("hello-00001", backend) + servers.service("hello-00002", backend))


def _write(directory, name, text):
    with open(os.path.join(directory, name), "w") as f:
        f.write(text)


# name -> (scenario, runs of a round: systems x loads, for the time-left estimate).
SIDE_BY_SIDE = {"queue-h1": (queue_h1, 10), "queue-h2c": (queue_h2c, 5), "gateway-1t": (gateway_1, 10),
                "gateway-Nt": (gateway_n, 3), "full-path": (full_path, 8), "tls": (tls, 6),
                "websocket": (websocket, 4), "grpc": (grpc, 4)}
# name -> (scenario, seconds it takes by default, with --quick).
OWN = {"cold-start": (cold_start, 35, 3), "reload": (reload_under_load, 32, 14), "seed": (seed_commands, 22, 10)}
