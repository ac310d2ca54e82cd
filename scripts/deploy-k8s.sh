#!/usr/bin/env bash
# Apply k8s/ with kubectl and wait for the rollout.
# Usage: scripts/deploy-k8s.sh [--dry-run]
# The Secret "tallow-turn" must exist first (see DEVOPS.md):
#   kubectl -n tallow create secret generic tallow-turn --from-literal=secret=$(openssl rand -hex 32)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v kubectl >/dev/null || { echo "kubectl is not installed" >&2; exit 1; }

if [[ "${1:-}" == "--dry-run" ]]; then
    kubectl kustomize k8s/
    exit 0
fi

if ! kubectl -n tallow get secret tallow-turn >/dev/null 2>&1; then
    echo "create the TURN secret first:" >&2
    echo "  kubectl create namespace tallow" >&2
    echo "  kubectl -n tallow create secret generic tallow-turn --from-literal=secret=\$(openssl rand -hex 32)" >&2
    exit 1
fi
kubectl apply -k k8s/
kubectl -n tallow rollout status deployment/tallow-server --timeout=180s
