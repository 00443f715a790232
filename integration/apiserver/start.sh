#!/usr/bin/env bash
# Starts etcd and kube-apiserver v1.20.2 (built by build.sh) on 127.0.0.1, with their state in
# DIR, and leaves them running:
#   integration/apiserver/start.sh DIR [PORT]    # prints DIR/kubeconfig on its last line
#   kubectl --kubeconfig DIR/kubeconfig get ns
#   integration/apiserver/stop.sh DIR
# The API server listens on PORT (default: a free one), etcd on PORT+1 (clients) and PORT+2
# (peers). Authentication is by static tokens: DIR/token is a system:masters user (allowed
# everything), DIR/agent-token is the agent's service account kube-system/kube-nftpol, which
# may do only what deploy/rbac.yaml grants once that is applied (authorization: RBAC, so
# nothing is allowed that no role grants). KNP_APISERVER_USERS="alice bob" adds plain users
# (in no group but system:authenticated), each with a token DIR/users/NAME.token and a
# kubeconfig DIR/users/NAME.kubeconfig, when DIR's credentials are first made. TLS is
# verified against DIR/ca.crt. Running it again on the same DIR reuses its port, certificates
# and etcd data and starts whichever process is not running (integration/support/apiserver.rs
# restarts the API server that way). Binaries: $KNP_APISERVER_BIN, else build.sh's cache.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 DIR [PORT]" >&2
  exit 2
fi
mkdir -p "$1"
dir=$(cd "$1" && pwd)
bin=${KNP_APISERVER_BIN:-${KNP_APISERVER_CACHE:-/var/cache/kube-nftpol/k8s-v1.20.2}/bin}
say() { printf 'apiserver/start.sh: %s\n' "$*" >&2; }
for tool in "$bin/kube-apiserver" etcd openssl curl; do
  if ! command -v "$tool" >/dev/null; then
    say "$tool not found: run integration/apiserver/build.sh (as root) first"
    exit 1
  fi
done

# Ports: PORT, else the one this DIR used before, else a free one below the ephemeral range
# whose two successors are free too.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=${2:-$(cat "$dir/port" 2>/dev/null || true)}
while [ -z "$port" ]; do
  port=$((20000 + RANDOM % 12000))
  if in_use "$port" || in_use $((port + 1)) || in_use $((port + 2)); then port=""; fi
done
echo "$port" >"$dir/port"
etcd_port=$((port + 1)) peer_port=$((port + 2))

# Credentials, made once per DIR: a CA and a serving certificate it signs (SAN 127.0.0.1 and
# localhost; a separate CA because rustls rejects a CA certificate used as the server's own),
# the service-account signing key, and the token of a system:masters user.
if [ ! -f "$dir/kubeconfig" ]; then
  (
    cd "$dir"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 3650 -subj /CN=kube-nftpol-test-ca 2>/dev/null
    openssl req "${ec[@]}" -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
    printf '%s\n' subjectAltName=IP:127.0.0.1,DNS:localhost basicConstraints=CA:FALSE \
      keyUsage=digitalSignature,keyEncipherment extendedKeyUsage=serverAuth >apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    openssl rand -hex 16 >token
    openssl rand -hex 16 >agent-token
    {
      echo "$(cat token),admin,admin,system:masters"
      echo "$(cat agent-token),system:serviceaccount:kube-system:kube-nftpol,kube-nftpol-sa,\"system:serviceaccounts,system:serviceaccounts:kube-system\""
    } >tokens.csv
    # kubeconfig FILE USER TOKEN
    kubeconfig() {
      cat >"$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kube-nftpol-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $dir/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: kube-nftpol-test
  context:
    cluster: kube-nftpol-test
    user: $2
current-context: kube-nftpol-test
EOF
      mv "$1.tmp" "$1"
    }
    mkdir -p users
    for user in ${KNP_APISERVER_USERS:-}; do
      openssl rand -hex 16 >"users/$user.token"
      echo "$(cat "users/$user.token"),$user,$user" >>tokens.csv
      kubeconfig "users/$user.kubeconfig" "$user" "$(cat "users/$user.token")"
    done
    # Last: its presence says the credentials are complete.
    kubeconfig kubeconfig admin "$(cat token)"
  )
fi

# Is the process of pid file $1 alive and running $2 (not a reused pid, not a zombie)?
running() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  grep -q "$2" "/proc/$pid/cmdline" 2>/dev/null && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$pid/stat"
}
# Starts "$@" in a session of its own (Ctrl-C in the caller's terminal does not reach it), its
# pid in DIR/NAME.pid and its output in DIR/NAME.log.
spawn() {
  local name=$1
  shift
  # shellcheck disable=SC2016 # $$ and $@ are the inner shell's
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$dir/$name.pid" "$@" >>"$dir/$name.log" 2>&1 </dev/null &
  for _ in $(seq 50); do [ -s "$dir/$name.pid" ] && return; sleep 0.1; done
}
# Waits until curl "$2..." succeeds, failing with the log when process $1 dies or after 60 s.
await() {
  local name=$1
  shift
  for _ in $(seq 600); do
    curl -sf --max-time 2 -o /dev/null "$@" && return
    if ! running "$dir/$name.pid" "$name"; then
      say "$name exited; the end of $dir/$name.log:"
      tail -20 "$dir/$name.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  say "$name not ready after 60 s; see $dir/$name.log"
  exit 1
}

if ! running "$dir/etcd.pid" etcd; then
  spawn etcd etcd --name=default --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="default=http://127.0.0.1:$peer_port"
  await etcd "http://127.0.0.1:$etcd_port/health"
fi

if ! running "$dir/kube-apiserver.pid" kube-apiserver; then
  # --insecure-port=0: 1.20 would otherwise also serve plain HTTP on 127.0.0.1:8080, which
  # clashes between two servers. The three service-account flags are required since 1.20; the
  # ServiceAccount admission plugin is off because no controller manager makes the accounts.
  spawn kube-apiserver "$bin/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$port" --insecure-port=0 \
    --etcd-servers="http://127.0.0.1:$etcd_port" --cert-dir="$dir/cert-dir" \
    --tls-cert-file="$dir/apiserver.crt" --tls-private-key-file="$dir/apiserver.key" \
    --token-auth-file="$dir/tokens.csv" --anonymous-auth=false --authorization-mode=RBAC \
    --disable-admission-plugins=ServiceAccount --allow-privileged=true \
    --service-account-key-file="$dir/sa.pub" --service-account-signing-key-file="$dir/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.96.0.0/16
  await kube-apiserver --cacert "$dir/ca.crt" -H "Authorization: Bearer $(cat "$dir/token")" \
    "https://127.0.0.1:$port/readyz"
fi
echo "$dir/kubeconfig"
