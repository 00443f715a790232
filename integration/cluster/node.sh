#!/usr/bin/env bash
# The launcher of one machine of the rig: starts its daemons and waits for them. up.sh runs it
# as
#   setsid unshare --mount --propagation slave nsenter --net=/run/netns/NS node.sh cp
#   setsid unshare --mount --propagation slave nsenter --net=/run/netns/NS node.sh node NAME
# so it lives in that network namespace and in a mount namespace of its own, a slave of the
# machine's: what it and its daemons mount is seen nowhere else and goes away with the last of
# them; what the machine mounts later is still seen here.
#   cp          etcd, kube-apiserver, kube-controller-manager, kube-scheduler
#   node NAME   containerd (with the test images imported), kubelet, kube-proxy
# Each daemon's pid goes to $run/<machine>/pids/<daemon>.pid, its output to .../logs/; down.sh
# stops them by those pids. A daemon that does not come up fails the launcher, which stops the
# others first; SIGTERM to the launcher stops them all.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"

role=${1:?usage: node.sh cp | node NAME}
machine="cp"
[ "$role" = node ] && machine=${2:?usage: node.sh node NAME}
dir=$run/$machine
mkdir -p "$dir/pids" "$dir/logs"
echo $$ >"$dir/pids/launcher.pid"

# Stops the daemons started so far, newest first (when a start fails, or on SIGTERM).
started=()
stop_started() {
  local i pid
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    pid=$(cat "$dir/pids/${started[i]}.pid" 2>/dev/null) || continue
    kill "$pid" 2>/dev/null || true
  done
}
trap 'stop_started' EXIT
trap 'exit 143' TERM

# 1. /sys of this network namespace (so /sys/class/net lists its links; kubelet and cAdvisor
#    read it), keeping the cgroup hierarchies, which a fresh sysfs would hide.
mkdir -p "$dir/mnt/cgroup"
mount --rbind /sys/fs/cgroup "$dir/mnt/cgroup"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount --move "$dir/mnt/cgroup" /sys/fs/cgroup
# 2. A private /run: containerd's state and socket, runc's state, the runc shims' sockets
#    (hard-wired to /run/containerd/s), iptables' /run/xtables.lock.
mount -t tmpfs -o mode=755,size=256m "run-$machine" /run
# 3. /var/log of its own: kubelet writes pod logs to the hard-wired /var/log/pods and
#    /var/log/containers.
mkdir -p "$dir/var-log"
mount --bind "$dir/var-log" /var/log
# 4. /var/lib/cni and /var/lib/kubelet of its own: containerd's CNI library caches results in
#    the hard-wired /var/lib/cni/results, the kubelet's device plugin manager uses the
#    hard-wired /var/lib/kubelet/device-plugins whatever --root-dir says. up.sh made the mount
#    points if the machine had none, and down.sh removes them.
for path in cni kubelet; do
  mkdir -p "$dir/var-lib-$path"
  mount --bind "$dir/var-lib-$path" "/var/lib/$path"
done
# 5. kubelet sets six machine-wide sysctls at start (vm.overcommit_memory=1, kernel.panic=10,
#    ...). It finds files holding those values instead, and the machine's stay untouched.
mkdir -p "$dir/mnt/sysctl"
for setting in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  key=${setting%=*}
  file=$dir/mnt/sysctl/${key//\//.}
  echo "${setting#*=}" >"$file"
  mount --bind "$file" "/proc/sys/$key"
done

# start NAME CMD...: runs a daemon in the background, its pid in pids/NAME.pid.
start() {
  local name=$1
  shift
  "$@" >"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/pids/$name.pid"
  started+=("$name")
}
# ready NAME SECONDS CMD...: waits until CMD succeeds while the daemon NAME still runs.
ready() {
  local name=$1 seconds=$2 i pid
  shift 2
  pid=$(cat "$dir/pids/$name.pid")
  for ((i = 0; i < seconds * 4; i++)); do
    if "$@" >/dev/null 2>&1; then
      say "$machine: $name ready"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || die "$machine: $name exited; its log: $dir/logs/$name.log"
    sleep 0.25
  done
  die "$machine: $name not ready after $seconds s; its log: $dir/logs/$name.log"
}

start_control_plane() {
  start etcd etcd --name knp --data-dir "$dir/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster knp=http://127.0.0.1:2380 --listen-metrics-urls= --quota-backend-bytes=2147483648
  ready etcd 60 curl -fs http://127.0.0.1:2379/health

  start kube-apiserver "$bin/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --secure-port=$api_port --insecure-port=0 --advertise-address="$cp_ip" \
    --tls-cert-file="$run/pki/apiserver.crt" --tls-private-key-file="$run/pki/apiserver.key" \
    --client-ca-file="$run/pki/ca.crt" --token-auth-file="$run/pki/tokens.csv" \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --service-account-key-file="$run/pki/sa.pub" --service-account-signing-key-file="$run/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$service_cidr" --kubelet-preferred-address-types=InternalIP \
    --profiling=false --v=1
  ready kube-apiserver 120 curl -fsk -H "Authorization: Bearer $(cat "$run/pki/admin.token")" \
    "https://127.0.0.1:$api_port/readyz"

  start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$run/kcm.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --port=0 \
    --service-account-private-key-file="$run/pki/sa.key" --root-ca-file="$run/pki/ca.crt" \
    --use-service-account-credentials=true --allocate-node-cidrs=true --cluster-cidr="$cluster_cidr" \
    --node-cidr-mask-size=24 --service-cluster-ip-range="$service_cidr" --profiling=false --v=1
  start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$run/scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --port=0 --profiling=false --v=1
}

start_node() {
  local sock=/run/containerd/containerd.sock archive
  start containerd containerd --config "$dir/containerd.toml"
  ready containerd 60 ctr --address $sock version
  for archive in "$images"/test/*.tar; do
    ctr --address $sock --namespace k8s.io images import --no-unpack "$archive" >>"$dir/logs/ctr-import.log" 2>&1 ||
      die "$machine: ctr images import $archive failed; see $dir/logs/ctr-import.log"
  done
  say "$machine: images $(ctr --address $sock --namespace k8s.io images ls -q | grep -v '^sha256:' | paste -sd' ')"

  start kubelet "$bin/kubelet" --config="$dir/kubelet.yaml" --kubeconfig="$dir/kubelet.kubeconfig" \
    --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet/pki" --volume-plugin-dir="$dir/kubelet/volume-plugins" \
    --container-runtime=remote --container-runtime-endpoint=unix://$sock --containerd=$sock \
    --node-ip="${node_ip[$machine]}" --hostname-override="$machine" --v=2
  ready kubelet 60 curl -fs http://127.0.0.1:10248/healthz

  start kube-proxy "$bin/kube-proxy" --kubeconfig="$run/kube-proxy.kubeconfig" --hostname-override="$machine" \
    --bind-address="${node_ip[$machine]}" --cluster-cidr="$cluster_cidr" --proxy-mode=iptables \
    --conntrack-max-per-core=0 --conntrack-min=0 \
    --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
    --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 --v=1
  ready kube-proxy 60 curl -fs http://127.0.0.1:10256/healthz
}

case $role in
  cp) start_control_plane ;;
  node) start_node ;;
  *) die "unknown role $role" ;;
esac
touch "$dir/started"
say "$machine: all started"
# Wait for the daemons. down.sh stops them one by one, in its order; one that exits on its own
# is named in this launcher's log (and up.sh's checks notice it).
trap - EXIT
trap 'stop_started; exit 143' TERM
while [ -n "$(jobs -pr)" ]; do
  wait -n || true
  for name in "${started[@]}"; do
    pid=$(cat "$dir/pids/$name.pid" 2>/dev/null) || continue
    kill -0 "$pid" 2>/dev/null || { say "$machine: $name ($pid) exited"; rm -f "$dir/pids/$name.pid"; }
  done
done
say "$machine: every daemon has exited"
