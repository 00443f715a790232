#!/usr/bin/env bash
# Runs the upstream e2e NetworkPolicy specs (the real e2e.test of v1.20.2, built by
# integration/apiserver/build.sh) against the rig's cluster (up.sh, with the agent deployed),
# as root:
#   integration/cluster/e2e.sh --subset      # the fixed subset the README test command runs
#   integration/cluster/e2e.sh --full        # every NetworkPolicy spec of the tree but SCTP's
#   integration/cluster/e2e.sh --dry-run     # list the --full specs, run nothing
#   integration/cluster/e2e.sh --focus REGEX # the specs matching REGEX
# The v1.20.2 tree has 33 NetworkPolicy specs: 29 TCP ones, 3 [Feature:SCTPConnectivity]
# (SCTP sockets, which this kernel lacks: CONFIG_IP_SCTP is off) and one [Feature:SCTP] that
# checks a TCP connection is refused when a policy allows only SCTP; --full skips the first
# three. The newer `Netpol` framework is not in this tree (--dry-run finds no spec).
# Specs run in $KNP_E2E_NODES parallel processes (default 4, 9 for the subset; the specs
# spend most of their time waiting out connection timeouts, 45 s for each "cannot connect"),
# through the ginkgo runner of the same tree, as upstream's hack/ginkgo-e2e.sh does; 1 runs
# e2e.test alone. No retry (--ginkgo.flakeAttempts=1). The run's report goes to
# $KNP_CLUSTER_DIR/e2e/<cni>-<mode>-<time>/ (e2e.log, junit_01.xml, summary.txt); the summary
# (each spec with its result and seconds, the counts, the duration) goes to stdout too.
# Exit status: e2e.test's (non-zero when a spec failed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"

# The subset: default deny, egress to a CIDR with an except, named ports in both directions,
# pod and namespace label updates, a policy's update and its deletion.
subset=(
  "should support a 'default-deny-ingress' policy"
  "should support a 'default-deny-all' policy"
  "should enforce except clause while egress access to server in CIDR block"
  "should allow ingress access on one named port"
  "should allow egress access on one named port"
  "should allow ingress access from updated pod"
  "should allow ingress access from updated namespace"
  "should enforce updated policy"
  "should stop enforcing policies after they are deleted"
)
skip_sctp='\[Feature:SCTPConnectivity\]'

mode='' focus=
case ${1:-} in
  --subset)
    mode=subset
    for name in "${subset[@]}"; do
      name=${name//./\\.}                 # regex: a dot is a dot,
      focus+="${focus:+|}${name//\'/.}"  # and a quote any character (ginkgo quotes differ)
    done
    focus="NetworkPolicy.*($focus)"
    ;;
  --full) mode=full focus='NetworkPolicy' ;;
  --dry-run) mode=dry-run focus='NetworkPolicy' ;;
  --focus) mode=focus focus=${2:?--focus needs a regex} ;;
  *) echo "usage: $0 --subset | --full | --dry-run | --focus REGEX" >&2; exit 2 ;;
esac
[ -x "$bin/e2e.test" ] || die "missing $bin/e2e.test: run integration/apiserver/build.sh first"
[ -e "/run/netns/$cp_ns" ] || die "the rig is not up (integration/cluster/up.sh)"
cni=$(cat "$run/cni")
out=$state/e2e/$cni-$mode-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"

args=(--kubeconfig="$run/admin.kubeconfig" --provider=skeleton --kubectl-path="$bin/kubectl"
  --node-os-distro=debian --report-dir="$out" --ginkgo.noColor --ginkgo.flakeAttempts=1
  --ginkgo.focus="$focus" --ginkgo.skip="$skip_sctp")
[ "$mode" = dry-run ] && args+=(--ginkgo.dryRun)
say "e2e.test ($cni, $mode): --ginkgo.focus='$focus' --ginkgo.skip='$skip_sctp'; report in $out"
# The subset's 9 specs all at once (the run then lasts as long as its longest spec).
default_nodes=4
[ "$mode" = subset ] && default_nodes=9
nodes=${KNP_E2E_NODES:-$default_nodes}
runner=("$bin/e2e.test")
if [ "$mode" != dry-run ] && [ "$nodes" -gt 1 ]; then
  [ -x "$bin/ginkgo" ] || die "missing $bin/ginkgo: run integration/apiserver/build.sh first"
  runner=("$bin/ginkgo" --nodes="$nodes" --noColor "$bin/e2e.test" --)
fi
t0=$SECONDS
rc=0
# In the control plane's namespace, where the API server is (kubeconfig: 127.0.0.1:6443).
(cd "$out" && ip netns exec "$cp_ns" "${runner[@]}" "${args[@]}") >"$out/e2e.log" 2>&1 || rc=$?
seconds=$((SECONDS - t0))

python3 - "$out" "$cni" "$mode" "$seconds" "$rc" "$nodes" <<'EOF' | tee "$out/summary.txt"
import glob, re, sys
import xml.etree.ElementTree as ET
out, cni, mode, seconds, rc, nodes = sys.argv[1:]
rows, counts = [], {"passed": 0, "failed": 0}
for path in sorted(glob.glob(out + "/junit_*.xml")):
    for case in ET.parse(path).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            continue
        name = re.sub(r"^\[sig-network\] NetworkPolicy (\[LinuxOnly\] )?(NetworkPolicy between server and client )?", "", case.get("name"))
        result = "FAILED" if case.find("failure") is not None or case.find("error") is not None else "passed"
        counts[result.lower()] += 1
        rows.append((result, float(case.get("time", 0)), name))
if mode == "dry-run":
    log = open(out + "/e2e.log").read()
    for name in re.findall(r'"msg":"PASSED ([^"]*)"', log):
        print("  " + name)
    print(re.findall(r"Ran \d+ of \d+ Specs", log)[-1] if "Ran " in log else "no spec ran")
    sys.exit(0)
for result, secs, name in rows:
    print(f"  {result:6} {secs:6.1f} s  {name}")
print(f"e2e NetworkPolicy ({cni}, {mode}): {counts['passed']} passed, {counts['failed']} failed, "
      f"{len(rows)} specs in {seconds} s, {nodes} in parallel (exit {rc})")
if not rows:
    print("no spec ran: see " + out + "/e2e.log")
EOF
if [ "$rc" -ne 0 ]; then
  grep -E '^(•? ?Failure|  /|\[Fail\]|.*should not be able to connect|.*should be able to connect)' "$out/e2e.log" | head -40 >&2 || true
  say "e2e.test failed (exit $rc): $out/e2e.log"
fi
exit "$rc"
