#!/usr/bin/env bash
# Probe a tallow-server: liveness, readiness and (optionally) metrics.
# Usage: scripts/health-check.sh [BASE_URL] [--metrics] [--cacert FILE | --pin PIN]
#   BASE_URL defaults to $TALLOW_URL or http://127.0.0.1:8080.
#   --cacert FILE: trust this certificate (TALLOW_TLS_CERT's file) for https://.
#   --pin PIN: trust the key with this pin (the `pin` a self-signed server logs).
# Exit status: 0 healthy and ready, 1 not ready, 2 not alive, 3 bad usage.
set -euo pipefail

base="${TALLOW_URL:-http://127.0.0.1:8080}"
check_metrics=false
tls=()
while (($#)); do
    case "$1" in
        --metrics) check_metrics=true ;;
        --cacert) [[ $# -ge 2 ]] || { echo "--cacert needs a file" >&2; exit 3; }
            tls=(--cacert "$2"); shift ;;
        # The pin alone vouches for the key: a self-signed certificate has
        # no CA for curl to check.
        --pin) [[ $# -ge 2 && "$2" == sha256//* ]] || { echo "--pin needs sha256//BASE64" >&2; exit 3; }
            tls=(--insecure --pinnedpubkey "$2"); shift ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        http://*|https://*) base="${1%/}" ;;
        *) echo "unknown argument: $1" >&2; exit 3 ;;
    esac
    shift
done

fetch() { # url -> prints "STATUS BODY"
    local out status
    out=$(curl -sS --max-time 5 ${tls[@]+"${tls[@]}"} -w '\n%{http_code}' "$1" 2>&1) || { echo "000 $out"; return; }
    status="${out##*$'\n'}"
    echo "$status ${out%$'\n'*}"
}

read -r status body < <(fetch "$base/api/health")
if [[ "$status" != 200 ]]; then
    echo "NOT ALIVE: $base/api/health -> $status $body" >&2
    exit 2
fi
echo "alive: $body"

read -r status body < <(fetch "$base/api/ready")
if [[ "$status" != 200 ]]; then
    echo "NOT READY: $base/api/ready -> $status $body" >&2
    exit 1
fi
echo "ready: $body"

if $check_metrics; then
    metrics=$(curl -fsS --max-time 5 ${tls[@]+"${tls[@]}"} "$base/metrics")
    grep -E '^tallow_(connections|sessions|nameplates) ' <<<"$metrics" || {
        echo "metrics lack the tallow_ gauges" >&2
        exit 1
    }
fi
