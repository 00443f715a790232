#!/usr/bin/env bash
# Checks that the agents on the rig's nodes (deploy-agent.sh) stayed healthy through what ran
# since they started, as root:
#   integration/cluster/check-agents.sh
# A test that passes while the agent refuses its rulesets proves nothing about the agent (a
# refused ruleset leaves the previous one enforcing, and failing closed can look like a
# passed "cannot connect"). So for each node: the agent pod never restarted, its /metrics
# count no failed apply (kube_nftpol_dataplane_apply_errors_total 0) and no failed table
# check, and its log has no ERROR line. Prints each agent's applies, repairs, NFLOG records
# and losses, and programming latency; fails naming what is wrong.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"
[ -e "/run/netns/$cp_ns" ] || die "the rig is not up (integration/cluster/up.sh)"

problems=0
while read -r pod node restarts; do
  [ -n "$pod" ] || continue
  metrics=$(in_node "$node" curl -fsS http://127.0.0.1:9640/metrics) || die "$node: no /metrics from the agent"
  value() { echo "$metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d", s }'; }
  applies=$(value kube_nftpol_dataplane_applies_total)
  errors=$(value kube_nftpol_dataplane_apply_errors_total)
  repairs=$(value kube_nftpol_dataplane_repairs_total)
  records=$(value kube_nftpol_flowlog_records_total)
  lost=$(value kube_nftpol_flowlog_lost_records_total)
  latency_count=$(value kube_nftpol_programming_latency_seconds_count)
  latency_sum=$(echo "$metrics" | awk '$1 == "kube_nftpol_programming_latency_seconds_sum" {print $2}')
  error_lines=$(kc -n kube-system logs "$pod" | grep -c ' ERROR ' || true)
  say "$pod on $node: restarts $restarts, applies $applies, apply errors $errors, repairs $repairs, NFLOG records $records (lost $lost), programming latency mean $(awk -v s="${latency_sum:-0}" -v n="$latency_count" 'BEGIN { printf "%.0f ms over %d changes", n ? 1000 * s / n : 0, n }'), ERROR lines $error_lines"
  if [ "$restarts" != 0 ] || [ "$errors" != 0 ] || [ "$error_lines" != 0 ]; then
    problems=$((problems + 1))
    kc -n kube-system logs "$pod" | grep ' ERROR ' | tail -5 >&2 || true
  fi
done < <(kc -n kube-system get pods -l app.kubernetes.io/name=kube-nftpol \
  -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.containerStatuses[0].restartCount}{"\n"}{end}')
[ "$problems" -eq 0 ] || die "$problems agent(s) restarted, failed an apply or logged an ERROR (above)"
