#!/usr/bin/env bash
# Runs every test: unit tests, and the black-box tests in tests/ that start the real binaries
# on loopback ports (they find them beside the test executables, so build the bins first).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --workspace --bins
cargo test --workspace "$@"
