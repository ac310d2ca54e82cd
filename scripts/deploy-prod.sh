#!/usr/bin/env bash
# Bring up the production stack (docker-compose.yml: NGINX, tallow-server
# replicas, tallow-relay, Redis) after checking what it needs, then wait
# until every service is healthy and NGINX answers readiness.
#
# Needs, in the environment or in .env next to docker-compose.yml (which
# compose also reads, for every later command too):
#   TURN_SECRET       at least 32 characters (openssl rand -hex 32)
#   ALLOWED_ORIGINS   the public origin(s), https://host[:port], comma-separated
#   REDIS_PASSWORD    at least 32 characters of A-Z a-z 0-9 . _ ~ - (it goes
#                     into REDIS_URL unescaped)
#   TURN_EXTERNAL_IP  this host's public IPv4 address (the relay advertises it)
#   certificates      $TLS_CERT_DIR (default ./certs): fullchain.pem, privkey.pem
# DEPLOY_TIMEOUT_SECS (default 180) bounds the wait.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    "") ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "deploy-prod: unknown argument $1 (see --help)" >&2; exit 2 ;;
esac

timeout_secs="${DEPLOY_TIMEOUT_SECS:-180}"
services=(redis tallow tallow-relay nginx)

# shellcheck source=scripts/dotenv.sh
source scripts/dotenv.sh

# --- prerequisites: every problem at once, each with its fix ----------------
problems=()
if [[ -z "${TURN_SECRET:-}" ]]; then
    problems+=("TURN_SECRET is not set: export TURN_SECRET=\$(openssl rand -hex 32) (or put it in .env)")
elif ((${#TURN_SECRET} < 32)); then
    problems+=("TURN_SECRET has ${#TURN_SECRET} characters; use at least 32: openssl rand -hex 32")
fi
if [[ -z "${ALLOWED_ORIGINS:-}" ]]; then
    problems+=("ALLOWED_ORIGINS is not set: the public origin, e.g. export ALLOWED_ORIGINS=https://tallow.example")
else
    IFS=, read -ra origins <<<"$ALLOWED_ORIGINS"
    for o in "${origins[@]}"; do
        [[ "$o" =~ ^https://[^/[:space:]]+$ ]] \
            || problems+=("ALLOWED_ORIGINS entry '$o' must look like https://host[:port] (NGINX serves HTTPS), without a path or trailing slash")
    done
fi
if [[ -z "${REDIS_PASSWORD:-}" ]]; then
    problems+=("REDIS_PASSWORD is not set: export REDIS_PASSWORD=\$(openssl rand -hex 32) (or put it in .env)")
elif ! [[ "$REDIS_PASSWORD" =~ ^[A-Za-z0-9._~-]{32,}$ ]]; then
    problems+=("REDIS_PASSWORD must be at least 32 characters of A-Z a-z 0-9 . _ ~ - (it goes into REDIS_URL): openssl rand -hex 32")
fi
ipv4='^((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])$'
if [[ -z "${TURN_EXTERNAL_IP:-}" ]]; then
    problems+=("TURN_EXTERNAL_IP is not set: this host's public IPv4 address, which browsers reach the relay at")
elif ! [[ "$TURN_EXTERNAL_IP" =~ $ipv4 ]]; then
    problems+=("TURN_EXTERNAL_IP '$TURN_EXTERNAL_IP' is not an IPv4 address")
elif [[ "$TURN_EXTERNAL_IP" =~ ^(10\.|127\.|0\.|169\.254\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.) ]]; then
    echo "deploy-prod: warning: TURN_EXTERNAL_IP $TURN_EXTERNAL_IP is not public: only clients on that network can use the relay" >&2
fi
certs="${TLS_CERT_DIR:-./certs}"
cert_ok=true
for f in fullchain.pem privkey.pem; do
    if [[ ! -r "$certs/$f" ]]; then
        problems+=("missing $certs/$f (set TLS_CERT_DIR to the directory holding fullchain.pem and privkey.pem)")
        cert_ok=false
    fi
done
if $cert_ok && command -v openssl >/dev/null 2>&1; then
    if ! openssl x509 -in "$certs/fullchain.pem" -noout -checkend 86400 >/dev/null 2>&1; then
        problems+=("$certs/fullchain.pem is not a certificate, or it expires within a day: renew it")
    elif [[ "$(openssl x509 -in "$certs/fullchain.pem" -noout -pubkey 2>/dev/null)" \
        != "$(openssl pkey -in "$certs/privkey.pem" -pubout 2>/dev/null)" ]]; then
        problems+=("$certs/privkey.pem is not the key of $certs/fullchain.pem")
    fi
fi
if ! command -v docker >/dev/null 2>&1; then
    problems+=("docker is not installed")
elif ! docker compose version >/dev/null 2>&1; then
    problems+=("the docker compose plugin is missing: install docker-compose-plugin (Compose v2.20 or later)")
fi
if [[ "$(uname -s)" != Linux ]]; then
    problems+=("tallow-relay runs on the host network, which needs a Linux host")
fi
if ((${#problems[@]})); then
    echo "deploy-prod: cannot start the production stack:" >&2
    printf '  - %s\n' "${problems[@]}" >&2
    exit 1
fi

compose=(docker compose)
hints() {
    cat >&2 <<EOF

What to look at (with the same variables in the environment or .env):
  ${compose[*]} ps
  ${compose[*]} logs --tail 100 ${services[*]}
Usual causes:
  - nginx: a certificate it cannot read, or 80/443 taken on this host
  - tallow-relay: 3478 or the relay ports (TURN_PORT_RANGE, default
    61000-65535) taken on this host (it uses the host network); an image
    without /usr/local/bin/tallow-relay (rebuild: ${compose[*]} build)
  - tallow: a bad setting stops it with a message naming the variable
    (exit status 1 or 2); readiness stays 503 while Redis does not answer
    (wrong REDIS_PASSWORD, Redis not healthy)
  - redis: its data volume written by another user or Redis version
To go back to the previous images: retag them as tallow-server:latest and
run this script again (docker compose down keeps the redis-data volume).
EOF
}

echo "deploy-prod: checking docker-compose.yml"
"${compose[@]}" config --quiet || { hints; exit 1; }
# One image holds tallow-server and tallow-relay; build it before anything
# starts, so that tallow-relay (pull_policy: never) finds it.
echo "deploy-prod: building tallow-server:latest"
"${compose[@]}" build || { hints; exit 1; }
echo "deploy-prod: starting ${services[*]}"
"${compose[@]}" up -d --remove-orphans || { hints; exit 1; }

# Ready when every container of every service passes its health check
# (tallow: /api/health/readiness) and NGINX answers readiness over HTTPS.
host="${ALLOWED_ORIGINS%%,*}"
host="${host#https://}"
port=443
if [[ "$host" == *:* ]]; then port="${host##*:}"; host="${host%:*}"; fi
probe=(curl -fsS --max-time 5 --insecure --resolve "$host:$port:127.0.0.1" "https://$host:$port/api/health/readiness")
echo "deploy-prod: waiting up to ${timeout_secs}s for every service to be healthy"
deadline=$((SECONDS + timeout_secs))
while :; do
    unhealthy=()
    for s in "${services[@]}"; do
        states=$("${compose[@]}" ps --format '{{.Health}}' "$s" 2>/dev/null || true)
        if [[ -z "$states" ]] || grep -qv '^healthy$' <<<"$states"; then
            unhealthy+=("$s")
        fi
    done
    if ((${#unhealthy[@]} == 0)) && "${probe[@]}" >/dev/null 2>&1; then
        break
    fi
    if ((SECONDS >= deadline)); then
        echo "deploy-prod: not ready after ${timeout_secs}s; not healthy: ${unhealthy[*]:-none (NGINX does not answer ${probe[*]: -1})}" >&2
        "${compose[@]}" ps >&2 || true
        for s in "${unhealthy[@]}"; do
            "${compose[@]}" logs --tail 30 "$s" >&2 || true
        done
        hints
        exit 1
    fi
    sleep 3
done
echo "deploy-prod: ready: https://$host$([[ $port == 443 ]] || echo ":$port") (readiness through NGINX)"
