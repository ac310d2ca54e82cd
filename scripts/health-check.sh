#!/usr/bin/env bash
# Probe a tallow-server: liveness, readiness, and on request its metrics and
# TURN credentials.
# Usage: scripts/health-check.sh [dev|prod|k8s|URL] [--metrics] [--turn]
#                                [--cacert FILE | --pin PIN]
#   dev   http://127.0.0.1:8080 (scripts/deploy-dev.sh, the compose dev stack)
#   prod  https://$TALLOW_DOMAIN (default localhost): the compose production
#         stack through NGINX
#   k8s   the signaling Deployment, through `kubectl port-forward`
#         (namespace $TALLOW_K8S_NAMESPACE, default tallow; deployment
#         $TALLOW_K8S_DEPLOYMENT, default tallow-server; metrics port 9090)
#   URL   any base URL; without a target, $TALLOW_URL or the dev address
#   --metrics       also check /metrics carries the tallow_ gauges
#   --turn          also check /api/turn/credentials hands out credentials
#   --cacert FILE   trust this certificate (TALLOW_TLS_CERT's file) for https://
#   --pin PIN       trust the key with this pin (the `pin` a self-signed
#                   server logs)
# Colour on a terminal (NO_COLOR=1 turns it off). Exit status: 0 every check
# passed, 1 not ready or a requested check failed, 2 not alive (nothing
# answers with the server's JSON in 5 s: a page or a redirect does not
# count; or TLS cannot be trusted), 3 bad usage.
set -euo pipefail

base="${TALLOW_URL:-http://127.0.0.1:8080}"
metrics_base=""
check_metrics=false
check_turn=false
target=""
tls=()
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case "$1" in
        --metrics) check_metrics=true ;;
        --turn) check_turn=true ;;
        --cacert) [[ $# -ge 2 ]] || { echo "--cacert needs a file" >&2; exit 3; }
            tls=(--cacert "$2"); shift ;;
        # The pin alone vouches for the key: a self-signed certificate has
        # no CA for curl to check.
        --pin) [[ $# -ge 2 && "$2" == sha256//* ]] || { echo "--pin needs sha256//BASE64" >&2; exit 3; }
            tls=(--insecure --pinnedpubkey "$2"); shift ;;
        -h|--help) usage; exit 0 ;;
        dev) target=dev; base="http://127.0.0.1:8080" ;;
        prod) target=prod; base="https://${TALLOW_DOMAIN:-localhost}" ;;
        k8s) target=k8s ;;
        http://*|https://*) target=url; base="${1%/}" ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 3 ;;
    esac
    shift
done

if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
    green=$'\e[32m' red=$'\e[31m' yellow=$'\e[33m' bold=$'\e[1m' reset=$'\e[0m'
else
    green="" red="" yellow="" bold="" reset=""
fi
pass() { printf '%sPASS%s %s\n' "$green" "$reset" "$*"; }
fail() { printf '%sFAIL%s %s\n' "$red" "$reset" "$*" >&2; }

forward_pid=""
# shellcheck disable=SC2317  # called by the trap
cleanup() { if [[ -n "$forward_pid" ]]; then kill "$forward_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

if [[ "$target" == k8s ]]; then
    ns="${TALLOW_K8S_NAMESPACE:-tallow}"
    deploy="${TALLOW_K8S_DEPLOYMENT:-tallow-server}"
    command -v kubectl >/dev/null || { fail "kubectl is not installed"; exit 2; }
    if ! kubectl -n "$ns" rollout status "deployment/$deploy" --timeout=10s >/dev/null 2>&1; then
        fail "deployment/$deploy in namespace $ns is not rolled out"
        echo "  kubectl -n $ns get pods; kubectl -n $ns describe deployment/$deploy" >&2
        exit 2
    fi
    pass "deployment/$deploy rolled out in $ns"
    log=$(mktemp)
    kubectl -n "$ns" port-forward "deployment/$deploy" :8080 :9090 >"$log" 2>&1 &
    forward_pid=$!
    # kubectl prints "Forwarding from 127.0.0.1:LOCAL -> REMOTE" per port.
    for _ in $(seq 1 50); do
        grep -q -- '-> 9090' "$log" && break
        sleep 0.2
    done
    http_port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) -> 8080$/\1/p' "$log" | head -n1)
    metrics_port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) -> 9090$/\1/p' "$log" | head -n1)
    rm -f "$log"
    [[ -n "$http_port" ]] || { fail "kubectl port-forward did not start"; exit 2; }
    base="http://127.0.0.1:$http_port"
    metrics_base="http://127.0.0.1:$metrics_port"
fi
metrics_base="${metrics_base:-$base}"

fetch() { # url -> prints "STATUS BODY" on one line
    local out status location body
    out=$(curl -sS --max-time 5 ${tls[@]+"${tls[@]}"} -w '\n%{http_code} %{redirect_url}' "$1" 2>&1) || { out="${out%$'\n'*}"; echo "000 ${out//$'\n'/ }"; return; }
    read -r status location <<<"${out##*$'\n'}"
    body="${out%$'\n'*}"
    # Not followed: a probe checks the server it was given.
    [[ -z "$location" ]] || body="redirected to $location"
    body="${body//$'\n'/ }"
    echo "$status $body"
}

# Only tallow-server's own answers count: a 200 from whatever else holds the
# address (a web page, a proxy's default site) is not a live server.
alive_re='^\{.*"status": *"ok"'
ready_re='^\{.*"status": *"ready"'

printf '%sprobing %s%s\n' "$bold" "$base" "$reset"
read -r status body < <(fetch "$base/api/health/liveness")
if [[ "$status" != 200 || ! "$body" =~ $alive_re ]]; then
    fail "NOT ALIVE: $base/api/health/liveness -> $status ${body:0:300}"
    exit 2
fi
pass "alive: $body"

failed=0
read -r status body < <(fetch "$base/api/health/readiness")
if [[ "$status" == 200 && "$body" =~ $ready_re ]]; then
    pass "ready: $body"
else
    fail "NOT READY: $base/api/health/readiness -> $status ${body:0:300}"
    printf '%shint%s: "failed" names the check: presence = the store (Redis) does not answer, shutdown = the node is draining\n' "$yellow" "$reset" >&2
    failed=1
fi

if $check_metrics; then
    if metrics=$(curl -fsS --max-time 5 ${tls[@]+"${tls[@]}"} "$metrics_base/metrics" 2>&1) &&
        gauges=$(grep -E '^tallow_(connections|sessions|nameplates) ' <<<"$metrics"); then
        pass "metrics: $(tr '\n' ' ' <<<"$gauges")"
    else
        fail "metrics at $metrics_base/metrics lack the tallow_ gauges"
        failed=1
    fi
fi

if $check_turn; then
    read -r status body < <(fetch "$base/api/turn/credentials")
    if [[ "$status" == 200 && "$body" == *'"username"'* && "$body" == *'"uris"'* ]]; then
        pass "turn credentials: $(grep -o '"uris":\[[^]]*\]' <<<"$body")"
    else
        fail "turn credentials: $base/api/turn/credentials -> $status $body"
        failed=1
    fi
fi
exit "$failed"
