#!/usr/bin/env bash
# kubectl v1.20.2 as the rig's cluster admin, as root, while the rig is up (up.sh):
#   integration/cluster/kubectl.sh get pods -A -o wide
# It runs in the control plane's network namespace: the API server is reachable from there
# only (nothing of the cluster listens in the machine's own namespace).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"
[ -e "/run/netns/$cp_ns" ] || die "the rig is not up (no network namespace $cp_ns): integration/cluster/up.sh"
kc "$@"
