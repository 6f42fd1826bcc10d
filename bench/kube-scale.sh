#!/usr/bin/env bash
# `knoxy --kubernetes` at scale (issue 15), against the fake API server the tests use
# (tests/src/kubeapi.rs), run inside the measuring process (tests/src/bin/knoxy-kubescale.rs):
# INGRESSES KIngresses, each with its Service and an EndpointSlice of 5 endpoints; the time
# from starting knoxy to serving all of them (the network probe of the first and last host
# answers 200), the time from each of 100 KIngress updates (a new host) to serving it, and
# knoxy's RSS. Bars: <= 5 s, p99 <= 100 ms, RSS <= 200 MB.
#
#   bench/kube-scale.sh [RUNS] [INGRESSES]     (defaults: 3 and 10000)
# Writes bench/results/kube-scale-<date>T<time>Z.md (never another run's file) and prints it.
set -euo pipefail
RUNS=${1:-3}
INGRESSES=${2:-10000}
cd "$(dirname "$0")/.."
cargo build --release -q -p knoxy -p knoxy-tests --bins
OUT="bench/results/kube-scale-$(date -u +%Y-%m-%dT%H%MZ).md"
{
  echo "# knoxy --kubernetes at scale ($(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD))"
  echo
  echo "\`bench/kube-scale.sh $RUNS $INGRESSES\` on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); release builds; the fake API server runs in the measuring process, on the same 2 CPUs."
  echo
  for run in $(seq "$RUNS"); do
    target/release/knoxy-kubescale --ingresses "$INGRESSES" --endpoints 5 --updates 100 2>/dev/null | if [ "$run" = 1 ]; then cat; else tail -n 1; fi
  done
} | tee "$OUT"
