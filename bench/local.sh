#!/usr/bin/env bash
# knoxy local, measured from outside with one clock (the Python below):
#  1. from `knoxy local` starting to the first 200 of its Service (RUNS times);
#  2. cold start at zero: a request sent to a revision at zero, from its new instance
#     turning ready (the later of its app's and its queue's `listening on` lines, read as
#     they are printed) to the response, and the whole request (RUNS times);
#  3. idle memory: RSS and PSS of `knoxy local` with 10 Services, all at zero.
# Knative's own control plane on one node (activator, autoscaler, controller, webhook,
# net-kourier and its gateway) takes about 165 MiB (the figure issue 14 cites).
#
#   bench/local.sh [RUNS]      (default 5)
# Writes bench/results/local-<date>.md and prints it.
set -euo pipefail
RUNS=${1:-5}
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3-minimal >/dev/null; }
cargo build --release -q -p knoxy -p knoxy-queue -p knoxy-apps --bins
OUT="bench/results/local-$(date -u +%Y-%m-%d).md"
{
  echo "# knoxy local ($(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD))"
  echo
  echo "\`bench/local.sh $RUNS\` on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); release builds; knoxy-helloworld behind knoxy-queue; config-autoscaler stable-window 6s, scale-to-zero-grace-period 2s."
  echo
  python3 - "$RUNS" <<'PY'
import json, os, statistics, subprocess, sys, tempfile, threading, time, urllib.request

RUNS = int(sys.argv[1])
KNOXY = os.path.abspath("target/release/knoxy")
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
    def __init__(self, services):
        self.dir = tempfile.mkdtemp(prefix="knoxy-local-bench-")
        with open(os.path.join(self.dir, "config.yaml"), "w") as f:
            f.write(CONFIG)
        with open(os.path.join(self.dir, "services.yaml"), "w") as f:
            f.write("".join(SERVICE % s for s in services))
        self.lines = []  # (monotonic time, line)
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [KNOXY, "local", self.dir, "--http", HTTP, "--https", "127.0.0.1:0",
             "--private-http", "127.0.0.1:0", "--private-https", "127.0.0.1:0", "--admin", ADMIN],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append((time.monotonic(), line))

    def get(self, host, timeout=30):
        req = urllib.request.Request("http://%s/" % HTTP, headers={"Host": host})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status
        except Exception:
            return None

    def view(self):
        with urllib.request.urlopen("http://%s/local" % ADMIN, timeout=5) as r:
            return json.load(r)

    def until(self, done, limit=90):
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                if done(self.view()):
                    return
            except Exception:
                pass
            time.sleep(0.05)
        raise SystemExit("timed out")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)

def stats(xs):
    xs = sorted(xs)
    return "median %.1f ms (min %.1f, max %.1f; %d runs)" % (statistics.median(xs), xs[0], xs[-1], len(xs))

first, cold, whole = [], [], []
for _ in range(RUNS):
    local = Local(["hello"])
    while local.get("hello.default.example.com", timeout=5) != 200:
        time.sleep(0.002)
    first.append((time.monotonic() - local.started) * 1e3)
    local.stop()

local = Local(["hello"])
for _ in range(RUNS):
    local.until(lambda v: all(r["instances"] == 0 for r in v["revisions"]))
    time.sleep(0.5)
    with local.lock:
        seen = len(local.lines)
    sent = time.monotonic()
    status = local.get("hello.default.example.com")
    done = time.monotonic()
    assert status == 200, status
    with local.lock:
        new = local.lines[seen:]
    app = [t for t, l in new if " app] " in l and "listening on" in l]
    queue = [t for t, l in new if " queue] " in l and "listening on main" in l]
    ready = max(app[0], queue[0])
    cold.append((done - ready) * 1e3)
    whole.append((done - sent) * 1e3)
local.stop()

ten = ["svc%d" % i for i in range(10)]
local = Local(ten)
local.until(lambda v: len(v["revisions"]) == 10 and all(r["instances"] == 0 for r in v["revisions"]))
time.sleep(2)
pid = local.proc.pid
rss = int(next(l for l in open("/proc/%d/status" % pid) if l.startswith("VmRSS")).split()[1])
pss = int(next(l for l in open("/proc/%d/smaps_rollup" % pid) if l.startswith("Pss:")).split()[1])
children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
local.stop()

print("| what | figure |")
print("|---|---|")
print("| `knoxy local` start to the first 200 | %s |" % stats(first))
print("| cold start at zero, instance ready to response | %s |" % stats(cold))
print("| cold start at zero, the whole request (instance start included) | %s |" % stats(whole))
print("| idle, 10 Services at zero: RSS / PSS of `knoxy local` | %.1f MiB / %.1f MiB (%d child processes) |" % (rss / 1024, pss / 1024, len(children)))
print("| Knative's control plane on one node (cited, issue 14) | about 165 MiB |")
PY
} | tee "$OUT"
