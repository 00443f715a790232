#!/usr/bin/env bash
# The kind quickstart, end to end, on a machine with Docker, kind and kubectl:
#   integration/kind/run.sh            # cluster, image, agent, scenario
#   integration/kind/run.sh --e2e      # ... then the upstream [Feature:NetworkPolicy] suite
#   integration/kind/run.sh --delete   # remove the cluster
# Steps: create a cluster with no policy-enforcing CNI (ptp + host-local, no kindnetd), build
# the image, load it into kind, apply deploy/, then a default-deny scenario: an allowed and a
# denied connection, the drop log line (kubectl logs), the metrics, and the suggested policy.
# Not run on the development machine (no Docker engine there); vagrant/ runs it in a VM.
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster=${KIND_CLUSTER:-kube-nftpol}
image=kube-nftpol:0.1.0
say() { printf '\n==> %s\n' "$*"; }
kc() { kubectl --context "kind-$cluster" "$@"; }

if [ "${1:-}" = "--delete" ]; then
  kind delete cluster --name "$cluster"
  exit 0
fi
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 2; }
done

say "kind cluster $cluster (no default CNI)"
if ! kind get clusters | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --config integration/kind/kind-config.yaml
fi

say "a CNI that enforces nothing: ptp + host-local on every node, routes between nodes"
nodes=$(kind get nodes --name "$cluster")
for node in $nodes; do
  cidr=$(kc get node "$node" -o jsonpath='{.spec.podCIDR}')
  mtu=$(docker exec "$node" cat /sys/class/net/eth0/mtu)
  docker exec -i "$node" sh -c 'cat > /etc/cni/net.d/10-ptp.conflist' <<CONF
{"cniVersion": "0.3.1", "name": "ptp-net", "plugins": [
  {"type": "ptp", "ipMasq": false, "mtu": $mtu,
   "ipam": {"type": "host-local", "dataDir": "/run/cni-ipam-state",
            "ranges": [[{"subnet": "$cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CONF
done
for node in $nodes; do
  for peer in $nodes; do
    [ "$node" = "$peer" ] && continue
    cidr=$(kc get node "$peer" -o jsonpath='{.spec.podCIDR}')
    ip=$(kc get node "$peer" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
    docker exec "$node" ip route replace "$cidr" via "$ip"
  done
done
kc wait --for=condition=Ready nodes --all --timeout=180s
for node in $nodes; do
  if docker exec "$node" nft list tables 2>/dev/null | grep -q kindnet; then
    echo "warning: $node has kindnet's policy table; its verdicts would add to ours" >&2
  fi
done

say "image $image, loaded into kind"
docker build -f deploy/Dockerfile -t "$image" .
kind load docker-image "$image" --name "$cluster"

say "kubectl apply -k deploy/"
kc apply -k deploy/
kc -n kube-system rollout status ds/kube-nftpol --timeout=180s

say "scenario: namespace demo, default deny ingress, web allows only app=frontend"
kc apply -f - <<'YAML'
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: demo, labels: {app: web}}
spec:
  containers:
  - {name: web, image: registry.k8s.io/e2e-test-images/agnhost:2.47, args: [netexec, --http-port=8080]}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend, namespace: demo, labels: {app: frontend}}
spec:
  containers:
  - {name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.47, args: [pause]}
---
apiVersion: v1
kind: Pod
metadata: {name: intruder, namespace: demo, labels: {app: intruder}}
spec:
  containers:
  - {name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.47, args: [pause]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: demo}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-frontend, namespace: demo}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 8080}]
YAML
kc -n demo wait --for=condition=Ready pod --all --timeout=180s
web=$(kc -n demo get pod web -o jsonpath='{.status.podIP}')
connect() { kc -n demo exec "$1" -- /agnhost connect --timeout=3s "$web:8080"; }
if connect frontend; then echo "frontend -> web: allowed (as the policy says)"; else echo "frontend -> web: FAILED" >&2; exit 1; fi
if connect intruder; then echo "intruder -> web: connected, but policy denies it" >&2; exit 1; else echo "intruder -> web: denied"; fi

say "the drop log line (kubectl logs)"
sleep 2
kc -n kube-system logs -l app.kubernetes.io/name=kube-nftpol --tail=-1 --prefix=false \
  | grep '"namespace":"demo"' | tail -3

say "metrics of the agent on web's node"
node=$(kc -n demo get pod web -o jsonpath='{.spec.nodeName}')
docker exec "$node" sh -c 'curl -s localhost:9640/metrics 2>/dev/null || wget -qO- localhost:9640/metrics' \
  | grep -E '^kube_nftpol_(flows|flowlog_records|programming_latency_seconds_count|ruleset)' || true

say "suggested policy for what was denied"
if kc -n kube-system exec ds/kube-nftpol -- kube-nftpol suggest --help >/dev/null 2>&1; then
  kc -n kube-system logs -l app.kubernetes.io/name=kube-nftpol --tail=-1 --prefix=false \
    | kc -n kube-system exec -i ds/kube-nftpol -- kube-nftpol suggest --namespace demo || true
else
  echo "(this build has no suggest command)"
fi

if [ "${1:-}" = "--e2e" ]; then
  say "upstream [Feature:NetworkPolicy] e2e suite"
  version=$(kc version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
  dir=$(mktemp -d)
  curl -sSL "https://dl.k8s.io/$version/kubernetes-test-linux-amd64.tar.gz" | tar -xz -C "$dir"
  "$dir/kubernetes/test/bin/ginkgo" --focus='\[Feature:NetworkPolicy\]' --skip='SCTPConnectivity' \
    "$dir/kubernetes/test/bin/e2e.test" -- --provider=local --kubeconfig="$HOME/.kube/config"
fi
say "done; remove the cluster with: integration/kind/run.sh --delete"
