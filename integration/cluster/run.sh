#!/usr/bin/env bash
# The real-node rig, end to end, as root on Debian 12:
#   integration/cluster/run.sh                      # both CNIs, the e2e subset, the user scenario
#   integration/cluster/run.sh --e2e full           # every runnable e2e NetworkPolicy spec
#   integration/cluster/run.sh --cni bridge --e2e none
# Options: --cni ptp|bridge|both (default both), --e2e subset|full|none (default subset),
# --no-scenario, --runs N (the e2e specs N times in a row on each cluster, default 1),
# --upgrade (restart and upgrade the DaemonSet under traffic, upgrade.sh), --measure
# (programming latency, memory, connection rate with and without the agent, measure.sh),
# --observe ptp|bridge|both (observe mode's closed loop from zero on that CNI's cluster, right
# after the agent: observe.sh), --cnp ptp|bridge|both (the ClusterNetworkPolicy conformance
# suite of network-policy-api v0.2.0 on that CNI's cluster: cnp-conformance.sh; alone:
# --e2e none --no-scenario --cnp both).
# Everything: integration/cluster/run.sh --e2e full --runs 2 --upgrade --measure
# Steps (each named; the first that fails stops the run, says which it was, and the cluster is
# taken down):
#   1. Kubernetes v1.20.2 binaries (integration/apiserver/build.sh; cached)
#   2. the test images (images.sh; cached) and the agent's image from deploy/Dockerfile
#      (agent-image.sh: the release binary built here, a debootstrap base, buildah)
#   then for each CNI setup:
#   3. the cluster (up.sh --cni CNI): a control plane and two nodes in network namespaces
#   4. the agent as its DaemonSet (deploy-agent.sh: kubectl apply -k with an image override)
#   5. the upstream e2e NetworkPolicy specs (e2e.sh), then the agents' health (check-agents.sh:
#      no restart, no failed apply, no ERROR line)
#   6. the user scenario of the README (../user-scenario.sh), then the agents' health again
#   with --cnp: every test and probe of the ClusterNetworkPolicy conformance suite
#      (cnp-conformance.sh), then the agents' health again
#   with --upgrade: `kubectl rollout restart` and a new image tag under traffic (upgrade.sh)
#   with --measure: the measurements (measure.sh), their table printed
#   7. the cluster taken down (down.sh), which fails unless the machine's own namespaces are
#      exactly as before step 3
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"
# shellcheck source=integration/user-scenario.sh
. "$repo/integration/user-scenario.sh"

cnis=(ptp bridge) e2e=subset scenario=1 runs=1 upgrade=0 measure=0 cnp=none observe=none
while [ $# -gt 0 ]; do
  case $1 in
    --cni)
      case ${2:-} in both) cnis=(ptp bridge) ;; ptp | bridge) cnis=("$2") ;; *) echo "--cni ptp|bridge|both" >&2; exit 2 ;; esac
      shift 2
      ;;
    --e2e)
      case ${2:-} in subset | full | none) e2e=$2 ;; *) echo "--e2e subset|full|none" >&2; exit 2 ;; esac
      shift 2
      ;;
    --no-scenario) scenario=0; shift ;;
    --runs) runs=${2:?--runs N}; shift 2 ;;
    --upgrade) upgrade=1; shift ;;
    --measure) measure=1; shift ;;
    --cnp)
      case ${2:-} in ptp | bridge | both) cnp=$2 ;; *) echo "--cnp ptp|bridge|both" >&2; exit 2 ;; esac
      shift 2
      ;;
    --observe)
      case ${2:-} in ptp | bridge | both) observe=$2 ;; *) echo "--observe ptp|bridge|both" >&2; exit 2 ;; esac
      shift 2
      ;;
    *) sed -n '2,20p' "$0" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "$0: run it as root" >&2; exit 2; }

step="" cluster_up=0
timings=()
# begin STEP: names the step now running (the failure message names it).
begin() {
  step=$1
  step_start=$SECONDS
  printf '\n=== %s\n' "$step"
}
# end: records the step's duration.
end() { timings+=("$(printf '%5d s  %s' $((SECONDS - step_start)) "$step")"); }
# on_exit STATUS: names the failed step and takes the cluster down.
on_exit() {
  local rc=$1
  if [ "$rc" -ne 0 ]; then
    say "FAILED at step: $step (exit $rc)"
    if [ $cluster_up -eq 1 ]; then
      say "taking the cluster down"
      "$here/down.sh" || true
    fi
  fi
}
trap 'on_exit $?' EXIT

begin "Kubernetes v$version binaries (integration/apiserver/build.sh)"
bin=$("$repo/integration/apiserver/build.sh" | tail -1)
export KNP_APISERVER_BIN=$bin
end

begin "test images (images.sh)"
"$here/images.sh"
end

begin "agent image from deploy/Dockerfile (agent-image.sh)"
image_line=$("$here/agent-image.sh" | tail -1)
read -r agent_reference agent_archive <<<"$image_line"
if [ "$upgrade" -eq 1 ]; then
  # The same binary under a new tag: what an upgrade changes in the DaemonSet.
  image_line=$("$here/agent-image.sh" "${agent_reference##*:}-upgrade" | tail -1)
  read -r upgrade_reference upgrade_archive <<<"$image_line"
fi
agent_binary=${KNP_AGENT_BINARY:-${CARGO_TARGET_DIR:-$repo/target}/release/kube-nftpol}
end

# What the user scenario needs of the rig (see ../user-scenario.sh).
kubectl() { kc "$@"; }
agent_metrics() { in_node "$1" curl -fsS http://127.0.0.1:9640/metrics; }
kube-nftpol() { "$agent_binary" "$@"; }
scenario_image=$agnhost_image
scenario_dir=$(mktemp -d)
trap 'rc=$?; rm -rf "$scenario_dir"; on_exit $rc' EXIT

results=() measurements=()
for cni in "${cnis[@]}"; do
  begin "cluster up ($cni)"
  cluster_up=1
  "$here/up.sh" --cni "$cni"
  end

  begin "agent DaemonSet ($cni)"
  "$here/deploy-agent.sh" "$agent_reference" "$agent_archive"
  end

  if [ "$observe" = both ] || [ "$observe" = "$cni" ]; then
    begin "observe mode's closed loop ($cni)"
    "$here/observe.sh" "$agent_binary"
    "$here/check-agents.sh"
    end
  fi

  if [ "$e2e" != none ]; then
    for ((run_number = 1; run_number <= runs; run_number++)); do
      begin "e2e NetworkPolicy specs, $e2e, run $run_number of $runs ($cni)"
      "$here/e2e.sh" "--$e2e" | tee "$scenario_dir/e2e.txt"
      results+=("$(tail -1 "$scenario_dir/e2e.txt")")
      "$here/check-agents.sh"
      end
    done
  fi

  if [ "$scenario" -eq 1 ]; then
    begin "user scenario ($cni)"
    user_scenario "${node_names[0]}" "${node_names[1]}"
    "$here/check-agents.sh"
    end
  fi

  if [ "$cnp" = both ] || [ "$cnp" = "$cni" ]; then
    begin "ClusterNetworkPolicy conformance ($cni)"
    "$here/cnp-conformance.sh" | tee "$scenario_dir/cnp.txt"
    results+=("ClusterNetworkPolicy conformance ($cni): $(grep '^tests:' "$scenario_dir/cnp.txt")")
    end
  fi

  deployed=("$agent_reference" "$agent_archive")
  if [ "$upgrade" -eq 1 ]; then
    begin "restart and upgrade under traffic ($cni)"
    "$here/upgrade.sh" "$upgrade_reference" "$upgrade_archive"
    "$here/check-agents.sh"
    deployed=("$upgrade_reference" "$upgrade_archive")
    end
  fi

  if [ "$measure" -eq 1 ]; then
    begin "measurements ($cni)"
    "$here/measure.sh" "${deployed[@]}" | tee "$scenario_dir/measure.txt"
    measurements+=("$cni:" "$(cat "$scenario_dir/measure.txt")")
    end
  fi

  begin "cluster down, the machine's namespaces as before ($cni)"
  cluster_up=0
  "$here/down.sh"
  end
done

printf '\n=== rig summary\n'
printf '%s\n' "${timings[@]}"
[ ${#results[@]} -eq 0 ] || printf '%s\n' "${results[@]}"
[ ${#measurements[@]} -eq 0 ] || printf '%s\n' "${measurements[@]}"
