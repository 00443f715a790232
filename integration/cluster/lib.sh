# shellcheck shell=bash
# Settings and helpers of the real-node rig, sourced by the scripts beside it (not run alone).
#
# The rig is a Kubernetes v1.20.2 cluster made of real parts, confined to network namespaces
# so that the machine's own network namespace never changes:
#
#   knp-lan  bridge lan0 10.78.0.1/24: the L2 segment of the nodes (docker's bridge in kind)
#   knp-cp   eth0 10.78.0.2: etcd, kube-apiserver, kube-controller-manager, kube-scheduler;
#            kubectl and e2e.test run here too (integration/cluster/kubectl.sh)
#   knp-n1   eth0 10.78.0.11: containerd, kubelet, kube-proxy; pods of the node
#   knp-n2   eth0 10.78.0.12: the same
#
# Every daemon of a namespace runs under one launcher (node.sh) in a private mount namespace
# of its own, so nothing the daemons mount is seen outside and all of it goes with them.
# State: $KNP_CLUSTER_DIR (default /var/cache/kube-nftpol/cluster); the binaries come from
# integration/apiserver/build.sh's cache, the images from images.sh's.

# shellcheck disable=SC2034 # the scripts that source this use the settings

version=1.20.2
cache_root=${KNP_CACHE:-/var/cache/kube-nftpol}
bin=${KNP_APISERVER_BIN:-${KNP_APISERVER_CACHE:-$cache_root/k8s-v$version}/bin}
images=$cache_root/images        # image archives (images.sh, agent-image.sh)
state=${KNP_CLUSTER_DIR:-$cache_root/cluster}
run=$state/run                   # one cluster's state: certificates, configs, logs, pids

lan_ns=knp-lan
cp_ns=knp-cp
node_names=(knp-n1 knp-n2)
lan_prefix=10.78.0
gateway_ip=$lan_prefix.1
cp_ip=$lan_prefix.2
declare -A node_ip=([knp-n1]=$lan_prefix.11 [knp-n2]=$lan_prefix.12)
cluster_cidr=10.244.0.0/16       # each node gets a /24 of it from kube-controller-manager
service_cidr=10.96.0.0/12
kubernetes_service_ip=10.96.0.1
api_port=6443
mtu=1500
agent_image_name=knp.local/kube-nftpol  # the agent image's name in the nodes (agent-image.sh)

# The names `e2e.test --list-images` asks for (v1.20.2) that NetworkPolicy specs use.
pause_image=k8s.gcr.io/pause:3.2
agnhost_image=k8s.gcr.io/e2e-test-images/agnhost:2.21
busybox_image=docker.io/library/busybox:1.29
connrate_image=knp.local/connrate:1 # measure.sh's load generator (connrate.c)

# A message on stderr, with the time since the script started.
say() { printf '%s: [%3d s] %s\n' "${0##*/}" "$SECONDS" "$*" >&2; }

# Fails the script with a message naming what is missing or wrong.
die() {
  say "FAILED: $*"
  exit 1
}

# kubectl v1.20.2 as the cluster's admin, run in the control plane's namespace (the API
# server is reachable from there only; nothing listens in the machine's namespace).
kc() { ip netns exec "$cp_ns" "$bin/kubectl" --kubeconfig "$run/admin.kubeconfig" "$@"; }

# Runs a command in a node's network and mount namespaces (those of its launcher), where its
# containerd socket and its private /run are: in_node knp-n1 ctr ...
in_node() {
  local node=$1
  shift
  local pid
  pid=$(cat "$run/$node/pids/launcher.pid" 2>/dev/null) || die "no launcher pid for $node"
  nsenter --target "$pid" --mount --net "$@"
}

# ctr of a node's containerd, in the CRI's namespace.
node_ctr() {
  local node=$1
  shift
  in_node "$node" ctr --address /run/containerd/containerd.sock --namespace k8s.io "$@"
}

# Waits until a command succeeds: wait_for WHAT SECONDS CMD...; fails naming WHAT.
wait_for() {
  local what=$1 seconds=$2 i
  shift 2
  for ((i = 0; i < seconds * 4; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  die "$what: not after $seconds s"
}

# Installs the Debian packages of the "file package" pairs whose file is missing, without their
# recommends (integration/lib/packages.sh).
# shellcheck source=integration/lib/packages.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/packages.sh"
install_missing() { knp_need_files --no-install-recommends "$@"; }

# The Debian packages the rig runs (containerd, runc and the CNI plugins among them).
install_rig_packages() {
  install_missing /usr/bin/containerd containerd /usr/sbin/runc runc /usr/lib/cni/ptp containernetworking-plugins \
    /usr/sbin/iptables iptables /usr/sbin/conntrack conntrack /usr/bin/nsenter util-linux \
    /usr/bin/openssl openssl /usr/bin/curl curl /usr/bin/etcd etcd-server /usr/bin/python3 python3
}

# Runs the calling script again in a private mount namespace (once): buildah mounts image
# layers, and whatever it leaves mounted must go with the script.
in_private_mounts() {
  if [ "${KNP_PRIVATE_MOUNTS:-}" != "$$" ]; then
    KNP_PRIVATE_MOUNTS=$$ exec unshare --mount --propagation private "$0" "$@"
  fi
}

# Unmounts everything mounted under DIR in this mount namespace, deepest first.
unmount_under() {
  local point
  awk -v dir="$1" 'index($5, dir "/") == 1 || $5 == dir {print $5}' /proc/self/mountinfo | sort -r |
    while read -r point; do umount -l "$point" || true; done
}

# Prepares buildah's work directory WORKDIR ($1) in the private mount namespace: a tmpfs for its
# run root and its temporary files, and one over /var/lib/containers, where containers/image
# keeps a blob cache whatever --root says (the mount point is made if missing, and removed by
# buildah_done). Call buildah_done WORKDIR on exit.
buildah_setup() {
  local work=$1
  mkdir -p "$work/run" "$work/tmp"
  mount -t tmpfs tmpfs "$work/run"
  if [ ! -d /var/lib/containers ]; then
    mkdir /var/lib/containers
    touch "$work/made-var-lib-containers"
  fi
  mount -t tmpfs tmpfs /var/lib/containers
  export TMPDIR=$work/tmp
}
buildah_done() {
  local work=$1
  unmount_under "$work"
  umount -l /var/lib/containers 2>/dev/null || true
  if [ -e "$work/made-var-lib-containers" ]; then rmdir /var/lib/containers || true; fi
  rm -rf "$work"
}

# buildah with a storage of its own under WORKDIR ($1) (buildah_setup): no image or container
# stays in the machine's /var/lib/containers, nothing in its /run.
buildah_in() {
  local work=$1
  shift
  buildah --root "$work/storage" --runroot "$work/run" --storage-driver overlay "$@"
}
