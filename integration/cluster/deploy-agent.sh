#!/usr/bin/env bash
# Deploys the agent on the rig's cluster (up.sh) the way a user does, as root:
#   integration/cluster/deploy-agent.sh REFERENCE ARCHIVE    # agent-image.sh's last line
# 1. Loads the image archive into each node's containerd (what `kind load image-archive`
#    does), under REFERENCE (knp.local/kube-nftpol:TAG).
# 2. `kubectl apply -k` of a kustomization whose only content is deploy/ and an image
#    override, as a user pointing deploy/ at their registry writes it:
#      bases: [<path to deploy/>]
#      images: [{name: kube-nftpol, newName: knp.local/kube-nftpol, newTag: TAG}]
#    (`bases`, not `resources`: kubectl 1.20 embeds kustomize v2.0.3, which takes directories
#    only there; current kustomize still reads `bases`.)
# 3. Waits for the rollout, then checks what the DaemonSet promises on every node: the pod runs
#    the overridden image in the node's network namespace (hostNetwork), with only NET_ADMIN,
#    a read-only root filesystem, liveness and readiness on /healthz and /readyz (both served
#    and passing); its service account reached the API through the `kubernetes` Service's
#    ClusterIP (the agent's connection in the node's conntrack table, DNATed by kube-proxy to
#    the API server); its table is in the node's nftables.
# Running it again with another tag is an upgrade (a rolling update of the DaemonSet).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"
[ $# -eq 2 ] || { echo "usage: $0 REFERENCE ARCHIVE   (agent-image.sh's last line)" >&2; exit 2; }
reference=$1 archive=$2
[ -s "$archive" ] || die "no image archive $archive (integration/cluster/agent-image.sh)"
[ -e "/run/netns/$cp_ns" ] || die "the rig is not up (integration/cluster/up.sh)"
name=${reference%:*} tag=${reference##*:}

for node in "${node_names[@]}"; do
  node_ctr "$node" images import "$archive" >/dev/null || die "$node: ctr images import $archive failed"
  # The listing first, then the search: `grep -q` in a pipeline stops reading at its match,
  # and the writer's SIGPIPE fails the pipeline under pipefail.
  listed=$(node_ctr "$node" images ls -q)
  grep -qx "$reference" <<<"$listed" || die "$node: $reference not in containerd after the import"
done
say "$reference loaded into ${node_names[*]}"

overlay=$(mktemp -d "$state/overlay.XXXXXX")
trap 'rm -rf "$overlay"' EXIT
cat >"$overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
bases:
- $(realpath --relative-to="$overlay" "$repo/deploy")
images:
- name: kube-nftpol
  newName: $name
  newTag: $tag
EOF
# kubectl runs in the control plane's namespace, but reads the overlay from this filesystem.
kc apply -k "$overlay" >&2
t0=$SECONDS
kc -n kube-system rollout status ds/kube-nftpol --timeout=180s >&2 ||
  { kc -n kube-system describe pods -l app.kubernetes.io/name=kube-nftpol >&2 || true; die "the DaemonSet did not roll out"; }
say "DaemonSet kube-nftpol rolled out in $((SECONDS - t0)) s"

# What each agent pod must be.
pods=$(kc -n kube-system get pods -l app.kubernetes.io/name=kube-nftpol \
  -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName}{"\n"}{end}')
[ "$(echo "$pods" | grep -c .)" -eq ${#node_names[@]} ] || die "expected one agent per node, got: $pods"
while read -r pod node; do
  [ -n "$pod" ] || continue
  get() { kc -n kube-system get pod "$pod" -o jsonpath="$1"; }
  image=$(get '{.spec.containers[0].image}')
  [ "$image" = "$reference" ] || die "$pod runs $image, not $reference"
  [ "$(get '{.spec.hostNetwork}')" = true ] || die "$pod is not hostNetwork"
  [ "$(get '{.spec.containers[0].securityContext.capabilities.add}')" = '["NET_ADMIN"]' ] || die "$pod: capabilities added are not exactly NET_ADMIN"
  [ "$(get '{.spec.containers[0].securityContext.capabilities.drop}')" = '["ALL"]' ] || die "$pod: capabilities are not all dropped"
  [ "$(get '{.spec.containers[0].securityContext.readOnlyRootFilesystem}')" = true ] || die "$pod: root filesystem not read-only"
  [ "$(get '{.status.containerStatuses[0].ready}')" = true ] || die "$pod not ready"
  [ "$(get '{.status.containerStatuses[0].restartCount}')" = 0 ] || die "$pod restarted (liveness?)"
  # The process as the kernel sees it: effective capabilities exactly CAP_NET_ADMIN (bit 12).
  caps=$(kc -n kube-system exec "$pod" -- sh -c 'grep CapEff /proc/1/status' | awk '{print $2}')
  [ "$caps" = 0000000000001000 ] || die "$pod: effective capabilities $caps, not CAP_NET_ADMIN alone"
  if kc -n kube-system exec "$pod" -- sh -c 'touch /probe-write' 2>/dev/null; then die "$pod: its root filesystem is writable"; fi
  for path in healthz readyz; do
    in_node "$node" curl -fsS "http://127.0.0.1:9640/$path" >/dev/null || die "$node: /$path of the agent fails"
  done
  # The agent's API connection went to the kubernetes Service's ClusterIP and was DNATed by
  # kube-proxy to the API server (the reply comes from $cp_ip:$api_port).
  flows=$(in_node "$node" conntrack -L -p tcp -d "$kubernetes_service_ip" --dport 443 2>/dev/null)
  grep -q "src=$cp_ip dst=${node_ip[$node]} sport=$api_port" <<<"$flows" ||
    die "$node: no connection to $kubernetes_service_ip:443 DNATed to $cp_ip:$api_port in the node's conntrack table"
  in_node "$node" nft list table inet kube-nftpol >/dev/null || die "$node: no table inet kube-nftpol"
  say "$pod on $node: $image, hostNetwork, CapEff=NET_ADMIN, read-only root, /healthz and /readyz pass, API through $kubernetes_service_ip (kube-proxy), table inet kube-nftpol"
done <<<"$pods"
