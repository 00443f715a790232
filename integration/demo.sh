#!/usr/bin/env bash
# The main job: kube-nftpol enforcing the example policies on a simulated node, as root.
#   sudo integration/demo.sh
# Installs the Debian packages it needs (nftables, iproute2, python3, a C toolchain) when they
# are missing; Rust (cargo) is the one prerequisite. Builds the agent (release, into
# $CARGO_TARGET_DIR when set), makes a node (a network namespace) with four of the pods of
# deploy/examples/demo-cluster.yaml as network namespaces behind routed veths (as kind's kindnet
# does), runs the real agent in the node with --manifests deploy/examples, then shows an allowed
# and a denied connection, why (explain), the drop log lines, the metrics and the suggested
# policies. Everything it made (namespaces, processes) is removed on exit, also on failure or
# Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

. integration/lib/packages.sh

examples=deploy/examples
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/kube-nftpol
run_id=knp-demo-$$
node=$run_id-node
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { echo "integration/demo.sh needs root (network namespaces, nftables): run it with sudo" >&2; exit 2; }
knp_need_packages "${KNP_BASE_PACKAGES[@]}"
knp_need_cargo

namespaces=()
agent_pid=""
log=$(mktemp)
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  for ns in "${namespaces[@]}"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -f "$log"
}
trap cleanup EXIT INT TERM

say "Building kube-nftpol (release)"
cargo build --release --quiet --bin kube-nftpol

say "A node with four pods (namespace/pod IP from $examples/demo-cluster.yaml)"
ip netns add "$node"; namespaces+=("$node")
ip -n "$node" link set lo up
ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1
# An uplink for traffic leaving the cluster, to a namespace where nothing answers.
ip netns add "$run_id-world"; namespaces+=("$run_id-world")
ip -n "$node" link add uplink0 type veth peer name eth0 netns "$run_id-world"
ip -n "$node" addr add 172.18.0.2/24 dev uplink0
ip -n "$node" link set uplink0 up
ip -n "$run_id-world" addr add 172.18.0.1/24 dev eth0
ip -n "$run_id-world" link set eth0 up
ip -n "$node" route add default via 172.18.0.1
i=0
add_pod() { # NAME IP
  local ns=$run_id-${1//\//.} veth; veth=veth$(printf '%08x' $((0x5eed0000 + i))); i=$((i + 1))
  ip netns add "$ns"; namespaces+=("$ns")
  ip -n "$node" link add "$veth" type veth peer name eth0 netns "$ns"
  ip -n "$node" link set "$veth" up
  ip -n "$node" addr add 10.244.1.1/32 dev "$veth"
  ip -n "$node" route add "$2/32" dev "$veth"
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$2/32" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add 10.244.1.1 dev eth0
  ip -n "$ns" route add default via 10.244.1.1 dev eth0
  printf '  %-40s %-12s behind %s\n' "$1" "$2" "$veth"
}
add_pod shop/frontend-7d4f9-hk2mn 10.244.1.10
add_pod shop/backend-5c8b6-qx2lp 10.244.1.11
add_pod payments/payments-api-0 10.244.1.20
add_pod ingress-nginx/controller 10.244.1.2
# The backend serves on its container port 9090 (a plain socket server: http.server would do a
# reverse DNS lookup before listening).
ip netns exec "$run_id-shop.backend-5c8b6-qx2lp" python3 -c "import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('10.244.1.11', 9090)); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nhello from shop/backend\\n'); c.close()" >/dev/null 2>&1 &
for _ in $(seq 50); do
  ip netns exec "$run_id-shop.backend-5c8b6-qx2lp" ss -Hltn 'sport = :9090' | grep -q . && break
  sleep 0.1
done

# --flows-auth none: with --manifests there is no API server to check a reader's token with,
# and the endpoints listen only inside the node's namespace.
say "Starting the agent in the node: kube-nftpol agent --node-name node-1 --manifests $examples --flows-auth none"
ip netns exec "$node" "$bin" agent --node-name node-1 --manifests "$examples" \
  --metrics-addr 127.0.0.1:9640 --flows-auth none -v >"$log" 2>&1 &
agent_pid=$!
http_get() { ip netns exec "$node" python3 -c "import sys, urllib.request
try: print(urllib.request.urlopen('http://127.0.0.1:9640' + sys.argv[1], timeout=1).read().decode(), end='')
except Exception as e: print(e); sys.exit(1)" "$1"; }
for _ in $(seq 50); do http_get /readyz >/dev/null 2>&1 && break; sleep 0.2; done
printf '/readyz: %s' "$(http_get /readyz)"

connect() { # FROM-POD TO-IP PORT
  ip netns exec "$run_id-${1//\//.}" python3 -c "import socket, sys
s = socket.socket(); s.settimeout(1)
try: s.connect((sys.argv[1], int(sys.argv[2]))); print('connected')
except OSError as e: print('no connection:', e.__class__.__name__)" "$2" "$3"
}
say "Allowed: shop/frontend -> shop/backend:9090 (frontend-to-backend.yaml)"
connect shop/frontend-7d4f9-hk2mn 10.244.1.11 9090
"$bin" explain --manifests "$examples" --from shop/frontend-7d4f9-hk2mn --to shop/backend-5c8b6-qx2lp --port 9090 || true

say "Denied: payments/payments-api-0 -> shop/backend:9090 (default deny on both sides)"
connect payments/payments-api-0 10.244.1.11 9090
"$bin" explain --manifests "$examples" --from payments/payments-api-0 --to shop/backend-5c8b6-qx2lp --port 9090 || true

say "Denied: shop/frontend -> 169.254.169.254:80 (block-cloud-metadata.yaml)"
connect shop/frontend-7d4f9-hk2mn 169.254.169.254 80

sleep 0.5
say "Drop log lines (the agent's stdout: one JSON line per denied flow)"
grep '"action"' "$log" | python3 -c "import json, sys
for line in sys.stdin:
    print(json.dumps(json.loads(line)))" || echo "(none)"

say "What the kernel counted: allow rules that matched and default-deny drops (nft list table inet kube-nftpol)"
ip netns exec "$node" nft list table inet kube-nftpol |
  awk '/^\tchain /{chain=$2} /counter packets [1-9]/{sub(/^[ \t]+/, ""); print chain ": " $0}'

say "Metrics (GET /metrics, excerpt)"
http_get /metrics | grep -E '^kube_nftpol_(dataplane_applies|dataplane_repairs|ruleset|source_loads|flowlog|flows_(allowed|denied))' || true

say "The agent's recent distinct flows (GET /flows; kube-nftpol flows reads every agent's)"
http_get /flows | python3 -c "import json, sys
window = json.load(sys.stdin)
print(f\"node {window['node']}: {window['kept']} flows kept (at most {window['capacity']}, {window['evicted']} evicted)\")
for f in window['flows']:
    peer = f['peer'].get('ip') or f\"{f['peer']['namespace']}/{f['peer']['name']}\"
    print(f\"  {f['action']:5} {f['direction']:7} {f['pod']['namespace']}/{f['pod']['name']} {peer} {f['protocol']}/{f.get('port', '-')} x{f['count']}\")" || true

say "Suggested policies for what was denied (GET /hints?format=yaml; kube-nftpol suggest reads kubectl logs)"
http_get '/hints?format=yaml' || true

say "The agent's own log"
grep -v '"action"' "$log" | tail -5
say "Done: removing the simulated node, its pods and the agent"
