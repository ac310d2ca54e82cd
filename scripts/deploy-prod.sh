#!/usr/bin/env bash
# Bring up the production stack (NGINX + tallow-server) with docker compose,
# after checking what it needs, then wait until it is ready.
# Needs: TURN_SECRET, ALLOWED_ORIGINS, TLS certificates in $TLS_CERT_DIR
# (default ./certs: fullchain.pem and privkey.pem).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "deploy-prod: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker compose version >/dev/null 2>&1 || die "the docker compose plugin is missing"
[[ -n "${TURN_SECRET:-}" ]] || die "set TURN_SECRET (e.g. export TURN_SECRET=\$(openssl rand -hex 32))"
[[ ${#TURN_SECRET} -ge 32 ]] || die "TURN_SECRET should be at least 32 characters"
[[ -n "${ALLOWED_ORIGINS:-}" ]] || die "set ALLOWED_ORIGINS (e.g. https://tallow.example)"
certs="${TLS_CERT_DIR:-./certs}"
for f in fullchain.pem privkey.pem; do
    [[ -r "$certs/$f" ]] || die "missing $certs/$f"
done

docker compose config --quiet
docker compose up -d --build --remove-orphans

# Readiness through the container's own health check.
for _ in $(seq 1 30); do
    state=$(docker compose ps --format '{{.Health}}' tallow 2>/dev/null || true)
    if [[ "$state" == healthy ]]; then
        echo "tallow-server is ready"
        exit 0
    fi
    sleep 2
done
docker compose logs --tail 50 tallow >&2
die "tallow-server did not become ready within 60 s"
