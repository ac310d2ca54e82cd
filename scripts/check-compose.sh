#!/usr/bin/env bash
# Checks every compose file in the repository without a Docker engine:
#   1. yamllint --strict with the repository's rules (.yamllint.yml);
#   2. the compose-spec JSON schema (check-jsonschema's vendored copy,
#      `--builtin-schema vendor.compose-spec`) on each file as written;
#   3. each file interpolated as compose does (compose/interpolate.py) with
#      sample values for its variables, then the compose-spec schema again and
#      the project's policies (compose/policy/*.schema.json): restart values,
#      pinned images, loopback-only ports in dev, hardening, limits, log
#      rotation and health checks in production;
#   4. the production file refuses to start without each required secret
#      (an empty REDIS_PASSWORD would be a Redis without a password);
#   5. coturn (Debian's turnserver) loads compose/coturn/turnserver.conf and
#      relays for TURN REST API credentials made with the shared secret, and
#      refuses credentials made with another one;
#   6. deploy-dev.sh --compose and deploy-prod.sh, run for real without
#      their settings, stop before touching Docker and name each fix.
# Not checked here (it needs Docker): building the images, pulling them,
# `docker compose config` (deploy-dev.sh and deploy-prod.sh run it before
# starting anything), and the containers actually running.
# Installs what it needs: yamllint and coturn (apt-get), check-jsonschema
# (pinned, into target/test-tools/venv).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/test-tools/venv
cjs_version=0.39.0
step() { printf '\n==> %s\n' "$*"; }
fail() { echo "check-compose: $*" >&2; exit 1; }

# --- tools ------------------------------------------------------------------
missing=()
command -v yamllint >/dev/null 2>&1 || missing+=(yamllint)
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
if ((${#missing[@]})); then
    step "installing Debian packages: ${missing[*]}"
    ./scripts/apt-install.sh "${missing[@]}"
fi
if [[ "$("$venv/bin/check-jsonschema" --version 2>/dev/null)" != *" $cjs_version" ]]; then
    step "installing check-jsonschema $cjs_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "check-jsonschema==$cjs_version"
fi
cjs="$venv/bin/check-jsonschema"

scratch=$(mktemp -d)
turn_pid=""
cleanup() {
    if [[ -n "$turn_pid" ]]; then kill "$turn_pid" 2>/dev/null || true; fi
    rm -rf "$scratch"
}
trap cleanup EXIT

# Every compose file, tracked or new (not ignored): docker-compose*.yml,
# compose*.yml and the like, at any depth.
mapfile -t files < <(git ls-files -co --exclude-standard \
    | grep -E '(^|/)(docker-)?compose([.-][^/]*)?\.ya?ml$' | grep -v node_modules/ | sort)
((${#files[@]})) || fail "no compose files found"
echo "compose files: ${files[*]}"

# The policy for each file beyond compose/policy/all.schema.json.
policy_for() {
    case "$1" in
        docker-compose.yml) echo compose/policy/prod.schema.json ;;
        compose.dev.yml) echo compose/policy/dev.schema.json ;;
        *) echo "" ;;
    esac
}
# Variables the production file must refuse to run without.
prod_required=(TURN_SECRET ALLOWED_ORIGINS REDIS_PASSWORD TURN_EXTERNAL_IP)

# Sample values, shaped as the deploy scripts demand (TEST-NET address).
sample_env() {
    python3 - "$@" <<'PY'
import json, sys
env = {
    "TURN_SECRET": "0123456789abcdef" * 4,
    "ALLOWED_ORIGINS": "https://tallow.example",
    "REDIS_PASSWORD": "fedcba9876543210" * 4,
    "TURN_EXTERNAL_IP": "203.0.113.7",
}
for name in sys.argv[1:]:
    env.pop(name)
print(json.dumps(env))
PY
}

# --- 1. yamllint --------------------------------------------------------------
step "yamllint --strict"
yamllint --strict -c .yamllint.yml "${files[@]}"

# --- 2. compose-spec schema, files as written ---------------------------------
step "compose-spec schema (check-jsonschema $cjs_version, vendor.compose-spec), as written"
"$cjs" --builtin-schema vendor.compose-spec "${files[@]}"

# --- 3. interpolated: compose-spec again, then the project's policies ---------
step "interpolated with sample values: compose-spec schema and compose/policy"
"$cjs" --check-metaschema compose/policy/*.schema.json
sample_env >"$scratch/env.json"
for f in "${files[@]}"; do
    out="$scratch/$(echo "$f" | tr / _).json"
    "$venv/bin/python" compose/interpolate.py "$f" "$scratch/env.json" "$out"
    "$cjs" --builtin-schema vendor.compose-spec "$out"
    "$cjs" --schemafile compose/policy/all.schema.json "$out"
    policy=$(policy_for "$f")
    if [[ -n "$policy" ]]; then
        "$cjs" --schemafile "$policy" "$out"
    fi
    echo "$f: ok"
done

# --- 4. required variables ----------------------------------------------------
step "docker-compose.yml refuses to interpolate without each required variable"
for name in "${prod_required[@]}"; do
    sample_env "$name" >"$scratch/env-less.json"
    rc=0
    "$venv/bin/python" compose/interpolate.py docker-compose.yml "$scratch/env-less.json" \
        "$scratch/less.json" 2>"$scratch/less.err" || rc=$?
    if [[ $rc -ne 1 ]] || ! grep -q "required variable missing: $name" "$scratch/less.err"; then
        fail "docker-compose.yml without $name: expected a required-variable error, got ($rc) $(cat "$scratch/less.err")"
    fi
    echo "without $name: $(cat "$scratch/less.err")"
done

# --- 5. coturn with the compose profile's configuration -----------------------
step "coturn loads compose/coturn/turnserver.conf and checks the shared secret"
# Free loopback ports instead of the file's fixed ones (3479, 49300-49340),
# which another process here may hold; everything else comes from the file.
read -r turn_port relay_low < <(python3 - <<'PY'
import socket
def free(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
for _ in range(100):
    p = free(socket.SOCK_DGRAM)
    try:
        t = socket.socket(); t.bind(("127.0.0.1", p)); t.close()
        break
    except OSError:
        continue
print(p, 40000 + p % 8000)
PY
)
secret=$(python3 -c "import secrets; print(secrets.token_hex(32))")
turnserver -c compose/coturn/turnserver.conf --static-auth-secret="$secret" \
    --listening-port="$turn_port" --min-port="$relay_low" --max-port="$((relay_low + 20))" \
    --pidfile="$scratch/turnserver.pid" --db="$scratch/turndb" >"$scratch/coturn.log" 2>&1 &
turn_pid=$!
# Wait (bounded: 100 x 0.1 s) until it answers STUN on the port.
ready=false
for _ in $(seq 1 100); do
    # The client waits forever for an answer lost before the port opened.
    if timeout 1 turnutils_stunclient -p "$turn_port" 127.0.0.1 >/dev/null 2>&1; then ready=true; break; fi
    kill -0 "$turn_pid" 2>/dev/null || break
    sleep 0.1
done
$ready || { cat "$scratch/coturn.log" >&2; fail "coturn did not start with compose/coturn/turnserver.conf"; }
# Two clients relaying to each other's relayed (loopback) addresses, as two
# browsers on the dev host do: needs allow-loopback-peers and relay-ip.
timeout 60 turnutils_uclient -y -c -W "$secret" -p "$turn_port" -m 2 -n 20 -l 100 -z 5 127.0.0.1 \
    >"$scratch/uclient.log" 2>&1 || { cat "$scratch/uclient.log" >&2; fail "coturn did not relay between two loopback allocations with credentials made with its own secret"; }
totals=$(grep -o 'tot_send_msgs=[0-9]*, tot_recv_msgs=[0-9]*' "$scratch/uclient.log" | tail -n 1)
recv=${totals##*tot_recv_msgs=}
[[ -n "$totals" && "$recv" -gt 0 ]] || { cat "$scratch/uclient.log" >&2; fail "nothing relayed through coturn"; }
echo "right secret: relayed ($totals)"
! grep -q check_stun_auth "$scratch/coturn.log" || fail "coturn refused a request made with its own secret"
if timeout 60 turnutils_uclient -y -c -W "not-the-secret" -p "$turn_port" -m 2 -n 5 -l 100 127.0.0.1 \
    >"$scratch/wrong.log" 2>&1; then
    fail "coturn accepted credentials made with another secret"
fi
# coturn logs the refused authentication (401) as check_stun_auth.
grep -q check_stun_auth "$scratch/coturn.log" || {
    cat "$scratch/wrong.log" "$scratch/coturn.log" >&2
    fail "expected coturn to refuse the wrong secret's credentials"
}
echo "wrong secret: refused ($(grep -m1 -o 'check_stun_auth.*' "$scratch/coturn.log"))"
kill "$turn_pid"
wait "$turn_pid" 2>/dev/null || true
turn_pid=""

# --- 6. the deploy scripts stop before Docker when a prerequisite is missing --
step "deploy-dev.sh --compose and deploy-prod.sh refuse to start without their settings"
# Empty values: the environment wins over a developer's .env, as in compose.
expect_refusal() { # script args... -- expected message fragments...
    local cmd=() rc=0
    while [[ $1 != -- ]]; do cmd+=("$1"); shift; done
    shift
    TURN_SECRET="" ALLOWED_ORIGINS="" REDIS_PASSWORD="" TURN_EXTERNAL_IP="" \
        TLS_CERT_DIR="$scratch/no-certs" "${cmd[@]}" >"$scratch/deploy.out" 2>&1 || rc=$?
    ((rc == 1)) || { cat "$scratch/deploy.out" >&2; fail "${cmd[*]}: exit status $rc, expected 1"; }
    for want in "$@"; do
        grep -qF -- "$want" "$scratch/deploy.out" \
            || { cat "$scratch/deploy.out" >&2; fail "${cmd[*]}: no '$want' in its message"; }
    done
    echo "${cmd[*]}: refused (exit 1), naming: $*"
}
expect_refusal scripts/deploy-dev.sh --compose -- \
    "TURN_SECRET is not set: export TURN_SECRET=\$(openssl rand -hex 32)"
expect_refusal scripts/deploy-prod.sh -- \
    "TURN_SECRET is not set" "ALLOWED_ORIGINS is not set" "REDIS_PASSWORD is not set" \
    "TURN_EXTERNAL_IP is not set" "missing $scratch/no-certs/fullchain.pem"

echo
echo "check-compose: ${#files[@]} compose files checked"
