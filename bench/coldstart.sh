#!/usr/bin/env bash
# Cold starts through the gateway's activator role (tests/src/bin/knoxy-coldstart.rs):
# from a pod's endpoint turning ready (its EndpointSlice renamed into the config directory
# the gateway watches) to the held request reaching the app behind a real knoxy-queue, over
# COLD_STARTS cold starts; then a burst of BURST requests at a zero-pod revision
# (containerConcurrency 10) while 4 pods appear 50 ms apart, which must all succeed.
# Knative's activator, for comparison, probes a new pod on a 200 ms tick
# (S/pkg/activator/net/revision_backends.go, contract section 4.5).
#
#   bench/coldstart.sh [COLD_STARTS] [BURST]     (defaults: 100 and 1000)
# Writes bench/results/coldstart-<date>.md and prints it.
set -euo pipefail
COLD_STARTS=${1:-100}
BURST=${2:-1000}
cd "$(dirname "$0")/.."
cargo build --release -q -p knoxy -p knoxy-queue -p knoxy-tests --bins
OUT="bench/results/coldstart-$(date -u +%Y-%m-%d).md"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
{
  echo "# Cold starts through the activator role ($(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD))"
  echo
  echo "\`bench/coldstart.sh $COLD_STARTS $BURST\` on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); release builds; gateway with 2 threads, file source."
  echo "Time from the pod's EndpointSlice renamed into place to the held request reaching the app (one clock, in the measuring process)."
  echo
  target/release/knoxy-coldstart "$COLD_STARTS" "$BURST" 2>"$LOG"
} | tee "$OUT"
