#!/usr/bin/env bash
# Web client throughput vs the bare data channel in the same Chromium
# (bench/web/throughput.mjs), then BENCHMARKS.md. A benchmark, not a test.
#   scripts/bench-web.sh [MiB=1024] [rounds=2]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "needs Debian's chromium (scripts/test.sh installs it)" >&2; exit 1; }
cargo build -p tallow-signaling --bin tallow-server
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
node bench/web/throughput.mjs "${1:-1024}" "${2:-2}"
scripts/bench-report.sh
