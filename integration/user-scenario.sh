# shellcheck shell=bash
# shellcheck disable=SC2154 # scenario_image and scenario_dir are the caller's (below)
# The user's path through the README, as one scenario shared by the real-node rig
# (integration/cluster/run.sh) and the kind quickstart (integration/kind/run.sh). Sourced, not
# run; the caller defines, then calls `user_scenario NODE_A NODE_B`:
#   kubectl ...              kubectl against the cluster, with the agent deployed from deploy/
#   agent_metrics NODE       prints the /metrics of the agent on NODE (from inside the node:
#                            the agent listens on the node's port 9640, hostNetwork)
#   kube-nftpol ...          the kube-nftpol command a user runs on their own machine
#   scenario_image           an agnhost image the nodes have (netexec, pause, connect)
#   scenario_dir             a directory for cluster.yaml and hints.yaml
# The steps, each with the README's command as written:
#   1. namespace demo, default deny of ingress, web (on NODE_A) allowing only app=frontend
#      on 8080; frontend on NODE_B, intruder on NODE_A (so both a routed and, on one node, a
#      local path are policed)
#   2. frontend -> web connects; intruder -> web does not
#   3. the drop line for intruder -> web in `kubectl logs` of the DaemonSet's pods
#   4. /metrics of web's agent counts the denied packets of namespace demo
#   5. `kubectl get ns,pods,netpol -A -o yaml > cluster.yaml`, then `kubectl logs -n
#      kube-system -l app.kubernetes.io/name=kube-nftpol --tail=-1 --max-log-requests=100 |
#      kube-nftpol suggest --manifests cluster.yaml > hints.yaml`, over every agent's log: it
#      suggests a policy for web's ingress from app=intruder
#   6. `kubectl apply -f hints.yaml`; intruder -> web then connects, frontend -> web still does
#   7. the PolicyDenied Event in `kubectl describe pod web -n demo`
# Each step prints what it checked; a failed check names the step and returns non-zero.

# scenario_fail STEP MESSAGE
scenario_fail() {
  printf 'user scenario: FAILED at step %s: %s\n' "$1" "$2" >&2
  return 1
}

# scenario_connect POD: agnhost connect from POD to web's port 8080, 3 s timeout.
scenario_connect() {
  kubectl -n demo exec "$1" -- /agnhost connect --timeout=3s "$scenario_web_ip:8080" >/dev/null 2>&1
}

# scenario_eventually SECONDS CMD...: CMD succeeds within SECONDS (a policy written to the API
# takes effect once the agents have programmed it).
scenario_eventually() {
  local seconds=$1 i
  shift
  for ((i = 0; i < seconds; i++)); do
    if "$@"; then return 0; fi
    sleep 1
  done
  return 1
}
scenario_denied() { ! scenario_connect "$1"; }

user_scenario() {
  local node_a=$1 node_b=$2 step
  printf '\n--- user scenario: web and intruder on %s, frontend on %s\n' "$node_a" "$node_b"

  step="1 (namespace, pods, default deny)"
  kubectl apply -f - <<EOF || { scenario_fail "$step" "kubectl apply failed"; return; }
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: demo, labels: {app: web}}
spec:
  nodeName: $node_a
  containers:
  - {name: web, image: $scenario_image, args: [netexec, --http-port=8080], ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend, namespace: demo, labels: {app: frontend}}
spec:
  nodeName: $node_b
  containers:
  - {name: c, image: $scenario_image, args: [pause]}
---
apiVersion: v1
kind: Pod
metadata: {name: intruder, namespace: demo, labels: {app: intruder}}
spec:
  nodeName: $node_a
  containers:
  - {name: c, image: $scenario_image, args: [pause]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: demo}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-frontend, namespace: demo}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 8080}]
EOF
  kubectl -n demo wait --for=condition=Ready pod --all --timeout=180s || scenario_fail "$step" "pods not Ready" || return
  scenario_web_ip=$(kubectl -n demo get pod web -o jsonpath='{.status.podIP}')
  echo "step 1: namespace demo, web $scenario_web_ip, default-deny-ingress and web-from-frontend applied"

  step="2 (an allowed and a denied connection)"
  scenario_eventually 10 scenario_connect frontend || scenario_fail "$step" "frontend -> web:8080 did not connect" || return
  echo "step 2: frontend -> web:8080 connects (web-from-frontend allows it)"
  scenario_eventually 10 scenario_denied intruder || scenario_fail "$step" "intruder -> web:8080 connected" || return
  echo "step 2: intruder -> web:8080 does not connect (default deny)"

  step="3 (the drop line in kubectl logs)"
  local line
  line=$(scenario_eventually 5 scenario_has_drop_line && scenario_drop_line | head -1) ||
    scenario_fail "$step" "no drop line for demo/web from demo/intruder in the DaemonSet's logs" || return
  echo "step 3: kubectl logs -n kube-system -l app.kubernetes.io/name=kube-nftpol: $line"

  step="4 (/metrics)"
  local metrics
  metrics=$(agent_metrics "$node_a" | grep '^kube_nftpol_flows_denied_total{' | grep 'namespace="demo"' | grep 'direction="ingress"' | grep 'mode="enforce"') ||
    scenario_fail "$step" "no kube_nftpol_flows_denied_total for namespace demo in the /metrics of $node_a's agent" || return
  [ "$(echo "$metrics" | awk '{print int($2)}')" -gt 0 ] || scenario_fail "$step" "denied count 0: $metrics" || return
  echo "step 4: /metrics of $node_a's agent: $metrics"

  step="5 (kube-nftpol suggest over every agent's log)"
  (
    cd "$scenario_dir" || exit 1
    set -o pipefail
    kubectl get ns,pods,netpol -A -o yaml >cluster.yaml &&
      kubectl logs -n kube-system -l app.kubernetes.io/name=kube-nftpol --tail=-1 --max-log-requests=100 |
      kube-nftpol suggest --manifests cluster.yaml >hints.yaml
  ) || scenario_fail "$step" "the suggest pipeline failed" || return
  grep -q 'app: *"\{0,1\}intruder' "$scenario_dir/hints.yaml" && grep -q 'namespace: *"\{0,1\}demo' "$scenario_dir/hints.yaml" ||
    { cat "$scenario_dir/hints.yaml" >&2; scenario_fail "$step" "hints.yaml does not allow app=intruder into demo (above)" || return; }
  echo "step 5: hints.yaml suggests $(grep -c '^kind: *"\{0,1\}NetworkPolicy' "$scenario_dir/hints.yaml") NetworkPolicy (from $(kubectl -n kube-system get pods -l app.kubernetes.io/name=kube-nftpol -o name | wc -l) agents' logs):"
  sed 's/^/    /' "$scenario_dir/hints.yaml"

  step="6 (the suggested policy applied)"
  kubectl apply -f "$scenario_dir/hints.yaml" || scenario_fail "$step" "kubectl apply -f hints.yaml failed" || return
  scenario_eventually 10 scenario_connect intruder || scenario_fail "$step" "intruder -> web:8080 still denied" || return
  scenario_connect frontend || scenario_fail "$step" "frontend -> web:8080 no longer connects" || return
  echo "step 6: after kubectl apply -f hints.yaml, intruder -> web:8080 connects (and frontend -> web still does)"

  step="7 (the PolicyDenied Event)"
  local event
  event=$(kubectl describe pod web -n demo | grep -E 'Warning +PolicyDenied') ||
    scenario_fail "$step" "no PolicyDenied Event in kubectl describe pod web -n demo" || return
  echo "step 7: kubectl describe pod web -n demo: $(echo "$event" | head -1 | tr -s ' ')"

  kubectl delete namespace demo --wait=false >/dev/null
  echo "--- user scenario: every step passed"
}

# The drop lines of the DaemonSet's pods for intruder -> this web (the README's kubectl logs).
scenario_drop_line() {
  kubectl logs -n kube-system -l app.kubernetes.io/name=kube-nftpol --tail=-1 --max-log-requests=100 |
    grep '"action":"deny"' | grep '"direction":"ingress"' |
    grep '"pod":{"namespace":"demo","name":"web"' | grep '"peer":{"namespace":"demo","name":"intruder"' |
    grep '"port":8080' | grep "\"destination\":\"$scenario_web_ip\""
}
scenario_has_drop_line() { scenario_drop_line >/dev/null; }
