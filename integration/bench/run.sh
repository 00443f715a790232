#!/usr/bin/env bash
# The benchmarks of the node simulator (integration/sim/bench/), as root; each prints its table:
#   sudo integration/bench/run.sh               both, full run, release build
#   sudo integration/bench/run.sh programming   one of them: dataplane, programming or tiers
#   sudo integration/bench/run.sh --quick       short run on the debug build the root suites
#                                               already built: keeps the benchmarks working
#                                               (CI), its figures mean nothing
#
# 1. dataplane: per-packet cost of enforcement on a simulated node, the agent with 10,000
#    pods and 1,000 policies against no agent, in the same run (docs/benchmarks.md).
# 2. programming: programming latency and the agent's footprint at that scale against a real
#    kube-apiserver (built by integration/apiserver/build.sh, cached after the first run).
# 3. tiers: both of them again with 100 ClusterNetworkPolicies (50 per tier) added to the
#    cluster: per-packet cost against no agent and the agent without them, and programming
#    latency with a ClusterNetworkPolicy change. Not in the default set (run it by name).
# Installs the Debian packages it needs when they are missing (linux-perf too when
# KNP_BENCH_PERF is set); Rust is the one prerequisite.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
  echo "usage: integration/bench/run.sh [--quick] [dataplane|programming|tiers]" >&2
  exit 2
}
profile=(--release)
benches=(dataplane programming)
picked=()
for arg in "$@"; do
  case $arg in
    --quick)
      export KNP_BENCH_QUICK=1
      profile=()
      ;;
    dataplane | programming | tiers) picked+=("$arg") ;;
    *) usage ;;
  esac
done
[ ${#picked[@]} -gt 0 ] && benches=("${picked[@]}")
if [ "$(id -u)" -ne 0 ]; then
  echo "integration/bench/run.sh: the benchmarks need root (network namespaces, nftables)" >&2
  exit 2
fi

. integration/lib/packages.sh
extra=()
[ -n "${KNP_BENCH_PERF:-}" ] && extra+=(perf:linux-perf)
knp_need_packages "${KNP_BASE_PACKAGES[@]}" "${extra[@]}"
knp_need_cargo

for bench in "${benches[@]}"; do
  case $bench in
    dataplane)
      echo "==> dataplane benchmark (cargo test ${profile[*]} --test sim, ignored test)"
      cargo test "${profile[@]}" --quiet --test sim -- --ignored --exact \
        bench::dataplane::dataplane_benchmark_agent_with_10000_pods_against_no_agent \
        --nocapture --test-threads=1
      ;;
    programming)
      echo "==> programming latency and footprint benchmark (cargo test ${profile[*]} --test sim, ignored test)"
      # The API server suites find the binaries here (build.sh builds them once).
      KNP_APISERVER_BIN=${KNP_APISERVER_BIN:-$(integration/apiserver/build.sh | tail -1)}
      export KNP_APISERVER_BIN
      cargo test "${profile[@]}" --quiet --test sim -- --ignored --exact \
        bench::programming::programming_latency_and_footprint_at_cluster_scale \
        --nocapture --test-threads=1
      ;;
    tiers)
      echo "==> the tiers: dataplane and programming with 100 ClusterNetworkPolicies (cargo test ${profile[*]} --test sim, ignored tests)"
      KNP_APISERVER_BIN=${KNP_APISERVER_BIN:-$(integration/apiserver/build.sh | tail -1)}
      export KNP_APISERVER_BIN
      cargo test "${profile[@]}" --quiet --test sim -- --ignored --exact \
        bench::dataplane::dataplane_benchmark_100_cluster_policies_in_both_tiers_against_no_agent \
        --nocapture --test-threads=1
      cargo test "${profile[@]}" --quiet --test sim -- --ignored --exact \
        bench::programming::programming_latency_with_100_cluster_policies_at_cluster_scale \
        --nocapture --test-threads=1
      ;;
  esac
done
