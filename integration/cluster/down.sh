#!/usr/bin/env bash
# Stops and removes the rig's cluster (up.sh), also a half-started one, as root:
#   integration/cluster/down.sh
# In order: each node's kubelet and kube-proxy, its containers (killed and removed through its
# containerd), containerd, the runc shims and any container process left in the node's cgroups;
# then the control plane. Every process is stopped by the pid its launcher recorded (SIGTERM,
# SIGKILL after 15 s), or found through the node's own mount namespace or cgroups, never by
# name. Then the cgroups, the network namespaces, the paths up.sh created (listed in
# $run/created) and the containers' and kubelets' files. It keeps the logs in $run.
# Last, it compares the machine's namespaces with what up.sh saw before it started
# (host-state.sh) and fails if anything differs or if something could not be removed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"
[ "$(id -u)" -eq 0 ] || { echo "$0: run it as root" >&2; exit 2; }

problems=0
problem() {
  say "PROBLEM: $*"
  problems=$((problems + 1))
}
alive() { kill -0 "$1" 2>/dev/null; }

# stop MACHINE NAME...: SIGTERM to each daemon by its recorded pid, SIGKILL after 15 s.
stop() {
  local machine=$1 name pidfile pid i
  shift
  for name in "$@"; do
    pidfile=$run/$machine/pids/$name.pid
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if alive "$pid"; then
      kill "$pid" 2>/dev/null || true
      for ((i = 0; i < 60; i++)); do alive "$pid" || break; sleep 0.25; done
      if alive "$pid"; then
        say "$machine: $name ($pid) ignored SIGTERM for 15 s: SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
        sleep 0.25
      fi
      alive "$pid" && problem "$machine: $name ($pid) still runs"
      say "$machine: stopped $name ($pid)"
    fi
    rm -f "$pidfile"
  done
}

# The processes sharing MACHINE's launcher's mount namespace (its daemons and the runc shims
# its containerd started; containers have mount namespaces of their own).
in_mount_ns_of() {
  local launcher mnt proc
  launcher=$(cat "$run/$1/pids/launcher.pid" 2>/dev/null) || return 0
  alive "$launcher" || return 0
  mnt=$(readlink "/proc/$launcher/ns/mnt") || return 0
  for proc in /proc/[0-9]*; do
    [ "${proc#/proc/}" = "$launcher" ] && continue
    [ "$(readlink "$proc/ns/mnt" 2>/dev/null)" = "$mnt" ] && echo "${proc#/proc/}"
  done
  return 0
}

# The processes in NODE's cgroups (its pods' containers), from the pids hierarchy.
in_cgroups_of() {
  [ -d "/sys/fs/cgroup/pids/$1" ] || return 0
  find "/sys/fs/cgroup/pids/$1" -name cgroup.procs -exec cat {} + 2>/dev/null || true
}

for node in "${node_names[@]}"; do
  [ -d "$run/$node" ] || continue
  stop "$node" kube-proxy kubelet
  if [ -f "$run/$node/pids/containerd.pid" ] && alive "$(cat "$run/$node/pids/containerd.pid")"; then
    tasks=$(node_ctr "$node" tasks ls -q 2>/dev/null || true)
    for task in $tasks; do node_ctr "$node" tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true; done
    [ -z "$tasks" ] || sleep 1
    for task in $tasks; do node_ctr "$node" tasks rm -f "$task" >/dev/null 2>&1 || true; done
    for container in $(node_ctr "$node" containers ls -q 2>/dev/null || true); do
      node_ctr "$node" containers rm "$container" >/dev/null 2>&1 || true
    done
  fi
  shims=$(in_mount_ns_of "$node" | while read -r pid; do
    grep -qx containerd-shim-runc-v2 "/proc/$pid/comm" 2>/dev/null && echo "$pid"
  done || true)
  stop "$node" containerd
  for pid in $shims; do
    if alive "$pid"; then kill "$pid" 2>/dev/null && say "$node: stopped runc shim $pid"; fi
  done
  sleep 0.5
  for pid in $(in_cgroups_of "$node"); do
    say "$node: killing container process $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-60))"
    kill -9 "$pid" 2>/dev/null || true
  done
  for pid in $(in_mount_ns_of "$node"); do
    say "$node: killing $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-60)), left in the node's mount namespace"
    kill -9 "$pid" 2>/dev/null || true
  done
  stop "$node" launcher
done
if [ -d "$run/cp" ]; then
  stop cp kube-scheduler kube-controller-manager kube-apiserver etcd launcher
fi

# Cgroups: the pods' (deepest first), then the nodes'.
for hierarchy in /sys/fs/cgroup/*/; do
  for node in "${node_names[@]}"; do
    [ -d "$hierarchy$node" ] || continue
    for ((i = 0; i < 20; i++)); do
      find "$hierarchy$node" -depth -type d -exec rmdir {} \; 2>/dev/null || true
      [ -d "$hierarchy$node" ] || break
      sleep 0.25
    done
    [ -d "$hierarchy$node" ] && problem "cannot remove cgroup $hierarchy$node (tasks: $(find "$hierarchy$node" -name tasks -exec cat {} + | head -3 | paste -sd' '))"
  done
done
for ns in "${node_names[@]}" "$cp_ns" "$lan_ns"; do
  if [ -e "/run/netns/$ns" ]; then
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -z "$pids" ] || problem "processes left in network namespace $ns: $pids"
    ip netns del "$ns" || problem "cannot delete network namespace $ns"
  fi
done
if [ -f "$run/created" ]; then
  while read -r path; do
    case $path in
      /sys/fs/cgroup/*) ;; # removed above
      # Gone already is as wanted (down.sh run a second time).
      *) [ ! -e "$path" ] || rmdir "$path" 2>/dev/null || problem "cannot remove $path (not empty?)" ;;
    esac
  done <"$run/created"
fi
# The containers' and kubelets' files and etcd's data (logs stay for reading).
for machine in "${node_names[@]}" cp; do
  files=${run:?}/$machine
  rm -rf "${files:?}/containerd" "$files/containerd-opt" "$files/kubelet" "$files/etcd" "${files:?}/mnt" \
    "$files/var-lib-cni" "$files/var-lib-kubelet" "$files/cni/ipam" 2>/dev/null ||
    problem "cannot remove the files of $machine under $files"
done
if grep -q " $state" /proc/self/mountinfo; then
  problem "mounts left under $state: $(grep " $state" /proc/self/mountinfo | awk '{print $5}' | paste -sd' ')"
fi

if [ -f "$run/host-before.txt" ]; then
  "$here/host-state.sh" >"$run/host-after.txt"
  if diff -u "$run/host-before.txt" "$run/host-after.txt" >&2; then
    say "the machine's namespaces are as before the cluster: links, addresses, routes, rules, iptables, nftables, sysctls, network namespaces, mounts, cgroups, paths"
  else
    problem "the machine's namespaces differ from before the cluster (diff above)"
  fi
fi
[ "$problems" -eq 0 ] || die "$problems problem(s) above"
say "down"
