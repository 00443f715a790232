#!/usr/bin/env bash
# The main job, offline: builds kube-nftpol, compiles the example cluster in deploy/examples/ for
# node-1, and explains an allowed and a denied connection. Changes nothing on this machine.
#   integration/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

examples=deploy/examples
bin=target/release/kube-nftpol
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 2; }
say "Building kube-nftpol (release)"
cargo build --release --quiet

say "The ruleset node-1 would get: $bin compile --manifests $examples --node node-1"
ruleset=$("$bin" compile --manifests "$examples" --node node-1)
printf '%s\n' "$ruleset" | sed -n '/chain in_shop_backend-5c8b6-qx2lp {/,/^\t}/p'
printf '(%s lines; chains: %s)\n' "$(printf '%s\n' "$ruleset" | wc -l)" \
  "$(printf '%s\n' "$ruleset" | awk '/^\tchain /{print $2}' | paste -sd' ')"

explain() {
  say "$bin explain --manifests $examples $*"
  set +e
  "$bin" explain --manifests "$examples" "$@"
  echo "(exit code $?)"
  set -e
}
explain --from shop/frontend-7d4f9-hk2mn --to shop/backend-5c8b6-qx2lp --port 9090
explain --from payments/payments-api-0 --to shop/backend-5c8b6-qx2lp --port 9090
explain --from shop/frontend-7d4f9-hk2mn --to 169.254.169.254 --port 80

say "Done. The same commands work on any manifest directory, e.g. the output of: kubectl get ns,pods,networkpolicies -A -o yaml"
