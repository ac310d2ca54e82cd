#!/usr/bin/env bash
# Build and run tallow-server locally with development settings: readable
# logs, loopback relaying allowed, web client from ./web.
# Extra arguments go to tallow-server (see `tallow-server --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

export LOG_FORMAT="${LOG_FORMAT:-pretty}"
export TALLOW_LISTEN="${TALLOW_LISTEN:-127.0.0.1:8080}"
export TURN_ALLOW_LOOPBACK="${TURN_ALLOW_LOOPBACK:-true}"
export TALLOW_WEB_ROOT="${TALLOW_WEB_ROOT:-$PWD/web}"

cargo build --release -p tallow-signaling --bin tallow-server
echo "tallow-server on http://$TALLOW_LISTEN (Ctrl-C drains and stops)"
exec target/release/tallow-server "$@"
