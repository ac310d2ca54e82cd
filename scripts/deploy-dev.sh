#!/usr/bin/env bash
# Run tallow-server for development, on 127.0.0.1 only.
#
#   scripts/deploy-dev.sh [SERVER ARGS...]
#       No Docker: build with cargo and run the server in the foreground
#       (pretty logs, 127.0.0.1:8080, loopback relaying allowed, web client
#       from ./web, in-memory presence). Extra arguments go to tallow-server
#       (see `tallow-server --help`). Ctrl-C drains and stops it.
#
#   scripts/deploy-dev.sh --compose [--coturn]
#       The compose dev stack (compose.dev.yml): tallow-server built in an
#       image, Redis, and with --coturn the `coturn` profile, whose coturn
#       checks the same TURN_SECRET and whose URLs the server hands out
#       (TURN_URLS) instead of its own relay's. Checks the prerequisites,
#       starts the stack, waits until the server is ready and says what to
#       do when it is not. Needs TURN_SECRET (in the environment or .env).
#       Then `docker compose -f compose.dev.yml watch` rebuilds on changes.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" != --compose ]]; then
    export LOG_FORMAT="${LOG_FORMAT:-pretty}"
    export TALLOW_LISTEN="${TALLOW_LISTEN:-127.0.0.1:8080}"
    export TURN_ALLOW_LOOPBACK="${TURN_ALLOW_LOOPBACK:-true}"
    export TALLOW_WEB_ROOT="${TALLOW_WEB_ROOT:-$PWD/web}"

    cargo build --release -p tallow-signaling --bin tallow-server
    echo "tallow-server on http://$TALLOW_LISTEN (Ctrl-C drains and stops)"
    exec target/release/tallow-server "$@"
fi
shift

coturn=false
for arg in "$@"; do
    case "$arg" in
        --coturn) coturn=true ;;
        -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "deploy-dev: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

file=compose.dev.yml
timeout_secs="${DEPLOY_TIMEOUT_SECS:-120}"

# shellcheck source=scripts/dotenv.sh
source scripts/dotenv.sh

# --- prerequisites: every problem at once, each with its fix ----------------
problems=()
if [[ -z "${TURN_SECRET:-}" ]]; then
    problems+=("TURN_SECRET is not set: export TURN_SECRET=\$(openssl rand -hex 32) (or put it in .env)")
elif ((${#TURN_SECRET} < 32)); then
    problems+=("TURN_SECRET has ${#TURN_SECRET} characters; use at least 32: openssl rand -hex 32")
fi
if [[ -n "${ALLOWED_ORIGINS:-}" ]]; then
    IFS=, read -ra origins <<<"$ALLOWED_ORIGINS"
    for o in "${origins[@]}"; do
        [[ "$o" =~ ^https?://[^/[:space:]]+$ ]] \
            || problems+=("ALLOWED_ORIGINS entry '$o' must look like http://host[:port], without a path or trailing slash")
    done
fi
if ! command -v docker >/dev/null 2>&1; then
    problems+=("docker is not installed (or use scripts/deploy-dev.sh without --compose: no Docker needed)")
elif ! docker compose version >/dev/null 2>&1; then
    problems+=("the docker compose plugin is missing: install docker-compose-plugin (Compose v2.22 or later, for watch)")
fi
if $coturn && [[ "$(uname -s)" != Linux ]]; then
    problems+=("--coturn runs coturn on the host network, which needs a Linux host")
fi
if ((${#problems[@]})); then
    echo "deploy-dev: cannot start the dev stack:" >&2
    printf '  - %s\n' "${problems[@]}" >&2
    exit 1
fi

compose=(docker compose -f "$file")
if $coturn; then
    compose+=(--profile coturn)
    # Hand out coturn (compose/coturn/turnserver.conf: 127.0.0.1:3479)
    # instead of the embedded relay, unless told otherwise.
    export TURN_URLS="${TURN_URLS:-turn:127.0.0.1:3479?transport=udp,turn:127.0.0.1:3479?transport=tcp}"
    export TURN_ENABLED="${TURN_ENABLED:-false}"
fi

hints() {
    cat >&2 <<EOF

What to look at (with the same TURN_SECRET in the environment or .env):
  ${compose[*]} ps
  ${compose[*]} logs --tail 100 tallow redis$($coturn && echo " coturn")
Usual causes:
  - a port on 127.0.0.1 is taken (8080, 3478, 49160-49200; coturn: 3479,
    49300-49340), e.g. by a tallow-server started without Docker: ss -lntup
  - the server stopped on a bad setting: its log names the variable
    (exit status 1 for invalid combinations, 2 for unparsable values)
  - Redis is not healthy yet, or its volume is from another Redis version:
    ${compose[*]} down -v starts it empty
  - the build failed: ${compose[*]} build tallow shows why
EOF
}

echo "deploy-dev: checking $file"
"${compose[@]}" config --quiet || { hints; exit 1; }
echo "deploy-dev: building and starting (the first build takes a few minutes)"
"${compose[@]}" up -d --build --remove-orphans || { hints; exit 1; }

# Ready when the container's health check (/api/health/readiness) passes and
# the published port answers from this host.
echo "deploy-dev: waiting up to ${timeout_secs}s for readiness"
deadline=$((SECONDS + timeout_secs))
until [[ "$("${compose[@]}" ps --format '{{.Health}}' tallow 2>/dev/null)" == healthy ]] \
    && curl -fsS --max-time 3 http://127.0.0.1:8080/api/health/readiness >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
        echo "deploy-dev: tallow-server is not ready after ${timeout_secs}s" >&2
        "${compose[@]}" ps >&2 || true
        "${compose[@]}" logs --tail 30 tallow >&2 || true
        hints
        exit 1
    fi
    sleep 2
done
echo "deploy-dev: ready on http://127.0.0.1:8080 ($($coturn && echo "relay: coturn on 127.0.0.1:3479" || echo "relay: embedded, 127.0.0.1:3478"))"
echo "  live rebuild: ${compose[*]} watch"
echo "  stop:         ${compose[*]} down"
