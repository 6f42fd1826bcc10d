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
import sys
sys.path.insert(0, "bench")
from knoxybench import local

runs = int(sys.argv[1])
first = local.first_answers(runs)
cold, whole = local.cold_starts(runs)
rss, pss, children = local.idle_memory(10)
print("| what | figure |")
print("|---|---|")
print(f"| `knoxy local` start to the first 200 | {local.describe(first)} |")
print(f"| cold start at zero, instance ready to response | {local.describe(cold)} |")
print(f"| cold start at zero, the whole request (instance start included) | {local.describe(whole)} |")
print(f"| idle, 10 Services at zero: RSS / PSS of `knoxy local` | {rss:.1f} MiB / {pss:.1f} MiB ({children} child processes) |")
print("| Knative's control plane on one node (cited, issue 14) | about 165 MiB |")
PY
} | tee "$OUT"
