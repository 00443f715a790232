#!/usr/bin/env bash
# The benchmarks of the node simulator (integration/sim/bench/), as root; each prints its table:
#   sudo integration/bench/run.sh           full run, release build
#   sudo integration/bench/run.sh --quick   short run on the debug build the root suites
#                                           already built: keeps the benchmarks working (CI),
#                                           its figures mean nothing
#
# 1. bench/dataplane.rs: per-packet cost of enforcement on a simulated node, the agent with 10,000
#    pods and 1,000 policies against no agent, in the same run (README: Benchmarks).
# 2. bench/programming.rs: programming latency and the agent's footprint at that scale against a
#    real kube-apiserver (built by integration/apiserver/build.sh, cached after the first run).
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=(--release)
if [ "${1:-}" = "--quick" ]; then
  export KNP_BENCH_QUICK=1
  profile=()
elif [ -n "${1:-}" ]; then
  echo "usage: integration/bench/run.sh [--quick]" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "integration/bench/run.sh: the benchmarks need root (network namespaces, nftables)" >&2
  exit 2
fi

echo "==> dataplane benchmark (cargo test ${profile[*]} --test sim, ignored test)"
cargo test "${profile[@]}" --quiet --test sim -- --ignored --exact \
  bench::dataplane::dataplane_benchmark_agent_with_10000_pods_against_no_agent \
  --nocapture --test-threads=1

echo "==> programming latency and footprint benchmark (cargo test ${profile[*]} --test sim, ignored test)"
KNP_APISERVER_BIN=${KNP_APISERVER_BIN:-$(integration/apiserver/build.sh | tail -1)}
export KNP_APISERVER_BIN
cargo test "${profile[@]}" --quiet --test sim -- --ignored --exact \
  bench::programming::programming_latency_and_footprint_at_cluster_scale \
  --nocapture --test-threads=1
