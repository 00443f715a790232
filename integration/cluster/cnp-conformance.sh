#!/usr/bin/env bash
# The ClusterNetworkPolicy conformance suite of network-policy-api v0.2.0 (24 tests, 92
# sub-tests, 289 probes) against the rig's real cluster, as root, with the rig up (up.sh, from
# images.sh's current images: the agnhost image carries /udpprobe) and the agent deployed
# (deploy-agent.sh):
#   integration/cluster/cnp-conformance.sh [RUNNER OPTIONS]
# Runner options (integration/cluster_cnp/main.rs): --parallel N (probes at once, default 4),
# --attempts N (per probe until the expected verdict, default 3), --test SUBSTRING, --keep
# (leave the base namespaces), --dry-run (no cluster). It applies the experimental CRD of
# deploy/crd/ in place of the standard one (node peers, named ports), the suite's base
# (namespaces, StatefulSets, host-network pods) adapted to the rig's images, then every test's
# steps through the API with the pods' real addresses, each probe a `kubectl exec` of
# `agnhost connect` (TCP) or `udpprobe connect` (UDP) in the client pod; SCTP probes are
# skipped (no SCTP sockets on this kernel) and counted. Then check-agents.sh. Exits 1 on any
# failed probe. About 2 minutes (docs/real-cluster.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"
# shellcheck source=integration/lib/packages.sh
. "$repo/integration/lib/packages.sh"
[ "$(id -u)" -eq 0 ] || { echo "$0: run it as root" >&2; exit 2; }
[ -e "/run/netns/$cp_ns" ] || die "the rig is not up (integration/cluster/up.sh, deploy-agent.sh)"
knp_need_cargo

say "building the runner (cargo test --test cluster_cnp --no-run)"
(cd "$repo" && cargo test --quiet --locked --test cluster_cnp --no-run) >&2
say "ClusterNetworkPolicy conformance on the rig"
(cd "$repo" && KNP_KUBECTL="$here/kubectl.sh" KNP_AGNHOST_IMAGE="$agnhost_image" \
  cargo test --quiet --locked --test cluster_cnp -- "$@")
"$here/check-agents.sh"
