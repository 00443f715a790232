#!/usr/bin/env bash
# Measures the agent on the rig's real cluster (up.sh, deploy-agent.sh), as root, in one run:
#   integration/cluster/measure.sh REFERENCE ARCHIVE    # the deployed image (agent-image.sh)
# 1. Programming latency: from just before `kubectl apply` of a policy that allows a denied
#    flow until a real pod's next connection gets through (the client on the other node tries
#    every 100 ms with a 100 ms connect timeout; so the figure includes kubectl's own start and
#    up to ~0.1 s of polling). Five samples; median and largest.
# 2. The agent's memory: VmRSS and VmHWM of each node's kube-nftpol process.
# 3. New connections per second between real pods, cross-node, through both pods' policy
#    chains (the server isolated for ingress, the client for egress, each allowing the other):
#    connrate (connrate.c) for 10 s with 2 processes, in five rounds: with the agent, with no
#    agent (the DaemonSet deleted, its pods gone, then `kube-nftpol uninstall` on each node:
#    the README's uninstall), with the agent again (deploy-agent.sh REFERENCE ARCHIVE), and so
#    on; the medians of each.
# Prints a Markdown table (docs/real-cluster.md has the last one).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"
[ $# -eq 2 ] || { echo "usage: $0 REFERENCE ARCHIVE" >&2; exit 2; }
[ -e "/run/netns/$cp_ns" ] || die "the rig is not up (integration/cluster/up.sh)"
agent_binary=${KNP_AGENT_BINARY:-${CARGO_TARGET_DIR:-$repo/target}/release/kube-nftpol}
[ -x "$agent_binary" ] || die "no agent binary at $agent_binary (for kube-nftpol uninstall)"
uptime() { cut -d' ' -f1 /proc/uptime; }

kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: measure}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: measure, labels: {app: server}}
spec:
  nodeName: ${node_names[0]}
  containers:
  - {name: http, image: $agnhost_image, args: [netexec, --http-port=8080]}
---
apiVersion: v1
kind: Pod
metadata: {name: prober, namespace: measure, labels: {app: prober}}
spec:
  nodeName: ${node_names[1]}
  containers:
  - {name: c, image: $agnhost_image, args: [pause]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-ingress, namespace: measure}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 8080}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress, namespace: measure}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: server}}}], ports: [{port: 8080}]}]
EOF
kc -n measure wait --for=condition=Ready pod/server pod/prober --timeout=120s >/dev/null
server=$(kc -n measure get pod server -o jsonpath='{.status.podIP}')

# 1. Programming latency: the prober is denied (not app=client) until prober-allowed exists.
probe_denied() { ! kc -n measure exec prober -- /agnhost connect --timeout=1s "$server:8080" 2>/dev/null; }
allow_prober='{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"prober-allowed","namespace":"measure"},"spec":{"podSelector":{"matchLabels":{"app":"server"}},"ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"prober"}}}]}]}}'
latencies=()
for sample in 1 2 3 4 5; do
  wait_for "the prober denied before sample $sample" 30 probe_denied
  kc -n measure exec prober -- sh -c "until /agnhost connect --timeout=100ms $server:8080 2>/dev/null; do usleep 100000; done; read u x </proc/uptime; echo \$u" \
    >"$state/probe.out" &
  probe=$!
  sleep 1 # the exec's loop is running
  t0=$(uptime)
  kc apply -f - >/dev/null <<<"$allow_prober"
  wait "$probe"
  t1=$(cat "$state/probe.out")
  latencies+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", 1000 * (b - a) }')")
  kc -n measure delete networkpolicy prober-allowed >/dev/null
done
rm -f "$state/probe.out"
sorted=$(printf '%s\n' "${latencies[@]}" | sort -n)
latency_median=$(sed -n 3p <<<"$sorted") latency_max=$(tail -1 <<<"$sorted")
say "programming latency, API write to a connecting pod: ${latencies[*]} ms"

# 2. Memory of each agent process (found by its name and its node's network namespace).
memory=()
for node in "${node_names[@]}"; do
  netns="net:[$(stat -L -c %i "/run/netns/$node")]"
  for proc in /proc/[0-9]*; do
    [ "$(cat "$proc/comm" 2>/dev/null)" = kube-nftpol ] || continue
    [ "$(readlink "$proc/ns/net" 2>/dev/null)" = "$netns" ] || continue
    memory+=("$node $(awk '/VmRSS|VmHWM/ { printf "%s=%d MiB ", $1, $2 / 1024 }' "$proc/status")")
  done
done
say "agent memory: ${memory[*]}"

# 3. Connection rate, with the agent and without, in alternating rounds.
succeeded() { [ "$(kc -n measure get pod "$1" -o jsonpath='{.status.phase}')" = Succeeded ]; }
rate() { # NAME: runs connrate in a client pod on the other node; its connections/s in $rate
  kc -n measure run "$1" --restart=Never --labels=app=client --image="$connrate_image" \
    --overrides="{\"spec\":{\"nodeName\":\"${node_names[1]}\"}}" -- "$server" 8080 10 2 >/dev/null
  wait_for "connrate pod $1 done" 120 succeeded "$1"
  local line
  line=$(kc -n measure logs "$1")
  say "$1: $line"
  rate=$(awk '{ sub("/s,", "", $6); print $6 }' <<<"$line")
}
remove_agent() {
  kc -n kube-system delete daemonset kube-nftpol --wait=true >/dev/null
  # The pods go after the DaemonSet object: an agent still running puts back a table removed
  # under it (its check finds the table missing and applies again), so wait for them first.
  wait_for "the agents' pods gone" 120 agents_gone
  for node in "${node_names[@]}"; do in_node "$node" "$agent_binary" uninstall >/dev/null; done
  for node in "${node_names[@]}"; do
    if in_node "$node" nft list table inet kube-nftpol >/dev/null 2>&1; then die "$node still has the table"; fi
  done
}
agents_gone() { [ -z "$(kc -n kube-system get pods -l app.kubernetes.io/name=kube-nftpol -o name)" ]; }
# Five rounds, alternating (this VM's 2 cores are shared, and rates scatter from round to
# round): with, without, with, without, with.
with=() without=()
for round in 1 2 3 4 5; do
  if [ $((round % 2)) -eq 1 ]; then
    [ "$round" -eq 1 ] || "$here/deploy-agent.sh" "$1" "$2" >/dev/null
    rate "with-agent-$round"
    with+=("$rate")
  else
    say "round $round, without the agent: the DaemonSet deleted, its pods gone, kube-nftpol uninstall on each node"
    remove_agent
    rate "without-agent-$round"
    without+=("$rate")
  fi
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
with_median=$(median "${with[@]}") without_median=$(median "${without[@]}")
kc delete namespace measure --wait=false >/dev/null

cat <<EOF
| measurement | value |
| --- | --- |
| programming latency, \`kubectl apply\` to a real pod's connection (5 samples) | median $latency_median ms, largest $latency_max ms (${latencies[*]}) |
| agent memory, each node | ${memory[*]} |
| new TCP connections per second, cross-node, both pods isolated and allowed (rounds in order: with, without, with, without, with) | with the agent ${with[*]} (median $with_median), without ${without[*]} (median $without_median) |
| ratio of the medians, with / without | $(awk -v a="$with_median" -v b="$without_median" 'BEGIN { printf "%.2f", a / b }') |
EOF
