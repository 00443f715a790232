#!/usr/bin/env bash
# Builds the agent's image from deploy/Dockerfile with no container registry, as root:
#   integration/cluster/agent-image.sh [TAG]      # default tag: the crate's version
# Prints, as its last line, the image reference and the `docker save` archive it wrote:
#   knp.local/kube-nftpol:TAG /var/cache/kube-nftpol/images/agent/kube-nftpol-TAG.tar
# How (deploy/Dockerfile's build arguments):
#   BASE_IMAGE   a Debian bookworm root made by Debian's debootstrap (minbase, with nftables
#                and netbase (deploy/Dockerfile says why), documentation and package lists
#                removed as in debian:bookworm-slim), cached
#                in /var/cache/kube-nftpol/images/base/; debootstrap fetches from the machine's
#                apt mirror the first time (about a minute)
#   BINARY_FROM  context: the release binary built here on the host by cargo
#                (`cargo build --release --locked --bin kube-nftpol`, in $CARGO_TARGET_DIR or
#                target/; $KNP_AGENT_BINARY names another), stripped into the build context
# Then `buildah bud` with no network at all (--network none), the same Dockerfile a Docker
# user builds with `docker build -f deploy/Dockerfile -t kube-nftpol:0.1.0 .`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"
[ "$(id -u)" -eq 0 ] || { echo "$0: run it as root (debootstrap, buildah)" >&2; exit 2; }

crate_version=$(awk -F'"' '/^version *=/ {print $2; exit}' "$repo/Cargo.toml")
tag=${1:-$crate_version}
reference=$agent_image_name:$tag
archive=$images/agent/kube-nftpol-$tag.tar
base_rootfs=$images/base/bookworm-nftables-netbase.tar

install_missing /usr/bin/buildah buildah /usr/sbin/debootstrap debootstrap /usr/bin/strip binutils
command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"

# The binary first, in the caller's mount namespace (cargo's caches are the caller's).
binary=${KNP_AGENT_BINARY:-}
if [ -z "$binary" ]; then
  say "cargo build --release --locked --bin kube-nftpol"
  (cd "$repo" && cargo build --release --locked --quiet --bin kube-nftpol) >&2
  binary=${CARGO_TARGET_DIR:-$repo/target}/release/kube-nftpol
fi
[ -x "$binary" ] || die "no agent binary at $binary"
export KNP_AGENT_BINARY=$binary

in_private_mounts "$@"
work=$(mktemp -d "$cache_root/agent-image-work.XXXXXX")
trap 'buildah_done "$work"' EXIT
mkdir -p "$images/agent" "$images/base"
buildah_setup "$work"

if [ ! -s "$base_rootfs" ]; then
  # The machine's bookworm mirror, as integration/apiserver/build.sh finds it.
  # shellcheck disable=SC2016 # $(...) is apt's template syntax
  mirror=$(apt-get indextargets --format '$(TARGET_OF) $(RELEASE) $(CODENAME) $(REPO_URI)' |
    awk '$1 == "deb" && ($2 == "bookworm" || $3 == "bookworm") && $4 ~ /^https?:/ && $4 !~ /security/ { print $4; exit }')
  [ -n "$mirror" ] || die "no 'deb' entry for bookworm in the apt sources: cannot run debootstrap"
  say "debootstrap --variant=minbase --include=nftables,netbase bookworm from $mirror"
  root=$work/rootfs
  debootstrap --variant=minbase --include=nftables,netbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  unmount_under "$root"
  # What debian:bookworm-slim leaves out: documentation, manuals, translations, apt's lists
  # and caches, logs.
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
    "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old "$root"/var/log/* \
    "$root"/var/cache/ldconfig/aux-cache
  tar --numeric-owner -C "$root" -cf "$base_rootfs.partial" .
  mv "$base_rootfs.partial" "$base_rootfs"
  rm -rf "$root"
fi
say "base image from $base_rootfs ($(du -h "$base_rootfs" | cut -f1))"
mkdir -p "$work/base"
ln "$base_rootfs" "$work/base/rootfs.tar" 2>/dev/null || cp "$base_rootfs" "$work/base/rootfs.tar"
printf 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' >"$work/base/Containerfile"
buildah_in "$work" bud --quiet --network none -f "$work/base/Containerfile" -t knp.local/debian:bookworm-nftables-netbase "$work/base" >/dev/null

say "buildah bud -f deploy/Dockerfile --build-arg BASE_IMAGE=knp.local/debian:bookworm-nftables-netbase --build-arg BINARY_FROM=context -t $reference"
mkdir -p "$work/context"
strip -o "$work/context/kube-nftpol" "$binary"
buildah_in "$work" bud --quiet --network none -f "$repo/deploy/Dockerfile" \
  --build-arg BASE_IMAGE=knp.local/debian:bookworm-nftables-netbase --build-arg BINARY_FROM=context \
  -t "$reference" "$work/context" >/dev/null
size=$(buildah_in "$work" images --format '{{.Size}}' "$reference")
rm -f "$archive"
buildah_in "$work" push --quiet "$reference" "docker-archive:$archive:$reference"
say "$reference: $size (binary $(du -h "$work/context/kube-nftpol" | cut -f1) stripped, $(du -h "$binary" | cut -f1) before); archive $archive ($(du -h "$archive" | cut -f1))"
echo "$reference $archive"
