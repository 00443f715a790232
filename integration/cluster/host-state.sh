#!/usr/bin/env bash
# Prints what the rig must leave as it found it in the machine's own namespaces: links,
# addresses, routes and rules of every table, iptables (legacy and nft) and the nftables
# ruleset, the sysctls that kubelet, kube-proxy and the CNI plugins write, the rig's and pods'
# named network namespaces, mounts, the cgroup hierarchies' top level and the directories
# daemons write to by default. Not listening sockets: other test suites on the machine open and close theirs
# (the API server suites listen on 127.0.0.1), and every process the rig starts runs in its
# own network namespaces and is stopped by pid. up.sh saves it, down.sh compares:
#   integration/cluster/host-state.sh > before.txt; ...; diff before.txt <(host-state.sh)
# Read only: it runs in the caller's namespaces and changes nothing (iptables-*-save and `nft
# list` only read; `ip` lists).
set -euo pipefail

section() { printf '== %s\n' "$1"; }
section links
ip -o link show | sed -E 's/^[0-9]+: //; s/ link\/.*//'
section addresses
ip -o addr show | awk '{print $2, $3, $4}'
section routes
ip route show table all
ip -6 route show table all
section rules
ip rule show
ip -6 rule show
section iptables
for save in iptables-legacy-save ip6tables-legacy-save iptables-nft-save ip6tables-nft-save; do
  if command -v "$save" >/dev/null; then "$save" 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]//' || true; fi
done
section nftables
nft list ruleset
section sysctls
for key in net/ipv4/ip_forward net/ipv4/conf/all/forwarding net/ipv4/conf/all/route_localnet \
  net/ipv6/conf/all/forwarding net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables \
  net/bridge/bridge-nf-call-arptables net/netfilter/nf_conntrack_max \
  net/netfilter/nf_conntrack_tcp_timeout_established net/netfilter/nf_conntrack_tcp_timeout_close_wait \
  vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys \
  kernel/keys/root_maxbytes; do
  printf '%s = %s\n' "$key" "$(cat "/proc/sys/$key" 2>/dev/null || echo absent)"
done
printf 'nf_conntrack hashsize = %s\n' "$(cat /sys/module/nf_conntrack/parameters/hashsize 2>/dev/null || echo absent)"
# Named network namespaces the rig could leave: its own (knp-...) and a pod's, had containerd
# put it in /run/netns (cni-...). Others come and go with whoever else uses the machine (the
# root suites of integration/ name theirs knp-test-<pid>-... and knp-sim-<pid>-...).
ours='^(knp-|cni-)' others='^(knp-test|knp-sim)-[0-9]+-'
section "network namespaces"
{ ip netns list | awk '{print $1}' | grep -E "$ours" | grep -Ev "$others"; } || true
section mounts
awk '{print $5, $9}' /proc/self/mountinfo |
  awk '$1 !~ "^/run/netns/" || $1 ~ "^/run/netns/(knp-|cni-)" && $1 !~ "^/run/netns/(knp-test|knp-sim)-[0-9]+-"' | sort
section "cgroups (top level of each hierarchy)"
for hierarchy in /sys/fs/cgroup/*/; do
  find "$hierarchy" -mindepth 1 -maxdepth 1 -type d | sort
done
section "paths daemons write to by default"
for path in /run/containerd /run/runc /run/xtables.lock /run/flannel /var/lib/cni /var/lib/kubelet \
  /var/lib/containerd /var/lib/etcd /var/log/pods /var/log/containers /etc/cni /opt/cni /etc/kubernetes; do
  if [ -e "$path" ]; then find "$path" -maxdepth 1 -printf '%p\n' | sort; fi
done
true
