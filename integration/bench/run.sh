#!/usr/bin/env bash
# The benchmarks of integration/bench/, as root; each prints its table:
#   sudo integration/bench/run.sh           full run, release build
#   sudo integration/bench/run.sh --quick   short run on the debug build the root suites
#                                           already built: keeps the benchmarks working (CI),
#                                           its figures mean nothing
#
# 1. dataplane.rs: per-packet cost of enforcement on a simulated node, the agent with 10,000
#    pods and 1,000 policies against no agent, in the same run (README: Benchmarks).
# 2. programming.rs: programming latency against the API server (its own section below).
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
  bench_dataplane::dataplane_benchmark_agent_with_10000_pods_against_no_agent \
  --nocapture --test-threads=1

# The second benchmark (programming latency against the API server, integration/bench/
# programming.rs) runs here and prints its table after the dataplane one.
