#!/usr/bin/env bash
# Server-side validation of the deploy manifests and the example policies against a real
# kube-apiserver v1.20.2 (integration/apiserver/build.sh): `kubectl apply --dry-run=server`
# runs admission and validation without storing anything. Run by integration/test-all.sh;
# by hand: sudo integration/validate-manifests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${KNP_APISERVER_BIN:-$(integration/apiserver/build.sh | tail -1)}
dir=$(mktemp -d /tmp/knp-validate.XXXXXX)
trap 'integration/apiserver/stop.sh "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
kubeconfig=$(KNP_APISERVER_BIN=$bin integration/apiserver/start.sh "$dir" | tail -1)
kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

echo "kubectl apply --dry-run=server -k deploy/"
kubectl apply --dry-run=server -k deploy/
# The examples live in namespaces of their own, and the ClusterNetworkPolicy ones need the CRD
# served: a dry run needs both to exist for real. v1.20 takes the CRD as published, dropping its
# CEL rules (x-kubernetes-validations) without an error; both channels must apply.
for namespace in shop payments ingress-nginx; do kubectl create namespace "$namespace" --save-config >/dev/null; done
for channel in experimental standard; do
    echo "kubectl apply -f deploy/crd/clusternetworkpolicies.$channel.yaml"
    kubectl apply -f "deploy/crd/clusternetworkpolicies.$channel.yaml"
done
kubectl wait --for=condition=established --timeout=30s crd/clusternetworkpolicies.policy.networking.k8s.io
echo "kubectl apply --dry-run=server -R -f deploy/examples/"
kubectl apply --dry-run=server -R -f deploy/examples/
