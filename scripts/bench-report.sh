#!/usr/bin/env bash
# Assemble BENCHMARKS.md from the sections the benchmark scripts write to
# bench/results (relay first). Called by scripts/bench-relay.sh,
# scripts/bench-signaling.sh and scripts/bench-web.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
{
    echo "# Benchmarks"
    echo
    echo "Written by \`scripts/bench-relay.sh\`, \`scripts/bench-signaling.sh\` and \`scripts/bench-web.sh\` (benchmarks, not tests)."
    echo "Each compares against a reference measured in the same run on the same machine; compare within a"
    echo "table, not across machines."
    echo
    for f in bench/results/relay.md bench/results/signaling.md bench/results/web.md; do
        if [[ -f $f ]]; then cat "$f"; fi
    done
} >BENCHMARKS.md
