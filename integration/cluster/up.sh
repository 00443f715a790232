#!/usr/bin/env bash
# Brings up the rig's cluster, Kubernetes v1.20.2 on real parts (lib.sh draws it): a control
# plane and two nodes, each node a containerd, a kubelet and a kube-proxy in a network namespace
# of its own, the nodes on one L2 segment with routes between their pod CIDRs, as kind's nodes
# are. Run as root, after integration/apiserver/build.sh and images.sh:
#   integration/cluster/up.sh --cni ptp      # kindnet's model: a routed veth per pod, /32 routes
#   integration/cluster/up.sh --cni bridge   # flannel's model: the node's pods on bridge cni0,
#                                            # br_netfilter on (bridge-nf-call-iptables=1)
#   integration/cluster/kubectl.sh get nodes # then: kubectl as the cluster's admin
#   integration/cluster/down.sh              # stops and removes all of it
# The machine's own network namespace gets nothing (no link, address, route, rule, iptables or
# nftables rule, listening socket): up.sh saves its state and down.sh compares. What is
# created outside the namespaces (cgroups /knp-n1 and /knp-n2 in each v1 hierarchy, the mount
# points /var/lib/cni and /var/lib/kubelet if there were none) is listed in $run/created and removed by down.sh.
# When a step fails, up.sh names it and runs down.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"

cni=
while [ $# -gt 0 ]; do
  case $1 in
    --cni) cni=${2:-}; shift 2 ;;
    *) echo "usage: $0 --cni ptp|bridge" >&2; exit 2 ;;
  esac
done
case $cni in
  ptp | bridge) ;;
  *) echo "usage: $0 --cni ptp|bridge" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "$0: run it as root (network namespaces, mounts, cgroups)" >&2; exit 2; }

step=checks
failed() {
  local rc=$?
  [ $rc -eq 0 ] && return
  say "FAILED at step: $step (exit $rc); logs in $run; stopping what was started"
  "$here/down.sh" >&2 || true
  exit $rc
}

# --- checks -----------------------------------------------------------------------------------
for binary in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  [ -x "$bin/$binary" ] || { say "missing $bin/$binary: run integration/apiserver/build.sh first"; exit 1; }
done
for image in pause agnhost busybox connrate; do
  [ -s "$images/test/$image.tar" ] || { say "missing $images/test/$image.tar: run integration/cluster/images.sh first"; exit 1; }
done
for ns in "$lan_ns" "$cp_ns" "${node_names[@]}"; do
  [ ! -e "/run/netns/$ns" ] || { say "network namespace $ns exists: a cluster is up (integration/cluster/down.sh)"; exit 1; }
done
install_rig_packages
[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || [ "$cni" != bridge ] ||
  { say "the bridge setup needs br_netfilter (no /proc/sys/net/bridge): modprobe br_netfilter"; exit 1; }

rm -rf "$run"
mkdir -p "$run/pki"
trap failed EXIT
echo "$cni" >"$run/cni"
"$here/host-state.sh" >"$run/host-before.txt"

# --- certificates, tokens, kubeconfigs --------------------------------------------------------
step="certificates and kubeconfigs"
say "$step"
(
  cd "$run/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj /CN=knp-rig-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
  printf '%s\n' "subjectAltName=IP:$kubernetes_service_ip,IP:$cp_ip,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost" \
    'extendedKeyUsage=serverAuth' 'keyUsage=digitalSignature,keyEncipherment' >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)
token() { openssl rand -hex 16; }
# kubeconfig FILE SERVER TOKEN
kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: knp-rig, cluster: {server: "$2", certificate-authority: "$run/pki/ca.crt"}}]
users: [{name: user, user: {token: "$3"}}]
contexts: [{name: knp-rig, context: {cluster: knp-rig, user: user}}]
current-context: knp-rig
EOF
}
admin_token=$(token) kcm_token=$(token) scheduler_token=$(token) proxy_token=$(token)
echo "$admin_token" >"$run/pki/admin.token"
{
  echo "$admin_token,admin,admin,system:masters"
  echo "$kcm_token,system:kube-controller-manager,kcm"
  echo "$scheduler_token,system:kube-scheduler,scheduler"
  echo "$proxy_token,system:kube-proxy,kube-proxy"
} >"$run/pki/tokens.csv"
kubeconfig "$run/admin.kubeconfig" "https://127.0.0.1:$api_port" "$admin_token"
kubeconfig "$run/kcm.kubeconfig" "https://127.0.0.1:$api_port" "$kcm_token"
kubeconfig "$run/scheduler.kubeconfig" "https://127.0.0.1:$api_port" "$scheduler_token"
kubeconfig "$run/kube-proxy.kubeconfig" "https://$cp_ip:$api_port" "$proxy_token"

# --- node configurations ----------------------------------------------------------------------
step="node configurations"
for node in "${node_names[@]}"; do
  dir=$run/$node
  mkdir -p "$dir/cni/net.d" "$dir/kubelet"
  node_token=$(token)
  echo "$node_token,system:node:$node,kubelet-$node,system:nodes" >>"$run/pki/tokens.csv"
  kubeconfig "$dir/kubelet.kubeconfig" "https://$cp_ip:$api_port" "$node_token"
  cat >"$dir/containerd.toml" <<EOF
# containerd of $node, in its private /run (node.sh).
version = 2
root = "$dir/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "/run/containerd/containerd.sock"
[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  # Without CAP_SYS_RESOURCE (this VM drops it) runc cannot lower oom_score_adj below its own,
  # and every sandbox (pause asks for -998) fails: clamp the pods' values to containerd's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
        Root = "/run/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
EOF
  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${node_ip[$node]}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
cgroupRoot: /$node
cgroupsPerQOS: true
failSwapOn: false
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "200Mi", nodefs.available: "5%", imagefs.available: "5%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
rotateCertificates: false
# The default, 10 s, shows Ready up to 10 s after it is true.
nodeStatusUpdateFrequency: 2s
EOF
done

# --- outside the namespaces: cgroups, a mount point -------------------------------------------
step="cgroups and mount points"
: >"$run/created"
for node in "${node_names[@]}"; do
  for hierarchy in /sys/fs/cgroup/*/; do
    case $hierarchy in */unified/) continue ;; esac
    [ -d "$hierarchy$node" ] && die "cgroup $hierarchy$node exists (a previous rig's?)"
    mkdir "$hierarchy$node"
    echo "$hierarchy$node" >>"$run/created"
  done
  cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$node/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$node/cpuset.mems"
done
# Mount points for the nodes' private /var/lib/cni and /var/lib/kubelet (node.sh).
for path in /var/lib/cni /var/lib/kubelet; do
  if [ ! -d $path ]; then
    mkdir $path
    echo $path >>"$run/created"
  fi
done

# --- network ----------------------------------------------------------------------------------
step="network namespaces and links"
say "$step: $lan_ns (lan0 $gateway_ip/24), $cp_ns ($cp_ip), ${node_names[*]}"
ip netns add "$lan_ns"
ip -n "$lan_ns" link set lo up
ip -n "$lan_ns" link add lan0 type bridge
ip -n "$lan_ns" addr add "$gateway_ip/24" dev lan0
ip -n "$lan_ns" link set lan0 up
# A plain L2 segment: nothing between the nodes goes through this namespace's netfilter.
ip netns exec "$lan_ns" sh -c 'echo 0 >/proc/sys/net/bridge/bridge-nf-call-iptables; echo 0 >/proc/sys/net/bridge/bridge-nf-call-ip6tables'
# join NS IP PORT: NS's eth0 on lan0 (both ends made inside the rig's namespaces).
join() {
  ip netns add "$1"
  ip -n "$1" link set lo up
  ip -n "$1" link add eth0 mtu $mtu type veth peer name "$3" mtu $mtu netns "$lan_ns"
  ip -n "$lan_ns" link set "$3" master lan0 up
  ip -n "$1" addr add "$2/24" dev eth0
  ip -n "$1" link set eth0 up
  ip -n "$1" route add default via "$gateway_ip"
  # The kubelet's in-tree AWS credential provider probes 169.254.169.254 at start: fail fast.
  ip -n "$1" route add unreachable 169.254.0.0/16
}
join "$cp_ns" "$cp_ip" cp
for node in "${node_names[@]}"; do
  join "$node" "${node_ip[$node]}" "${node#knp-}"
  if [ "$cni" = bridge ]; then
    # flannel's requirement (kubeadm checks it too): bridged pod traffic goes through the
    # IPv4/IPv6 hooks, hence through kube-proxy's rules and the agent's table.
    ip netns exec "$node" sh -c 'echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables; echo 1 >/proc/sys/net/bridge/bridge-nf-call-ip6tables'
  fi
done

# launch MACHINE NS ARGS...: node.sh in NS's network namespace and a mount namespace of its own.
launch() {
  local machine=$1 ns=$2
  shift 2
  mkdir -p "$run/$machine/logs"
  setsid unshare --mount --propagation slave nsenter --net="/run/netns/$ns" \
    "$here/node.sh" "$@" >"$run/$machine/logs/launcher.log" 2>&1 </dev/null &
}
# started MACHINE: waits for node.sh's "started" mark; fails with its log if it exits first.
started() {
  local machine=$1 i
  for ((i = 0; i < 720; i++)); do
    [ -e "$run/$machine/started" ] && return 0
    if [ -f "$run/$machine/pids/launcher.pid" ] && ! kill -0 "$(cat "$run/$machine/pids/launcher.pid")" 2>/dev/null; then
      cat "$run/$machine/logs/launcher.log" >&2
      die "$machine did not start (above: its launcher's log)"
    fi
    sleep 0.25
  done
  die "$machine: not started after 180 s; see $run/$machine/logs"
}

step="control plane"
say "$step: etcd, kube-apiserver, kube-controller-manager, kube-scheduler in $cp_ns"
t0=$SECONDS
launch cp "$cp_ns" cp
started cp
say "control plane up in $((SECONDS - t0)) s"

step="nodes"
say "$step: containerd, kubelet, kube-proxy in ${node_names[*]}"
t0=$SECONDS
for node in "${node_names[@]}"; do launch "$node" "$node" node "$node"; done
for node in "${node_names[@]}"; do started "$node"; done

# --- the CNI, as kindnetd or flannel would write it --------------------------------------------
step="pod network ($cni)"
pod_cidr() { kc get node "$1" -o jsonpath='{.spec.podCIDR}'; }
has_pod_cidr() { [ -n "$(pod_cidr "$1")" ]; }
declare -A cidr
for node in "${node_names[@]}"; do
  wait_for "node $node registered with a pod CIDR" 120 has_pod_cidr "$node"
  cidr[$node]=$(pod_cidr "$node")
done
say "$step: ${node_names[0]} ${cidr[${node_names[0]}]}, ${node_names[1]} ${cidr[${node_names[1]}]}"
for node in "${node_names[@]}"; do
  ipam="\"ipam\": {\"type\": \"host-local\", \"dataDir\": \"$run/$node/cni/ipam\", \"ranges\": [[{\"subnet\": \"${cidr[$node]}\"}]]"
  case $cni in
    ptp)
      # kindnetd's conflist (its cni.go): a veth per pod with a /32 route to it, no masquerade.
      plugin="{\"type\": \"ptp\", \"ipMasq\": false, \"mtu\": $mtu, $ipam, \"routes\": [{\"dst\": \"0.0.0.0/0\"}]}}"
      ;;
    bridge)
      # flannel's delegate to the bridge plugin (flannel's cni: hairpinMode, isDefaultGateway,
      # ipMasq false), the host-gw backend's routes between nodes below.
      plugin="{\"type\": \"bridge\", \"bridge\": \"cni0\", \"isGateway\": true, \"isDefaultGateway\": true, \"hairpinMode\": true, \"ipMasq\": false, \"mtu\": $mtu, $ipam, \"routes\": [{\"dst\": \"$cluster_cidr\"}]}}"
      ;;
  esac
  cat >"$run/$node/cni/net.d/10-$cni.conflist" <<EOF
{"cniVersion": "0.3.1", "name": "knp-$cni", "plugins": [
  $plugin,
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
  python3 -m json.tool "$run/$node/cni/net.d/10-$cni.conflist" >/dev/null || die "bad conflist for $node"
  # Routes to the other nodes' pods through those nodes (kindnetd's routes.go, flannel host-gw).
  for peer in "${node_names[@]}"; do
    [ "$peer" = "$node" ] || ip -n "$node" route replace "${cidr[$peer]}" via "${node_ip[$peer]}"
  done
  ip -n "$cp_ns" route replace "${cidr[$node]}" via "${node_ip[$node]}"
done

step="nodes Ready"
node_ready() { [ "$(kc get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
for node in "${node_names[@]}"; do wait_for "node $node Ready" 120 node_ready "$node"; done
say "nodes Ready $((SECONDS - t0)) s after their start"
kc get nodes -o wide >&2

step="pods of the cluster"
# The default ServiceAccount's token (kube-controller-manager) must exist before pods start.
default_token() { [ -n "$(kc -n default get sa default -o jsonpath='{.secrets[0].name}')" ]; }
wait_for "the default ServiceAccount's token" 60 default_token
trap - EXIT
say "cluster up ($cni) in $SECONDS s; kubectl: integration/cluster/kubectl.sh; stop: integration/cluster/down.sh"
