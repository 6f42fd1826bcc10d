"""Load generators, each run for a fixed time against one target, each read into the same
figures: requests, rps, p50/p90/p99/max (ms) and errors (failed connections, resets,
timeouts and non-2xx answers)."""
import json
import os
import re
import subprocess
import tempfile

from .procs import taskset
from .servers import RELEASE

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


class Load:
    """One way of loading a target: `kind` is closed (at saturation) or open (fixed rate)."""

    def __init__(self, name, kind, describe, run):
        self.name, self.kind, self.describe, self._run = name, kind, describe, run

    def run(self, target, secs, cpu):
        return self._run(target, secs, cpu)


# ---- the tools ----

def wrk(threads=1, conns=50, close=False):
    """wrk, closed loop: `conns` connections each sending its next request when the last is
    answered. close=True sends `Connection: close`, so every request is a new connection (and
    over https a full TLS handshake)."""
    def run(target, secs, cpu):
        argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--latency", "-H", f"Host: {target.host}"]
        if close:
            argv += ["-H", "Connection: close"]
        return wrk_figures(_output(taskset(cpu, argv + [target.url])))
    extra = ", `Connection: close` (a new connection per request)" if close else ""
    return Load("wrk" + ("-close" if close else ""), "closed",
                f"`wrk -t{threads} -c{conns}`{extra}: closed loop, at saturation", run)


def oha(rate, conns=50):
    """oha, open loop: `rate` requests/s from `conns` connections, latency counted from when
    each request was due (--latency-correction: no coordinated omission)."""
    def run(target, secs, cpu):
        argv = ["oha", "--no-tui", "--output-format", "json", "--latency-correction", "-w", "-z", f"{secs}s",
                "-c", str(conns), "-q", str(rate), "-H", f"Host: {target.host}", target.url]
        if target.url.startswith("https"):
            argv.insert(1, "--insecure")
        return _oha_figures(json.loads(_output(taskset(cpu, argv))), secs)
    return Load(f"oha-{rate}", "open", f"`oha -q {rate} -c {conns} --latency-correction`: open loop, "
                f"{rate:,} requests/s offered", run)


def h2load(conns=50, streams=1, grpc=None):
    """h2load over h2c (prior knowledge), closed loop: `conns` connections with `streams`
    concurrent streams each. grpc=(path, body file): unary gRPC calls (POST, application/grpc)."""
    def run(target, secs, cpu):
        with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
            argv = ["h2load", "-t1", f"-c{conns}", f"-m{streams}", f"-D{secs}", "--log-file", log.name,
                    "-H", f":authority: {target.host}"]
            url = target.url
            if grpc:
                path, body = grpc
                argv += ["-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers"]
                url = url.rstrip("/") + path
            out = _output(taskset(cpu, argv + [url]))
            return _h2load_figures(out, log.read(), secs)
    what = "unary gRPC calls" if grpc else "requests"
    return Load("h2load-grpc" if grpc else "h2load", "closed",
                f"`h2load -c{conns} -m{streams}` ({what} over h2c): closed loop, at saturation", run)


def wsbench(conns=50):
    """WebSocket round trips: `conns` connections, each sending a text message and waiting
    for the echo (tests/src/bin/knoxy-wsbench.rs)."""
    def run(target, secs, cpu):
        addr = target.url.split("//", 1)[1].rstrip("/")
        argv = [os.path.join(RELEASE, "knoxy-wsbench"), addr, target.host, str(conns), str(secs)]
        return json.loads(_output(taskset(cpu, argv)))
    return Load("websocket", "closed", f"`knoxy-wsbench {conns}`: {conns} WebSockets, each a round trip at a "
                "time (text message, echo)", run)


# ---- reading their output ----

def percentile(ordered, q):
    """The q-quantile of sorted samples (nearest rank), 0 when there are none."""
    return ordered[round((len(ordered) - 1) * q)] if ordered else 0.0


def _output(argv):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and not done.stdout:
        raise RuntimeError(f"{argv[0] if argv[0] != 'taskset' else argv[3]} failed: {done.stderr.strip()[:300]}")
    return done.stdout


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk_figures(out):
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    pct = lambda p: _ms(re.search(rf"\s{p}%\s+(\S+)", out).group(1))
    return {"requests": requests, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": pct(50), "p90": pct(90), "p99": pct(99),
            "max": _ms(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1)), "errors": errors}


def _oha_figures(report, secs):
    summary, pct = report["summary"], report["latencyPercentiles"]
    statuses = {int(code): n for code, n in report.get("statusCodeDistribution", {}).items()}
    ok = sum(n for code, n in statuses.items() if 200 <= code < 300)
    errors = sum(statuses.values()) - ok + sum(report.get("errorDistribution", {}).values())
    ms = lambda v: (v or 0.0) * 1e3
    figures = {"requests": sum(statuses.values()), "rps": summary.get("requestsPerSec") or 0.0,
               "p50": ms(pct.get("p50")), "p90": ms(pct.get("p90")), "p99": ms(pct.get("p99")),
               "max": ms(summary.get("slowest")), "errors": errors}
    if errors:  # what they were, for the JSON
        figures["error_kinds"] = {**report.get("errorDistribution", {}),
                                  **{f"HTTP {c}": n for c, n in statuses.items() if not 200 <= c < 300}}
    return figures


def _h2load_figures(out, log, secs):
    durations, errors = [], 0
    for line in log.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            durations.append(int(fields[-1]) / 1e3)
            errors += not fields[1].startswith("2")
    m = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    errors += sum(int(n) for n in m.groups()) if m else 0
    durations.sort()
    rps = re.search(r"([\d.]+) req/s", out)
    return {"requests": len(durations), "rps": float(rps.group(1)) if rps else len(durations) / secs,
            "p50": percentile(durations, 0.5), "p90": percentile(durations, 0.9),
            "p99": percentile(durations, 0.99), "max": durations[-1] if durations else 0.0,
            "errors": errors}


def hey_figures(out):
    """hey's text report, read into the same figures."""
    statuses = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    errors = sum(n for c, n in statuses.items() if not 200 <= c < 300)
    errors += sum(int(n) for n in re.findall(r"\[(\d+)\]\s+Get", out))
    pct = lambda p: float(re.search(rf"\s{p}% in ([\d.]+) secs", out).group(1)) * 1e3
    return {"requests": sum(statuses.values()), "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": pct(50), "p90": pct(90), "p99": pct(99),
            "max": float(re.search(r"Slowest:\s+([\d.]+) secs", out).group(1)) * 1e3, "errors": errors}
