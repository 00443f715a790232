#!/usr/bin/env bash
# Makes the images the e2e NetworkPolicy specs and the rig run, with no registry, as root:
#   integration/cluster/images.sh
# Each is a FROM-scratch build by Debian's buildah, written as a `docker save` archive to
# /var/cache/kube-nftpol/images/test/ (node.sh imports them into each node's containerd):
#   pause.tar    k8s.gcr.io/pause:3.2                       build.sh's pause (pause.c, static)
#   agnhost.tar  k8s.gcr.io/e2e-test-images/agnhost:2.21    build.sh's agnhost (the v1.20.2
#                tree's, 2.25 inside) with busybox-static: the 1.20 NetworkPolicy clients run
#                `/bin/sh -c 'for i in $(seq 1 5); do /agnhost connect ...'`; and /udpprobe
#                (udpprobe.c, gcc -static): the UDP probes and the host-network UDP servers of
#                the ClusterNetworkPolicy conformance runner (cnp-conformance.sh), which
#                agnhost 2.25 cannot do (its connect has no UDP)
#   busybox.tar  docker.io/library/busybox:1.29             Debian's busybox-static
#   connrate.tar knp.local/connrate:1                       connrate.c (gcc -static): the
#                connection-rate load of measure.sh
# The names are those `e2e.test --list-images` asks for; specs and pods use IfNotPresent, so
# the kubelet never pulls. Cached: when all three exist and are newer than the binaries, it
# only says so. About 10 s.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=integration/cluster/lib.sh
. "$here/lib.sh"
[ "$(id -u)" -eq 0 ] || { echo "$0: run it as root (buildah's storage, chroot)" >&2; exit 2; }

out=$images/test
fresh() {
  [ -s "$out/$1.tar" ] && [ "$out/$1.tar" -nt "$bin/agnhost" ] && [ "$out/$1.tar" -nt "$bin/pause" ] &&
    [ "$out/$1.tar" -nt "$here/connrate.c" ] && [ "$out/$1.tar" -nt "$here/udpprobe.c" ]
}
if fresh pause && fresh agnhost && fresh busybox && fresh connrate; then
  say "test images cached in $out"
  exit 0
fi
for binary in agnhost pause; do
  [ -x "$bin/$binary" ] || die "missing $bin/$binary: run integration/apiserver/build.sh first"
done
install_missing /usr/bin/buildah buildah /bin/busybox busybox-static /usr/bin/gcc gcc \
  /usr/lib/x86_64-linux-gnu/libc.a libc6-dev
in_private_mounts "$@"

work=$(mktemp -d "$cache_root/images-work.XXXXXX")
trap 'buildah_done "$work"' EXIT
mkdir -p "$out"
buildah_setup "$work"

# rootfs DIR [--busybox] [SRC:DST ...]: a minimal root (passwd, group, tmp), files, and with
# --busybox Debian's static busybox with a link per applet in /bin.
rootfs() {
  local root=$1 file
  shift
  mkdir -p "$root/etc" "$root/tmp" "$root/bin"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  for file; do
    if [ "$file" = --busybox ]; then
      cp /bin/busybox "$root/bin/busybox"
      chroot "$root" /bin/busybox --install -s /bin
    else
      install -D -m 0755 "${file%%:*}" "$root${file#*:}"
    fi
  done
}

# image NAME REFERENCE CONTAINERFILE-TAIL ROOTFS-ARGS...: builds it and saves the archive.
image() {
  local name=$1 reference=$2 tail=$3
  shift 3
  local context=$work/$name
  rootfs "$context/rootfs" "$@"
  printf 'FROM scratch\nCOPY rootfs/ /\n%s\n' "$tail" >"$context/Containerfile"
  buildah_in "$work" bud --quiet --network none -f "$context/Containerfile" -t "$reference" "$context" >/dev/null
  rm -f "$out/$name.tar"
  buildah_in "$work" push --quiet "$reference" "docker-archive:$out/$name.tar:$reference"
  say "$reference: $out/$name.tar ($(du -h "$out/$name.tar" | cut -f1))"
}

image pause "$pause_image" 'ENTRYPOINT ["/pause"]' "$bin/pause:/pause"
gcc -O2 -Wall -Werror -static -o "$work/udpprobe-bin" "$here/udpprobe.c"
strip "$work/udpprobe-bin"
image agnhost "$agnhost_image" $'ENTRYPOINT ["/agnhost"]\nCMD ["pause"]' --busybox "$bin/agnhost:/agnhost" \
  "$work/udpprobe-bin:/udpprobe"
image busybox "$busybox_image" 'CMD ["sh"]' --busybox
gcc -O2 -Wall -Werror -static -o "$work/connrate-bin" "$here/connrate.c"
strip "$work/connrate-bin"
image connrate "$connrate_image" 'ENTRYPOINT ["/connrate"]' "$work/connrate-bin:/connrate"
