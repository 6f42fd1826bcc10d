"""`knoxy local` measured from outside with one clock: start to the first answer, cold starts
from zero, and idle memory. Used by bench/run (cold starts) and bench/local.sh (all three).

Its config: Knative's autoscale sample's helloworld, with config-autoscaler's stable window at
its minimum (6 s) and a 2 s scale-to-zero grace period, so a revision is back at zero within
about 10 s of its last request."""
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

from .procs import answers, require_free, wait_until
from .servers import RELEASE

HTTP, ADMIN = "127.0.0.1:18080", "127.0.0.1:18095"
CONFIG = """apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data: {stable-window: 6s, scale-to-zero-grace-period: 2s}
---
apiVersion: knoxy.dev/v1alpha1
kind: LocalConfig
images: {example.org/hello: [knoxy-helloworld]}
"""
SERVICE = """apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: %s}
spec:
  template:
    spec:
      containers: [{image: example.org/hello}]
---
"""


class Local:
    """`knoxy local` running `services`, its log lines kept with the time each was read."""

    def __init__(self, services):
        require_free(*(int(addr.rsplit(":", 1)[1]) for addr in (HTTP, ADMIN)))
        self.dir = tempfile.mkdtemp(prefix="knoxy-local-bench-")
        with open(os.path.join(self.dir, "config.yaml"), "w") as f:
            f.write(CONFIG)
        with open(os.path.join(self.dir, "services.yaml"), "w") as f:
            f.write("".join(SERVICE % s for s in services))
        self.lines = []  # (monotonic time, line)
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [os.path.join(RELEASE, "knoxy"), "local", self.dir, "--http", HTTP, "--https", "127.0.0.1:0",
             "--private-http", "127.0.0.1:0", "--private-https", "127.0.0.1:0", "--admin", ADMIN],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append((time.monotonic(), line))

    def answers(self, host, timeout=30):
        """True when a GET of `host` answers 2xx."""
        return answers(f"http://{HTTP}/", host, timeout)

    def until(self, done, limit=90):
        """Polls the operator's view (`/local`) until `done(view)`."""
        def view_done():
            with urllib.request.urlopen(f"http://{ADMIN}/local", timeout=5) as r:
                return done(json.load(r))
        wait_until(view_done, "knoxy local's view", limit)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)
        subprocess.run(["rm", "-rf", self.dir])


def first_answers(runs):
    """ms from `knoxy local` starting to the first 200 of its Service, `runs` times."""
    first = []
    for _ in range(runs):
        local = Local(["hello"])
        try:
            wait_until(lambda: local.answers("hello.default.example.com", timeout=5), "knoxy local to answer",
                       60, every=0.002)
            first.append((time.monotonic() - local.started) * 1e3)
        finally:
            local.stop()
    return first


def cold_starts(runs):
    """`runs` requests each sent at a revision at zero: (ms from its new instance turning ready,
    the later of its app's and its queue's `listening on` lines, to the response; ms of the
    whole request)."""
    ready_to_answer, whole = [], []
    local = Local(["hello"])
    try:
        for _ in range(runs):
            local.until(lambda v: v["revisions"] and all(r["instances"] == 0 for r in v["revisions"]))
            time.sleep(0.5)
            with local.lock:
                seen = len(local.lines)
            sent = time.monotonic()
            answered = local.answers("hello.default.example.com")
            done = time.monotonic()
            if not answered:
                raise RuntimeError("knoxy local: a cold start did not answer 2xx")
            with local.lock:
                new = local.lines[seen:]
            app = [t for t, line in new if " app] " in line and "listening on" in line]
            queue = [t for t, line in new if " queue] " in line and "listening on main" in line]
            ready_to_answer.append((done - max(app[0], queue[0])) * 1e3)
            whole.append((done - sent) * 1e3)
    finally:
        local.stop()
    return ready_to_answer, whole


def idle_memory(services=10):
    """(RSS MiB, PSS MiB, child processes) of `knoxy local` with `services` Services at zero."""
    local = Local([f"svc{i}" for i in range(services)])
    try:
        local.until(lambda v: len(v["revisions"]) == services and all(r["instances"] == 0 for r in v["revisions"]))
        time.sleep(2)
        pid = local.proc.pid
        rss = int(next(line for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS")).split()[1])
        pss = int(next(line for line in open(f"/proc/{pid}/smaps_rollup") if line.startswith("Pss:")).split()[1])
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    finally:
        local.stop()
    return rss / 1024, pss / 1024, len(children)


def describe(samples):
    xs = sorted(samples)
    return f"median {statistics.median(xs):.1f} ms (min {xs[0]:.1f}, max {xs[-1]:.1f}; {len(xs)} runs)"
