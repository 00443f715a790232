#!/usr/bin/env bash
# Observe mode's closed loop from zero on the rig's cluster (up.sh, deploy-agent.sh), as root,
# with the docs' commands as written (docs/hints.md, "Observed flows"):
#   integration/cluster/observe.sh [KUBE-NFTPOL]   # the user's kube-nftpol (default: the
#                                                  # release binary agent-image.sh built)
# 1. No policy anywhere. Namespaces shop and payments annotated `kube-nftpol.io/observe: "true"`
#    (`kubectl annotate ns shop kube-nftpol.io/observe=true`), tools not; a Deployment of agnhost
#    netexec (HTTP on 8080) per workload, on both nodes: shop/web, shop/api, shop/cache,
#    payments/billing, payments/audit, tools/probe, tools/sink. The rig has no cluster DNS, so
#    a stand-in for it: Deployment kube-dns in kube-system, labelled k8s-app=kube-dns, agnhost
#    netexec answering on UDP 53 (its UDP echo protocol, not DNS messages) and TCP 53, behind
#    Service kube-dns at 10.96.0.10. The external address: a listener in the control plane's
#    namespace, 10.78.0.2:8099 (outside the pod network, no node, routed back to the pods).
# 2. The workloads' traffic: pod to pod within and across namespaces, from tools into shop,
#    from shop to tools, within tools, DNS (UDP) to the kube-dns Service, shop/api to the
#    external address, plus shop/web -> shop/cache, the flow the user unticks.
# 3. `kube-nftpol flows` shows them (a user bound to the roles of deploy/flow-reader.yaml: the
#    API server's pod proxy to every agent's /flows); the user takes the unticked flow's ID
#    there, then: `kube-nftpol suggest --cluster --observed --include-external --exclude
#    flow=ID > policies.yaml`, `kubectl apply -f policies.yaml`.
# 4. Every observed flow still connects (and DNS over TCP, the DNS rule's other protocol).
# 5. A flow denied at both ends, payments/audit -> shop/api (both sides isolated now), fixed by
#    one round: `kube-nftpol suggest --cluster > fix.yaml` (from the agents' denied flows) and
#    `kubectl apply -f fix.yaml` add audit's egress and api's ingress; it then connects.
# 6. Every pair of the seven workloads on 8080, DNS over UDP and TCP and the external address
#    from each: exactly the observed flows (and the one fixed in 5) connect; the unticked flow
#    and every flow nobody observed with an end in shop or payments are denied; tools' own
#    traffic is untouched (no policy there). Each verdict on the wire and by `kube-nftpol
#    explain --kubeconfig` (the evaluator, on the live cluster) must agree with that.
# 7. The flows are now logged as allowed by the suggested policies; the namespaces, the
#    stand-in, the reader and the listener are removed.
# Prints each step; fails naming the step and what was wrong.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"
cli=${1:-${KNP_AGENT_BINARY:-${CARGO_TARGET_DIR:-$repo/target}/release/kube-nftpol}}
[ -x "$cli" ] || { echo "usage: $0 [KUBE-NFTPOL]   (no $cli: build it, or agent-image.sh)" >&2; exit 2; }
[ -e "/run/netns/$cp_ns" ] || die "the rig is not up (integration/cluster/up.sh)"

work=$(mktemp -d)
listener_pid=
cleanup() {
  if [ -n "$listener_pid" ]; then kill "$listener_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
step=setup
fail() { die "observe: FAILED at step $step: $*"; }

# The user's kube-nftpol, run where the API server is reachable (the control plane's
# namespace), as the flow reader (below).
knp() { ip netns exec "$cp_ns" "$cli" "$@"; }
dns_ip=10.96.0.10 external_ip=$cp_ip external_port=8099

# Workloads: namespace/name -> node index.
workloads=(shop/web shop/api shop/cache payments/billing payments/audit tools/probe tools/sink)
declare -A node_of=([shop/web]=0 [shop/api]=1 [shop/cache]=0 [payments/billing]=1 [payments/audit]=0 [tools/probe]=1 [tools/sink]=0)
observed_ns() { [[ $1 == shop/* || $1 == payments/* ]]; }
# The traffic: FROM TO PORT (TO a workload, dns (UDP to the kube-dns Service) or external).
traffic=(
  "shop/web shop/api 8080"
  "shop/api payments/billing 8080"
  "payments/audit payments/billing 8080"
  "payments/billing shop/cache 8080"
  "tools/probe shop/web 8080"
  "shop/web tools/sink 8080"
  "tools/probe tools/sink 8080"
  "shop/web dns 53"
  "payments/billing dns 53"
  "shop/api external $external_port"
)
unticked="shop/web shop/cache 8080"
both_ends="payments/audit shop/api 8080"

# --- 1. the cluster: no policy, two observed namespaces, a third one, the DNS stand-in -------
step="1 (namespaces, workloads, the kube-dns stand-in, the external listener, the reader)"
t0=$SECONDS
[ -z "$(kc get networkpolicies -A -o name)" ] || fail "the cluster has NetworkPolicies already (a fresh one is the test)"
{
  for ns in shop payments tools; do
    printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n' "$ns"
  done
  for key in "${workloads[@]}"; do
    cat <<EOF
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ${key#*/}, namespace: ${key%/*}}
spec:
  replicas: 1
  selector: {matchLabels: {app: ${key#*/}}}
  template:
    metadata: {labels: {app: ${key#*/}}}
    spec:
      nodeName: ${node_names[${node_of[$key]}]}
      containers:
      - {name: c, image: $agnhost_image, args: [netexec, --http-port=8080, --udp-port=8081]}
EOF
  done
  cat <<EOF
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      nodeName: ${node_names[1]}
      containers:
      - {name: dns, image: $agnhost_image, args: [netexec, --http-port=53, --udp-port=53]}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $dns_ip
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, protocol: UDP, port: 53, targetPort: 53}
  - {name: dns-tcp, protocol: TCP, port: 53, targetPort: 53}
EOF
} >"$work/workloads.yaml"
kc apply -f "$work/workloads.yaml" >/dev/null || fail "kubectl apply failed"
# The docs' command, as written.
kc annotate ns shop kube-nftpol.io/observe=true >/dev/null
kc annotate ns payments kube-nftpol.io/observe=true >/dev/null
for ns in shop payments tools; do
  kc -n "$ns" wait --for=condition=Available deployment --all --timeout=180s >/dev/null || fail "$ns: Deployments not Available"
done
kc -n kube-system wait --for=condition=Available deployment/kube-dns --timeout=180s >/dev/null || fail "the kube-dns stand-in not Available"
declare -A pod ip
for key in "${workloads[@]}"; do
  read -r "pod[$key]" "ip[$key]" < <(kc -n "${key%/*}" get pods -l "app=${key#*/}" \
    -o jsonpath='{.items[0].metadata.name} {.items[0].status.podIP}{"\n"}')
done
dns_pod=$(kc -n kube-system get pods -l k8s-app=kube-dns -o jsonpath='{.items[0].metadata.name}')

# The external address: an HTTP listener in the control plane's namespace.
ip netns exec "$cp_ns" "$bin/agnhost" netexec --http-port="$external_port" --udp-port="$external_port" >"$work/listener.log" 2>&1 &
listener_pid=$!
external_up() { ip netns exec "$cp_ns" curl -fsS -m 1 "http://$external_ip:$external_port/hostname"; }
wait_for "the external listener on $external_ip:$external_port" 20 external_up

# The flow reader: a user bound to the roles of deploy/flow-reader.yaml (kube-nftpol flows'
# docs), with the token of its ServiceAccount's secret (Kubernetes 1.20 has no `kubectl
# create token`).
kc create serviceaccount flow-reader >/dev/null
kc create clusterrolebinding flow-reader --clusterrole kube-nftpol-flow-reader --serviceaccount default:flow-reader >/dev/null
kc -n kube-system create rolebinding flow-reader --role kube-nftpol-flow-reader --serviceaccount default:flow-reader >/dev/null
kc create clusterrolebinding flow-reader-views-policies --clusterrole kube-nftpol-policy-viewer --serviceaccount default:flow-reader >/dev/null
sa_secret() { kc -n default get sa flow-reader -o jsonpath='{.secrets[0].name}' | grep .; }
wait_for "the flow-reader ServiceAccount's token" 30 sa_secret
token=$(kc -n default get secret "$(sa_secret)" -o jsonpath='{.data.token}' | base64 -d)
cat >"$work/reader.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: knp-rig, cluster: {server: "https://127.0.0.1:$api_port", certificate-authority: "$run/pki/ca.crt"}}]
users: [{name: flow-reader, user: {token: "$token"}}]
contexts: [{name: knp-rig, context: {cluster: knp-rig, user: flow-reader}}]
current-context: knp-rig
EOF
export KUBECONFIG=$work/reader.kubeconfig
say "step 1: shop and payments observed, tools not, no policy; ${#workloads[@]} workloads, the kube-dns stand-in $dns_pod behind $dns_ip, the listener $external_ip:$external_port ($((SECONDS - t0)) s)"

# --- probes --------------------------------------------------------------------------------
# A check is "FROM TO PORT": TO a workload (TCP to its pod IP), dns (UDP through the kube-dns
# Service: FROM's netexec, asked on its /dial (over nc: busybox's wget crashes on that URL),
# sends "hostname" and wants the answer among its "responses": a failure is a 200 too),
# dns-tcp (TCP 53 through the Service) or external (TCP). probe CHECK...: runs them all at once, each source's
# in one kubectl exec, and prints "CHECK ok|fail" per check.
# shellcheck disable=SC2028 # the \r\n are for the pod's printf
probe_command() { # TO PORT
  case $1 in
    dns) echo "printf 'GET /dial?request=hostname&protocol=udp&host=$dns_ip&port=53&tries=1 HTTP/1.0\\r\\n\\r\\n' | nc -w 10 127.0.0.1 8080 | grep -q '\"responses\"'" ;;
    dns-tcp) echo "/agnhost connect --timeout=3s $dns_ip:53" ;;
    external) echo "/agnhost connect --timeout=3s $external_ip:$2" ;;
    *) echo "/agnhost connect --timeout=3s ${ip[$1]}:$2" ;;
  esac
}
probe() {
  local checks=("$@") from i script f to port pids=()
  rm -f "$work"/probe.*
  for from in "${workloads[@]}"; do
    script=""
    for i in "${!checks[@]}"; do
      read -r f to port <<<"${checks[$i]}"
      [ "$f" = "$from" ] || continue
      script+="(if { $(probe_command "$to" "$port"); } >/dev/null 2>&1; then echo '$i ok'; else echo '$i fail'; fi) & "
    done
    [ -n "$script" ] || continue
    kc -n "${from%/*}" exec "${pod[$from]}" -- sh -c "${script}wait" >"$work/probe.${from/\//.}" 2>&1 &
    pids+=($!)
  done
  # Not a bare wait: the external listener is a child too.
  wait "${pids[@]}" || true
  cat "$work"/probe.* | while read -r i result; do
    [[ $i =~ ^[0-9]+$ ]] || continue
    echo "${checks[$i]} $result"
  done
}
# explain_check CHECK OUT: the evaluator's verdict on the live cluster (ok or fail), as the
# reader, into the file OUT.
explain_check() {
  local from to port target out=$2
  read -r from to port <<<"$1"
  case $to in
    dns) target=(--to "kube-system/$dns_pod" --port 53/udp) ;;
    dns-tcp) target=(--to "kube-system/$dns_pod" --port 53) ;;
    external) target=(--to "$external_ip" --port "$port") ;;
    *) target=(--to "${to%/*}/${pod[$to]}" --port "$port") ;;
  esac
  if knp explain --kubeconfig "$KUBECONFIG" --from "${from%/*}/${pod[$from]}" "${target[@]}" >"$out.txt" 2>&1; then
    echo ok >"$out"
  elif grep -q '^DENIED' "$out.txt"; then
    echo fail >"$out"
  else
    echo "error: $(head -3 "$out.txt")" >"$out"
  fi
}
# expect_all RESULT CHECK...: every check's probe gives RESULT; prints the ones that do not.
expect_all() {
  local want=$1
  shift
  probe "$@" | awk -v want="$want" '$4 != want'
}
# eventually_all RESULT SECONDS CHECK...: every check gives RESULT within SECONDS (a policy
# written to the API takes effect once the agents have programmed it).
eventually_all() {
  local want=$1 seconds=$2 start=$SECONDS wrong
  shift 2
  while :; do
    wrong=$(expect_all "$want" "$@")
    [ -z "$wrong" ] && return 0
    [ $((SECONDS - start)) -lt "$seconds" ] || { echo "$wrong"; return 1; }
    sleep 1
  done
}

# --- 2. the traffic ------------------------------------------------------------------------
step="2 (the workloads' traffic)"
t0=$SECONDS
# Available is not listening: a netexec that just started, a Service kube-proxy has not
# programmed yet, on a busy machine. With no policy every flow must connect, within a minute.
wrong=$(eventually_all ok 60 "${traffic[@]}" "$unticked") || true
[ -z "$wrong" ] || fail "with no policy, these did not connect within 60 s:"$'\n'"$wrong"
say "step 2: ${#traffic[@]} flows and the one to untick connect, no policy ($((SECONDS - t0)) s)"

# --- 3. kube-nftpol flows, suggest --cluster --observed, apply -----------------------------
step="3 (kube-nftpol flows; suggest --cluster --observed --exclude; kubectl apply)"
t0=$SECONDS
# Each flow's sides in shop or payments are logged: both within and between them, one side
# between them and tools or kube-dns or the external address, none within tools.
sides=0
for check in "${traffic[@]}" "$unticked"; do
  read -r from to _ <<<"$check"
  observed_ns "$from" && sides=$((sides + 1))
  observed_ns "$to" && sides=$((sides + 1))
done
# rows FILTER: the rows of `kube-nftpol flows --format json` that FILTER (a Python expression
# over the row r) keeps, one line each: id namespace/workload direction peer protocol/port
# action allowed-by.
rows() {
  knp flows --format json | python3 -c '
import json, sys
for r in json.load(sys.stdin)["flows"]:
    w = r["workload"]
    p = r["peer"].get("workload")
    peer = p["namespace"] + "/" + p["name"] if p else r["peer"]["ip"]
    if eval(sys.argv[1]):
        print(r["id"], w["namespace"] + "/" + w["name"], r["direction"], peer,
              "%s/%s" % (r["protocol"], r.get("port")), r["action"],
              (r.get("allowed_by") or {}).get("policy", "-"))
' "$1"
}
all_sides() { [ "$(rows True | wc -l)" -ge "$sides" ]; }
wait_for "the agents' windows holding the $sides observed sides" 20 all_sides
knp flows >"$work/flows.txt" || fail "kube-nftpol flows failed"
sed 's/^/    /' "$work/flows.txt"
rows True >"$work/rows.txt"
[ "$(wc -l <"$work/rows.txt")" -eq "$sides" ] || fail "expected $sides flow rows (the sides in shop and payments), got:"$'\n'"$(cat "$work/rows.txt")"
awk '$2 !~ /^(shop|payments)\// || $6 != "allow" || $7 != "-"' "$work/rows.txt" >"$work/odd.txt"
[ ! -s "$work/odd.txt" ] || fail "rows not of shop or payments, or not allowed unisolated:"$'\n'"$(cat "$work/odd.txt")"
# The unticked flow's ID, from the table's row of shop/web to shop/cache.
unticked_id=$(awk '$2 == "shop/web" && $3 == "egress" && $4 == "shop/cache" && $5 == "tcp/8080" {print $1}' "$work/rows.txt")
[ -n "$unticked_id" ] || fail "no row for shop/web -> shop/cache tcp/8080"
grep -q "^$unticked_id .*shop/cache .*ingress .*shop/web" "$work/rows.txt" || fail "shop/cache's ingress row has another id than $unticked_id"
say "step 3: kube-nftpol flows: $sides rows, every one allowed and not isolated, none of tools; unticked: shop/web -> shop/cache, id $unticked_id"
( cd "$work" && knp suggest --cluster --observed --include-external --exclude "flow=$unticked_id" >policies.yaml ) ||
  fail "kube-nftpol suggest --cluster --observed failed"
grep -q "^#   $unticked_id " "$work/policies.yaml" || fail "policies.yaml does not list the unticked flow as left out"
policies=$(grep -c '^kind: *"\{0,1\}NetworkPolicy' "$work/policies.yaml")
say "step 3: kube-nftpol suggest --cluster --observed --include-external --exclude flow=$unticked_id: $policies NetworkPolicies:"
sed 's/^/    /' "$work/policies.yaml"
kc apply -f "$work/policies.yaml" >/dev/null || fail "kubectl apply -f policies.yaml failed"
say "step 3: kubectl apply -f policies.yaml ($((SECONDS - t0)) s)"

# --- 4. every observed flow still connects --------------------------------------------------
step="4 (the observed flows after the policies)"
t0=$SECONDS
wrong=$(eventually_all ok 20 "${traffic[@]}" "shop/web dns-tcp 53" "payments/billing dns-tcp 53") ||
  fail "these observed flows no longer connect:"$'\n'"$wrong"
say "step 4: the ${#traffic[@]} observed flows still connect, DNS over TCP too ($((SECONDS - t0)) s)"

# --- 5. a flow denied at both ends, fixed in one round ---------------------------------------
step="5 (a flow denied at both ends, one round of suggest --cluster)"
t0=$SECONDS
wrong=$(expect_all fail "$both_ends") || true
[ -z "$wrong" ] || fail "payments/audit -> shop/api connected before any fix"
denied_row() { rows 'r["action"] == "deny"' | grep -q ' payments/audit egress shop/api tcp/8080 deny'; }
wait_for "the denied payments/audit -> shop/api in the agents' windows" 20 denied_row
( cd "$work" && knp suggest --cluster >fix.yaml ) || fail "kube-nftpol suggest --cluster failed"
fixes=$(grep -E '^  (name|namespace): ' "$work/fix.yaml" | paste -d' ' - - | sort | tr -d '"')
[ "$fixes" = "$(printf '%s\n' '  name: allow-api-ingress-hint   namespace: shop' '  name: allow-audit-egress-hint   namespace: payments' | sort)" ] ||
  { cat "$work/fix.yaml" >&2; fail "fix.yaml is not audit's egress and api's ingress (above)"; }
kc apply -f "$work/fix.yaml" >/dev/null || fail "kubectl apply -f fix.yaml failed"
wrong=$(eventually_all ok 20 "$both_ends") || fail "payments/audit -> shop/api still denied after kubectl apply -f fix.yaml"
say "step 5: payments/audit -> shop/api, denied at both ends, connects after one round (allow-audit-egress-hint and allow-api-ingress-hint) ($((SECONDS - t0)) s)"

# --- 6. everything, on the wire and by explain -----------------------------------------------
step="6 (every flow: the wire and explain against the expectation)"
t0=$SECONDS
declare -A allowed=()
for check in "${traffic[@]}" "$both_ends"; do allowed[$check]=1; done
allowed["shop/web dns-tcp 53"]=1 allowed["payments/billing dns-tcp 53"]=1
checks=()
for from in "${workloads[@]}"; do
  for to in "${workloads[@]}"; do [ "$from" = "$to" ] || checks+=("$from $to 8080"); done
  checks+=("$from dns 53" "$from dns-tcp 53" "$from external $external_port")
done
expected() { # CHECK: ok or fail
  local from to
  read -r from to _ <<<"$1"
  if [ -n "${allowed[$1]:-}" ]; then echo ok
  elif observed_ns "$from" || observed_ns "$to"; then echo fail
  else echo ok
  fi
}
probe "${checks[@]}" >"$work/wire.txt"
[ "$(wc -l <"$work/wire.txt")" -eq ${#checks[@]} ] || fail "probed $(wc -l <"$work/wire.txt") of ${#checks[@]} flows"
# explain for each, 8 at a time.
declare -A index_of=()
explains=()
for i in "${!checks[@]}"; do
  index_of[${checks[$i]}]=$i
  explain_check "${checks[$i]}" "$work/explain.$i" &
  explains+=($!)
  if [ ${#explains[@]} -eq 8 ]; then wait "${explains[@]}"; explains=(); fi
done
[ ${#explains[@]} -eq 0 ] || wait "${explains[@]}"
problems=() n_ok=0 n_fail=0
while read -r from to port wire; do
  check="$from $to $port"
  want=$(expected "$check")
  evaluated=$(cat "$work/explain.${index_of[$check]}")
  [ "$wire" = "$want" ] || problems+=("$check: on the wire $wire, expected $want")
  [ "$evaluated" = "$want" ] || problems+=("$check: explain says $evaluated, expected $want")
  if [ "$want" = ok ]; then n_ok=$((n_ok + 1)); else n_fail=$((n_fail + 1)); fi
done <"$work/wire.txt"
[ ${#problems[@]} -eq 0 ] || fail "$(printf '%s\n' "${problems[@]}")"
[ "$(expected "$unticked")" = fail ] || fail "the unticked flow is expected allowed"
[ -z "$(kc -n tools get networkpolicies -o name)" ] || fail "a policy was suggested in tools"
say "step 6: ${#checks[@]} flows, on the wire and by explain: $n_ok connect (the observed ones, DNS over TCP, the fixed one, tools' own and tools to the listener), $n_fail are denied (the unticked one and every unobserved one with an end in shop or payments); no policy in tools ($((SECONDS - t0)) s)"

# --- 7. logged as allowed by the suggestions; cleanup ---------------------------------------
step="7 (flows allowed by the suggested policies; cleanup)"
by_hint=$(rows 'r["action"] == "allow" and (r.get("allowed_by") or {}).get("policy", "").endswith("-hint")' | wc -l)
[ "$by_hint" -gt 0 ] || fail "no flow row names a suggested policy as the allowing one"
kc delete namespace shop payments tools --wait=false >/dev/null
kc -n kube-system delete deployment/kube-dns service/kube-dns --wait=false >/dev/null
kc -n kube-system delete rolebinding flow-reader >/dev/null
kc delete clusterrolebinding flow-reader flow-reader-views-policies >/dev/null
kc delete serviceaccount flow-reader >/dev/null
say "step 7: $by_hint flow rows now allowed by a suggested policy; observe closed loop passed"
