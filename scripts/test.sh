#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust:
#   1. installs the tools the tests drive (Debian packages, a Python venv),
#   2. checks formatting, lints, shell scripts, YAML, Kubernetes manifests
#      and nginx.conf,
#   3. runs every fuzz target (cargo-fuzz, installed when missing) for
#      TALLOW_FUZZ_SECS seconds each (default 30), from a temporary copy of
#      its committed seed corpus; a crash fails the run and its input is kept
#      in artifacts/fuzz/,
#   4. runs the JavaScript tests (node's runner; the browser end-to-end test
#      writes screenshots to artifacts/e2e/), then every Rust test (unit and
#      integration) with nextest, or cargo test where nextest is missing; its
#      summary ends the output.
# Servers the tests need are started by the tests themselves on free
# loopback ports and stopped when they end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools="$root/target/test-tools"

step() { printf '\n==> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# --- 1. tools ---------------------------------------------------------------
# command -> Debian package
declare -A wanted=(
    [redis-server]=redis-server
    [turnutils_uclient]=coturn
    [chromium]=chromium
    [shellcheck]=shellcheck
    [yamllint]=yamllint
    [nginx]=nginx
    [curl]=curl
    [openssl]=openssl
    [nft]=nftables
    [promtool]=prometheus
    [jq]=jq
)
missing=()
for cmd in "${!wanted[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || [[ -x "/usr/sbin/$cmd" ]] || missing+=("${wanted[$cmd]}")
done
if ((${#missing[@]})); then
    step "installing Debian packages: ${missing[*]}"
    ./scripts/apt-install.sh "${missing[@]}"
fi
if [[ ! -x "$tools/venv/bin/kubernetes-validate" ]]; then
    step "installing kubernetes-validate into $tools/venv"
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.*'
fi
export PATH="$PATH:/usr/sbin"

if [[ ! -d web/node_modules ]] || [[ web/package-lock.json -nt web/node_modules ]]; then
    step "npm ci (web/, from its lock file)"
    (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi

# --- 2. static checks -------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "shellcheck"
shellcheck scripts/*.sh .ci/run

step "yamllint"
yamllint --strict -c .yamllint.yml k8s docker-compose.yml compose.dev.yml

step "compose files (schema, policy, coturn config, deploy-script refusals)"
./scripts/check-compose.sh

step "monitoring: alert rules (promtool check and unit tests), dashboard JSON"
./scripts/check-monitoring.sh

step "Kubernetes manifests (kustomize, kubernetes-validate, policy, yamllint)"
./scripts/check-k8s.sh

step "Dockerfile (build context, binaries the manifests run)"
./scripts/check-dockerfile.sh

step "nginx -t"
# The shipped config with its certificate paths pointed at a throwaway
# self-signed pair and the compose service name resolved to loopback.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$scratch/privkey.pem" -out "$scratch/fullchain.pem" 2>/dev/null
sed -e "s#/etc/nginx/certs#$scratch#g" -e 's#server tallow:8080#server 127.0.0.1:8080#' \
    nginx.conf >"$scratch/nginx.conf"
nginx -t -q -c "$scratch/nginx.conf" -p "$scratch"

step "web client bundle is up to date (esbuild)"
(cd web && npm run --silent build)
git diff --exit-code -- web/dist || {
    echo "web/dist differs from a fresh build of web/src: run 'cd web && npm run build' and commit" >&2
    exit 1
}

# --- 3. fuzzing -------------------------------------------------------------
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 enables them on stable.
# Each target starts from a scratch copy of its committed corpus (so nothing
# is written into the repository's corpora) and runs with debug assertions
# (overflow checks) for a bounded time. The four targets share one
# crate (fuzz/), so their dependencies build once. No AddressSanitizer:
# the fuzzed crates forbid unsafe code, and the ASan build took ~11 of the
# suite's minutes on 2 cores against ~3 without it.
fuzz_secs=${TALLOW_FUZZ_SECS:-30}
if ! cargo fuzz --version >/dev/null 2>&1; then
    step "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi
fuzz_out="$root/artifacts/fuzz"
mkdir -p "$fuzz_out"
# All four targets live in one crate (fuzz/), so the first build compiles
# the dependencies once and the other targets only link.
for target in stun_parser signal_frame session_messages transfer_messages; do
    step "cargo fuzz run $target (${fuzz_secs}s)"
    corpus="$scratch/fuzz-corpus/$target"
    mkdir -p "$corpus" "$fuzz_out/$target"
    if [[ -d "fuzz/corpus/$target" ]]; then
        cp -R "fuzz/corpus/$target/." "$corpus/"
    fi
    log="$fuzz_out/$target.log"
    if RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --sanitizer none --debug-assertions \
        --target-dir "$root/target/fuzz" "$target" "$corpus" -- \
        -max_total_time="$fuzz_secs" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$fuzz_out/$target/" >"$log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|DONE' "$log" || true
    else
        tail -n 60 "$log" >&2
        echo "fuzz target $target failed (crash, hang or build error): log $log, inputs in $fuzz_out/$target/" >&2
        exit 1
    fi
done

# --- 4. tests ---------------------------------------------------------------
step "cargo build (binaries the browser test drives)"
cargo build --workspace --bins --locked -q

step "node --test (web/: handshake vectors, then two Chromium contexts end to end)"
(cd web && node --test test/*.test.js)

if cargo nextest --version >/dev/null 2>&1; then
    step "cargo nextest run"
    cargo nextest run --workspace --locked --no-fail-fast
else
    step "cargo test (cargo-nextest not installed)"
    cargo test --workspace --locked --no-fail-fast
fi
