# What the scripts a user runs need from the machine, in one place. Sourced, not run:
#   . "$(dirname "$0")/lib/packages.sh"          (from integration/; adjust the path elsewhere)
#   knp_need_packages nft:nftables ip:iproute2   # COMMAND:DEBIAN-PACKAGE pairs
#   knp_need_cargo
#   knp_need_files [--no-install-recommends] /usr/bin/etcd etcd-server   # FILE DEBIAN-PACKAGE pairs
#
# knp_need_packages installs, with apt-get, the package of every command that is not on PATH
# (Debian 12; it needs root for that, and says which packages to install otherwise).
# knp_need_cargo finds Rust, the one prerequisite the scripts do not install: cargo on PATH,
# or, under sudo, the invoking user's rustup installation (sudo's secure_path leaves
# ~/.cargo/bin out of PATH). Both print what is missing and return 2, which ends a script
# that runs with `set -e`.

# The Debian packages behind the commands every root script of the repository uses
# (conntrack: the programming benchmark fills a node's connection tracking table with it).
KNP_BASE_PACKAGES=(nft:nftables ip:iproute2 ss:iproute2 sysctl:procps cc:build-essential
  python3:python3 conntrack:conntrack)

# What the test command (integration/test-all.sh) needs besides: ping for the root suites,
# Graphviz's dot to check `kube-nftpol graph`'s DOT (tests/graph.rs), and Chromium, Node.js and
# npm for the page of `kube-nftpol ui` in a headless browser (integration/ui_browser.rs).
KNP_TEST_PACKAGES=(ping:iputils-ping dot:graphviz chromium:chromium node:nodejs npm:npm)

knp_need_packages() {
  local pair need=()
  for pair in "$@"; do
    if ! command -v "${pair%%:*}" >/dev/null 2>&1 && [[ " ${need[*]} " != *" ${pair#*:} "* ]]; then
      need+=("${pair#*:}")
    fi
  done
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${need[*]} (run as root to install them, or: sudo apt-get install ${need[*]})" >&2
    return 2
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing packages ${need[*]}, and no apt-get to install them (Debian 12 is what the scripts know)" >&2
    return 2
  fi
  echo "==> installing Debian packages: ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || {
      echo "${pair%%:*} still not found after installing ${pair#*:}" >&2
      return 2
    }
  done
}

# Installs the package of every "FILE PACKAGE" pair whose file is missing (for what is not a
# command on PATH: a library, a Go source tree, a CNI plugin), as root. The packages that enable
# a system service in the machine's own namespaces (etcd, containerd) have it disabled at once:
# the scripts run their own, on ports and in namespaces of their own.
knp_need_files() {
  local apt_options=() need=() package
  if [ "${1:-}" = --no-install-recommends ]; then
    apt_options+=("$1")
    shift
  fi
  while [ $# -gt 0 ]; do
    [ -e "$1" ] || need+=("$2")
    shift 2
  done
  [ ${#need[@]} -eq 0 ] && return 0
  echo "==> installing Debian packages: ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_options[@]}" "${need[@]}" >&2
  for package in containerd etcd-server; do
    if [[ " ${need[*]} " == *" $package "* ]]; then
      systemctl disable --now "${package%-server}.service" >/dev/null 2>&1 || true
    fi
  done
}

knp_need_cargo() {
  command -v cargo >/dev/null 2>&1 && return 0
  local home=""
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
  fi
  if [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ]; then
    # rustup's cargo reads its toolchains from RUSTUP_HOME; crates are downloaded to root's
    # own CARGO_HOME, so nothing in the user's ~/.cargo is written as root.
    export PATH="$home/.cargo/bin:$PATH"
    [ -d "$home/.rustup" ] && export RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}"
    echo "==> using $SUDO_USER's Rust: $(cargo --version)" >&2
    return 0
  fi
  echo "cargo not found: install Rust first (https://rustup.rs; Rust 1.89 or later), then run this again" >&2
  return 2
}
