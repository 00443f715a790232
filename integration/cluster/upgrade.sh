#!/usr/bin/env bash
# Restarts and then upgrades the agent's DaemonSet under traffic on the rig's cluster (up.sh,
# deploy-agent.sh), as root, and checks that no allowed connection was cut and no denied one
# let through:
#   integration/cluster/upgrade.sh NEW-REFERENCE NEW-ARCHIVE   # agent-image.sh TAG's last line
# Namespace traffic: a server on knp-n1 (HTTP on 8080, a TCP echo on 9000), isolated for
# ingress, allowing app=allowed on both ports; a client `allowed` on knp-n2 and a client
# `denied` on knp-n1. During the whole test:
#   - allowed keeps one TCP connection to the echo port open and writes a line every 0.2 s
#     through it (the echo comes back into a file);
#   - allowed and denied each open a new connection to 8080 every 0.1 s and log the result.
# Meanwhile: `kubectl -n kube-system rollout restart ds/kube-nftpol` and its rollout, then
# deploy-agent.sh with the new image tag (the rolling update an upgrade is). Then: the echo
# connection is still the same and never went quiet for more than 1 s, every new allowed
# connection succeeded and no denied one did.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"
[ $# -eq 2 ] || { echo "usage: $0 NEW-REFERENCE NEW-ARCHIVE" >&2; exit 2; }
[ -e "/run/netns/$cp_ns" ] || die "the rig is not up (integration/cluster/up.sh)"

say "namespace traffic: server on ${node_names[0]}, allowed client on ${node_names[1]}, denied client on ${node_names[0]}"
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: traffic}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: traffic, labels: {app: server}}
spec:
  nodeName: ${node_names[0]}
  containers:
  - {name: http, image: $agnhost_image, args: [netexec, --http-port=8080]}
  - {name: echo, image: $agnhost_image, command: [nc, -ll, -p, "9000", -e, /bin/cat]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-allowed, namespace: traffic}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: allowed}}}]
    ports: [{port: 8080}, {port: 9000}]
EOF
kc -n traffic wait --for=condition=Ready pod/server --timeout=120s >/dev/null
server=$(kc -n traffic get pod server -o jsonpath='{.status.podIP}')
# A client that opens a new connection every 0.1 s and logs each result with its time, and
# (allowed only) keeps one echo connection open.
client() { # NAME NODE LABEL ECHO
  local echo_loop=""
  # Times are the kernel's uptime (/proc/uptime, 10 ms steps), the same clock in every pod
  # and here (busybox's date has no sub-second format).
  [ "$4" = yes ] && echo_loop="(while :; do read u x </proc/uptime; echo \$u; usleep 200000; done) | nc $server 9000 >/tmp/echo & "
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: traffic, labels: {app: $3}}
spec:
  nodeName: $2
  containers:
  - name: c
    image: $agnhost_image
    command: [/bin/sh, -c, '$echo_loop while :; do if /agnhost connect --timeout=1s $server:8080 2>/dev/null; then r=ok; else r=fail; fi; read u x </proc/uptime; echo "\$u \$r" >>/tmp/new; usleep 100000; done']
EOF
}
client allowed "${node_names[1]}" allowed yes
client denied "${node_names[0]}" denied no
kc -n traffic wait --for=condition=Ready pod/allowed pod/denied --timeout=120s >/dev/null
# The clients start before their first line; wait for both logs and the echo.
lines() { kc -n traffic exec "$1" -- sh -c "wc -l <$2 2>/dev/null || echo 0"; }
started() { [ "$(lines allowed /tmp/new)" -gt 5 ] && [ "$(lines denied /tmp/new)" -gt 5 ] && [ "$(lines allowed /tmp/echo)" -gt 3 ]; }
wait_for "traffic flowing" 60 started
# Only what happens from here on counts: the first allowed attempts may precede the agent's
# view of the new pods' addresses (fail closed while they start).
uptime() { cut -d' ' -f1 /proc/uptime; }
t_start=$(uptime)
sleep 3

t0=$SECONDS
say "kubectl -n kube-system rollout restart ds/kube-nftpol"
kc -n kube-system rollout restart ds/kube-nftpol >/dev/null
kc -n kube-system rollout status ds/kube-nftpol --timeout=180s >/dev/null
say "restart rolled out in $((SECONDS - t0)) s"
sleep 3
t0=$SECONDS
say "upgrade to $1 (deploy-agent.sh)"
"$here/deploy-agent.sh" "$1" "$2" >/dev/null
say "upgrade rolled out and checked in $((SECONDS - t0)) s"
sleep 3
t_end=$(uptime)

# The results, between t_start and t_end.
fetch() { kc -n traffic exec "$1" -- cat "$2"; }
count() { # FILE-CONTENT RESULT
  awk -v a="$t_start" -v b="$t_end" -v r="$2" '$1 >= a && $1 <= b && $2 == r { n++ } END { print n + 0 }' <<<"$1"
}
allowed_log=$(fetch allowed /tmp/new)
denied_log=$(fetch denied /tmp/new)
echo_log=$(fetch allowed /tmp/echo)
allowed_ok=$(count "$allowed_log" ok) allowed_fail=$(count "$allowed_log" fail)
denied_ok=$(count "$denied_log" ok) denied_fail=$(count "$denied_log" fail)
# The echo: lines sent every 0.2 s come back; the longest silence between two echoed lines.
echo_stats=$(awk -v a="$t_start" -v b="$t_end" '$1 >= a && $1 <= b { if (p) { g = $1 - p; if (g > m) m = g } p = $1; n++ } END { printf "%d %.2f", n, m }' <<<"$echo_log")
echo_lines=${echo_stats% *} echo_gap=${echo_stats#* }
echo_alive=$(kc -n traffic exec allowed -- sh -c 'pidof nc >/dev/null && echo yes || echo no')
say "over $(awk -v a="$t_start" -v b="$t_end" 'BEGIN { printf "%.0f", b - a }') s: new allowed connections $allowed_ok ok / $allowed_fail failed; new denied connections $denied_ok connected / $denied_fail refused; echo connection alive: $echo_alive, $echo_lines lines echoed, longest silence $echo_gap s"
problems=()
[ "$allowed_fail" -eq 0 ] || problems+=("$allowed_fail allowed connections failed")
[ "$allowed_ok" -gt 100 ] || problems+=("only $allowed_ok allowed connections tried")
[ "$denied_ok" -eq 0 ] || problems+=("$denied_ok denied connections got through")
[ "$denied_fail" -gt 20 ] || problems+=("only $denied_fail denied connections tried")
[ "$echo_alive" = yes ] || problems+=("the echo connection was cut")
awk -v g="$echo_gap" 'BEGIN { exit !(g <= 1.0) }' || problems+=("the echo connection went quiet for $echo_gap s")
kc delete namespace traffic --wait=false >/dev/null
[ ${#problems[@]} -eq 0 ] || die "restart and upgrade under traffic: $(IFS=';'; echo "${problems[*]}")"
say "restart and upgrade under traffic: no allowed connection cut, no denied connection let through"
