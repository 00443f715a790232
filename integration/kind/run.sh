#!/usr/bin/env bash
# The kind quickstart, end to end, on a machine with Docker, kind and kubectl:
#   integration/kind/run.sh            # cluster, image, agent, scenario
#   integration/kind/run.sh --e2e      # ... then the upstream [Feature:NetworkPolicy] suite
#   integration/kind/run.sh --delete   # remove the cluster
# Steps: create a cluster with no policy-enforcing CNI (ptp + host-local, no kindnetd), build
# the image, load it into kind, apply deploy/, then the README's user scenario
# (integration/user-scenario.sh, the one integration/cluster/run.sh runs on real nodes here):
# default deny, an allowed and a denied connection, the drop log line (kubectl logs), the
# metrics, the suggested policy (kube-nftpol suggest over every agent's log) applied and the
# flow then allowed, the PolicyDenied Event. Not run on the development machine (no Docker
# engine there); vagrant/ runs it in a VM; integration/cluster/ runs the same steps on a real
# cluster without Docker.
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
if ! grep -qx "$cluster" <<<"$(kind get clusters)"; then
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
  if grep -q kindnet <<<"$(docker exec "$node" nft list tables 2>/dev/null)"; then
    echo "warning: $node has kindnet's policy table; its verdicts would add to ours" >&2
  fi
done

say "image $image, loaded into kind"
docker build -f deploy/Dockerfile -t "$image" .
kind load docker-image "$image" --name "$cluster"

say "kubectl apply -k deploy/"
kc apply -k deploy/
kc -n kube-system rollout status ds/kube-nftpol --timeout=180s

say "the user scenario of the README (integration/user-scenario.sh, shared with integration/cluster/)"
# What the scenario needs: kubectl on this cluster, an agent's /metrics from inside its node,
# the kube-nftpol command (the image's binary, run by Docker beside the cluster), an agnhost.
# shellcheck source=integration/user-scenario.sh
. integration/user-scenario.sh
kubectl() { command kubectl --context "kind-$cluster" "$@"; }
agent_metrics() { docker exec "$1" curl -fsS http://127.0.0.1:9640/metrics; }
kube-nftpol() {
  docker run --rm -i -v "$scenario_dir:$scenario_dir" -w "$scenario_dir" \
    --entrypoint /usr/local/bin/kube-nftpol "$image" "$@"
}
scenario_image=registry.k8s.io/e2e-test-images/agnhost:2.47
scenario_dir=$(mktemp -d)
trap 'rm -rf "$scenario_dir"' EXIT
mapfile -t workers < <(kind get nodes --name "$cluster" | grep -v control-plane | sort)
user_scenario "${workers[0]}" "${workers[1]}"

if [ "${1:-}" = "--e2e" ]; then
  say "upstream [Feature:NetworkPolicy] e2e suite"
  version=$(kc version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
  dir=$(mktemp -d)
  curl -sSL "https://dl.k8s.io/$version/kubernetes-test-linux-amd64.tar.gz" | tar -xz -C "$dir"
  "$dir/kubernetes/test/bin/ginkgo" --focus='\[Feature:NetworkPolicy\]' --skip='SCTPConnectivity' \
    "$dir/kubernetes/test/bin/e2e.test" -- --provider=local --kubeconfig="$HOME/.kube/config"
fi
say "done; remove the cluster with: integration/kind/run.sh --delete"
