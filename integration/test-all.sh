#!/usr/bin/env bash
# Runs every test of kube-nftpol on a fresh Debian 12 machine, as root:
#   sudo integration/test-all.sh
# It installs what it needs (Debian packages; crates come through cargo), then runs, in order:
# formatting, clippy, the cargo tests (no root needed), the build of a real kube-apiserver
# (cached after the first run), the root suites (real nftables inside network namespaces the
# tests create and delete; the API server), the page of `kube-nftpol ui` in headless Chromium,
# a one-iteration run of the compiler benchmark, a quick run of the benchmarks of
# integration/bench, 30 s of each cargo fuzz target, and the real-node rig (a two-node cluster
# on ptp and on bridge, the agent as its DaemonSet, upstream e2e NetworkPolicy specs, the
# README's user scenario, on ptp the ClusterNetworkPolicy conformance suite).
# Any suite that cannot run fails loudly; nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."

# The suites that need root (Cargo.toml: test = false, so a plain `cargo test` skips them).
# apiserver_smoke and flows_access need the kube-apiserver that integration/apiserver/build.sh
# builds (below).
root_suites="nft_accepts dataplane interfaces flowlog sim apiserver_smoke flows_access"
# Not root, but a browser, Node.js's npm package and the API server (test = false as well).
browser_suites="ui_browser"
# Run by the rig against its cluster (integration/cluster/cnp-conformance.sh), not here: linted.
rig_suites="cluster_cnp"

step() { printf '\n==> %s\n' "$*"; }

# Every cargo test run is teed here so the end can print one total for all suites.
results=$(mktemp)
trap 'rm -f "$results"' EXIT
run_tests() { "$@" 2>&1 | tee -a "$results"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "integration/test-all.sh: the root suites need root (network namespaces, nftables); run it with sudo" >&2
  exit 2
fi

step "installing Debian packages"
. integration/lib/packages.sh
knp_need_packages "${KNP_BASE_PACKAGES[@]}" "${KNP_TEST_PACKAGES[@]}"
knp_need_cargo
if [ ! -f ../shared/conformance/upstream.json ]; then
  echo "../shared/conformance/upstream.json is missing: the conformance suites need it beside the repository" >&2
  exit 2
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings (and the root and browser suites, which --all-targets skips)"
cargo clippy --all-targets --quiet -- -D warnings
for suite in $root_suites $browser_suites $rig_suites; do cargo clippy --quiet --test "$suite" -- -D warnings; done

step "cargo tests (no root)"
run_tests cargo test --quiet

step "the core crate depends on no runtime, Kubernetes client, netlink or nftables crate"
forbidden='^(tokio|kube|kube-client|kube-runtime|rtnetlink|netlink-[a-z-]+|nftables|libc|nix|mio|hyper|reqwest) '
core_tree=$(cargo tree -p kube-nftpol-core -e normal --prefix none --format '{p}')
if core_deps=$(grep -E "$forbidden" <<<"$core_tree"); then
  echo "kube-nftpol-core depends on: $core_deps (it must stay pure: docs/architecture.md)" >&2
  exit 1
fi
echo "$(sort -u <<<"$core_tree" | wc -l) crates, none of them forbidden"


# A real kube-apiserver v1.20.2 and kubectl, built from Debian's source package on the first
# run (about 5 minutes) and cached in /var/cache/kube-nftpol; later runs only print the path.
step "kube-apiserver v1.20.2 for the API server suites (integration/apiserver/build.sh)"
KNP_APISERVER_BIN=$(integration/apiserver/build.sh | tail -1)
export KNP_APISERVER_BIN
echo "$KNP_APISERVER_BIN"

step "server-side validation of deploy/ and deploy/examples/ (kubectl apply --dry-run=server)"
integration/validate-manifests.sh

for suite in $root_suites; do
  step "root suite: $suite"
  run_tests cargo test --quiet --test "$suite"
done

# The page of `kube-nftpol ui` in Debian's headless Chromium, driven by integration/ui/browser.mjs
# with playwright-core as integration/ui/package-lock.json pins it (about 20 s; its screenshot
# goes to the target directory's ui-browser/ui.png).
step "browser suite: ui_browser (npm ci in integration/ui, then headless Chromium)"
(cd integration/ui && npm ci --no-audit --no-fund --loglevel=error)
for suite in $browser_suites; do run_tests cargo test --quiet --test "$suite" -- --nocapture; done

step "benchmark smoke run (one iteration each; full run: cargo bench --bench compile)"
cargo bench --quiet --bench compile -- --test

step "benchmarks of integration/bench, quick run (full run: sudo integration/bench/run.sh)"
integration/bench/run.sh --quick

# Both cargo fuzz targets (fuzz/), briefly: builds them (nightly, or stable with
# RUSTC_BOOTSTRAP=1), installs cargo-fuzz if missing, fuzzes each from its committed seeds.
# A crash fails the run and leaves its input in fuzz/artifacts/. Longer runs: docs/fuzzing.md.
step "fuzzing: each cargo fuzz target for ${KNP_FUZZ_SECONDS:-30} s (fuzz/run.sh)"
fuzz/run.sh "${KNP_FUZZ_SECONDS:-30}"

# The real-node rig (integration/cluster/): a two-node v1.20.2 cluster of kubelets, containerd
# and kube-proxy in network namespaces, once with ptp (kindnet's model) and once with bridge
# (flannel's), the agent's image built from deploy/Dockerfile and run as its DaemonSet, a fixed
# subset of the upstream e2e.test NetworkPolicy specs, and the README's user scenario; the
# machine's own namespaces are compared before and after each cluster. On ptp also every test
# and probe of the ClusterNetworkPolicy conformance suite (about 2 minutes; bridge too:
# --cnp both) and observe mode's closed loop from zero (observe.sh, about 18 s; bridge too:
# --observe both). Every e2e spec: `sudo integration/cluster/run.sh --e2e full`
# (docs/real-cluster.md).
step "real-node rig: ptp and bridge, the agent's DaemonSet, e2e NetworkPolicy subset, user scenario, ClusterNetworkPolicy conformance and observe mode's closed loop on ptp (integration/cluster/run.sh)"
integration/cluster/run.sh --cni both --e2e subset --cnp ptp --observe ptp

step "all suites passed"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$results"
