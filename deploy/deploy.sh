#!/usr/bin/env bash
# Roll out an overlay in order: namespace and settings, then the migration (and, in prod, the
# model download) to completion, then every process.
#   deploy/deploy.sh overlays/prod
# Needs: kubectl with access to the cluster, and the Secret `studio-secrets` in the namespace.
set -euo pipefail

overlay="${1:?usage: deploy/deploy.sh overlays/dev|overlays/prod}"
dir="$(cd "$(dirname "$0")/k8s/$overlay" && pwd)"
ns="$(awk '/^namespace:/ {print $2}' "$dir/kustomization.yaml")"
manifests="$(mktemp)"
trap 'rm -f "$manifests"' EXIT
kubectl kustomize "$dir" >"$manifests"

# 1. namespace, service account, settings (and the model cache volume)
kubectl apply -f "$manifests" -l studio.deploy/phase=setup
if ! kubectl -n "$ns" get secret studio-secrets >/dev/null 2>&1; then
  echo "Secret studio-secrets is missing in namespace $ns: see deploy/README.md (Secrets)." >&2
  exit 1
fi

# 2. one-shot Jobs: their pod templates are immutable, so the previous runs go first
kubectl -n "$ns" delete job studio-migrate studio-models-pull --ignore-not-found --wait=true
kubectl apply -f "$manifests" -l studio.deploy/phase=migrate
kubectl -n "$ns" wait --for=condition=complete job/studio-migrate --timeout=15m
if grep -q "name: studio-models-pull" "$manifests"; then
  kubectl -n "$ns" wait --for=condition=complete job/studio-models-pull --timeout=2h
fi

# 3. everything else, on the migrated schema
kubectl apply -f "$manifests"
for deployment in gateway relay scheduler worker-photos worker-notify; do
  kubectl -n "$ns" rollout status "deployment/studio-$deployment" --timeout=10m
done
# GPU workers roll one pod at a time and each old pod first finishes its task (up to
# terminationGracePeriodSeconds): follow them with
#   kubectl -n $ns rollout status deployment/studio-worker-train
echo "deployed $overlay to namespace $ns"
