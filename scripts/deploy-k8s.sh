#!/usr/bin/env bash
# Deploy an overlay of k8s/ with kubectl, in order, waiting at each step:
#   1. the namespace, then check that the Secret "tallow-secrets" exists
#      with both keys (it is never part of the manifests: k8s/README.md);
#   2. ConfigMaps, Services, NetworkPolicies, PodDisruptionBudgets;
#   3. Redis (StatefulSet), waiting until it is ready;
#   4. the relay and signaling Deployments, HPA and Ingress, waiting for
#      both rollouts.
# On failure it prints what to look at and the usual causes.
#
# Usage: scripts/deploy-k8s.sh [dev|production] [--dry-run]
#   dev | production   the overlay (default: production)
#   --dry-run          print the manifests in the order they would be
#                      applied, and touch no cluster
# ROLLOUT_TIMEOUT (default 300s) bounds each wait.
set -euo pipefail
cd "$(dirname "$0")/.."

overlay=production
dry_run=false
for arg in "$@"; do
    case $arg in
        dev | production) overlay=$arg ;;
        --dry-run) dry_run=true ;;
        -h | --help)
            sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "unknown argument: $arg (usage: scripts/deploy-k8s.sh [dev|production] [--dry-run])" >&2
            exit 2
            ;;
    esac
done
ns=tallow
timeout=${ROLLOUT_TIMEOUT:-300s}

command -v kubectl >/dev/null || {
    echo "kubectl is not installed (https://kubernetes.io/docs/tasks/tools/);" \
        "scripts/check-k8s.sh renders the manifests without it" >&2
    exit 1
}

rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
if ! kubectl kustomize "k8s/overlays/$overlay" >"$rendered"; then
    echo "k8s/overlays/$overlay does not render: run scripts/check-k8s.sh for details" >&2
    exit 1
fi

# The documents of the render whose top-level kind is (only) or is not
# (except) one of KINDS. kustomize writes `kind:` unindented only at the top
# level of each document, and separates documents with `---`.
pick() {
    local mode=$1
    shift
    awk -v mode="$mode" -v kinds=" $* " '
        function flush() {
            if (doc != "" && ((mode == "only") == (index(kinds, " " kind " ") > 0))) {
                if (n++) print "---"
                printf "%s", doc
            }
            doc = ""; kind = ""
        }
        /^---$/ { flush(); next }
        /^kind: / { kind = $2 }
        { doc = doc $0 "\n" }
        END { flush() }
    ' "$rendered"
}
phase1=(Namespace)
phase2=(ConfigMap Service NetworkPolicy PodDisruptionBudget)
phase3=(StatefulSet)
# Phase 4 is everything else, so nothing the overlay adds is left out.

if $dry_run; then
    echo "# overlay: k8s/overlays/$overlay; apply order below (no cluster touched)" >&2
    {
        echo "# 1. namespace (then the Secret $ns/tallow-secrets is checked)"
        pick only "${phase1[@]}"
        echo "---"
        echo "# 2. configuration, services, policies"
        pick only "${phase2[@]}"
        echo "---"
        echo "# 3. Redis, waited for"
        pick only "${phase3[@]}"
        echo "---"
        echo "# 4. relay and signaling, waited for"
        pick except "${phase1[@]}" "${phase2[@]}" "${phase3[@]}"
    }
    exit 0
fi

step() { printf '\n== %s\n' "$*"; }
help_on_failure() {
    cat >&2 <<EOF

deploy-k8s: $1 did not become ready within $timeout. Look at:
  kubectl -n $ns get pods -o wide
  kubectl -n $ns describe $2
  kubectl -n $ns logs $2 --all-containers --tail=100   (add --previous after a restart)
  kubectl -n $ns get events --sort-by=.lastTimestamp | tail -n 30
Usual causes:
  - ImagePullBackOff: the image or tag in the overlay does not exist, or the
    cluster needs an imagePullSecret for your registry.
  - CreateContainerConfigError: the Secret tallow-secrets lacks TURN_SECRET
    or REDIS_PASSWORD.
  - Redis Pending: its PersistentVolumeClaim waits for a StorageClass
    (kubectl -n $ns get pvc); a changed volumeClaimTemplates size is
    rejected on apply (StatefulSet templates are immutable).
  - Signaling not ready (503 on /api/health/readiness): Redis unreachable or
    the password differs (logs), or a NetworkPolicy blocks it (CNI).
  - Relay Pending: no node labelled tallow.example/turn-relay=true, or host
    port 3478 already taken on those nodes.
  - CrashLoopBackOff: a bad setting; the first log line names the variable.
Roll back: kubectl -n $ns rollout undo $2
EOF
    exit 1
}

step "cluster: $(kubectl config current-context 2>/dev/null || echo '(no context)'), overlay: $overlay"
kubectl version --request-timeout=15s >/dev/null || {
    echo "deploy-k8s: the cluster does not answer (kubectl config current-context, credentials, VPN?)" >&2
    exit 1
}

if kubectl -n "$ns" get deployment/tallow-redis >/dev/null 2>&1; then
    echo "deploy-k8s: this namespace runs the earlier flat manifests (Redis as a Deployment):" \
        "follow k8s/README.md, \"Upgrading from the flat k8s/*.yaml\", first" >&2
    exit 1
fi

step "1. namespace $ns and the Secret"
pick only "${phase1[@]}" | kubectl apply -f -
missing=()
for key in TURN_SECRET REDIS_PASSWORD; do
    value=$(kubectl -n "$ns" get secret tallow-secrets -o "jsonpath={.data.$key}" 2>/dev/null || true)
    [[ -n $value ]] || missing+=("$key")
done
if ((${#missing[@]})); then
    cat >&2 <<EOF
deploy-k8s: the Secret $ns/tallow-secrets is missing or lacks: ${missing[*]}
Create it with random values (k8s/README.md, "Secrets"):
  kubectl -n $ns create secret generic tallow-secrets \\
    --from-literal=TURN_SECRET="\$(openssl rand -hex 32)" \\
    --from-literal=REDIS_PASSWORD="\$(openssl rand -hex 32)"
EOF
    exit 1
fi
if grep -q 'tallow.example/turn-relay' "$rendered" &&
    [[ -z $(kubectl get nodes -l tallow.example/turn-relay=true -o name 2>/dev/null) ]]; then
    echo "deploy-k8s: warning: no node is labelled tallow.example/turn-relay=true, so the relay" \
        "cannot start: kubectl label node NODE tallow.example/turn-relay=true" >&2
fi

step "2. configuration, services, network policies, disruption budgets"
pick only "${phase2[@]}" | kubectl apply -f -

step "3. Redis"
pick only "${phase3[@]}" | kubectl apply -f -
kubectl -n "$ns" rollout status statefulset/tallow-redis --timeout="$timeout" ||
    help_on_failure "Redis" statefulset/tallow-redis

step "4. relay and signaling"
pick except "${phase1[@]}" "${phase2[@]}" "${phase3[@]}" | kubectl apply -f -
kubectl -n "$ns" rollout status deployment/tallow-relay --timeout="$timeout" ||
    help_on_failure "The relay" deployment/tallow-relay
kubectl -n "$ns" rollout status deployment/tallow-server --timeout="$timeout" ||
    help_on_failure "Signaling" deployment/tallow-server

step "done"
kubectl -n "$ns" get pods -o wide
echo "Check from outside: scripts/health-check.sh https://<your host>"
