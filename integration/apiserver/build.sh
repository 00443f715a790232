#!/usr/bin/env bash
# Builds Kubernetes v1.20.2 from Debian bookworm's `kubernetes` source package, one source tree
# and one build for everything the tests run (../shared/NOTES.md, sections 5 and 8). Run as root:
#   bin=$(sudo integration/apiserver/build.sh | tail -1)
# Into $KNP_APISERVER_CACHE/bin (default /var/cache/kube-nftpol/k8s-v1.20.2/bin), outside the
# repository:
#   kube-apiserver, kubectl          the API server suites (integration/support/apiserver.rs)
#   kubelet, kube-proxy, kube-scheduler, kube-controller-manager
#                                    the real-node rig (integration/cluster/)
#   agnhost                          the upstream e2e test image's binary (test/images/agnhost)
#   e2e.test, ginkgo                 the upstream e2e suites (`go test -c k8s.io/kubernetes/test/e2e`)
#                                    and the runner that runs their specs in parallel
#   pause                            the pod sandbox binary (build/pause/linux/pause.c, gcc -static)
# When they are all there and run, this only prints that directory. A cold build (packages,
# 34 MB of source, code generation, go build, go test -c) takes about 10 minutes on 2 cores and
# 1.5 GB of memory; its work directory (about 3 GB at its peak) is removed afterwards. Progress
# goes to stderr; stdout is only the bin directory.
set -euo pipefail

version=1.20.2
cache=${KNP_APISERVER_CACHE:-/var/cache/kube-nftpol/k8s-v$version}
bin=$cache/bin
go_root=/usr/lib/go-1.19 # Debian bookworm's Go
reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2

start=$SECONDS
say() { printf 'apiserver/build.sh: [%d s] %s\n' $((SECONDS - start)) "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  say "run it as root (it installs Debian packages and writes $cache)"
  exit 2
fi

# shellcheck source=integration/lib/packages.sh
. "$(dirname "$0")/../lib/packages.sh"
install_missing() { knp_need_files "$@"; }

# What running the server needs (start.sh, integration/support/apiserver.rs).
install_missing /usr/bin/etcd etcd-server /usr/bin/openssl openssl /usr/bin/curl curl

# Every binary the cache holds, and the Go package of each built by `go build` (e2e.test is
# `go test -c`, pause is C). A cache that lacks some (made by an older build.sh) gets only
# those, from the same source tree.
binaries=(kube-apiserver kubectl kubelet kube-proxy kube-scheduler kube-controller-manager agnhost
  ginkgo e2e.test pause)
declare -A package=([kube-apiserver]=cmd/kube-apiserver [kubectl]=cmd/kubectl [kubelet]=cmd/kubelet
  [kube-proxy]=cmd/kube-proxy [kube-scheduler]=cmd/kube-scheduler
  [kube-controller-manager]=cmd/kube-controller-manager [agnhost]=test/images/agnhost
  [ginkgo]=vendor/github.com/onsi/ginkgo/ginkgo)
missing() {
  local b
  for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || echo "$b"; done
}
built() {
  local b
  for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || return 1; done
  "$bin/kube-apiserver" --version >/dev/null 2>&1 && "$bin/kubectl" version --client >/dev/null 2>&1 &&
    "$bin/kubelet" --version >/dev/null 2>&1
}
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # one build at a time; a second caller waits, then finds the binaries
if built; then
  echo "$bin"
  exit 0
fi

mapfile -t need < <(missing)
[ ${#need[@]} -gt 0 ] || need=("${binaries[@]}") # all there but one does not run: all again
say "building ${need[*]} v$version into $bin"
install_missing "$go_root/bin/go" golang-1.19-go "$reflect2/reflect2.go" golang-github-modern-go-reflect2-dev \
  /usr/bin/dpkg-source dpkg-dev /usr/bin/xz xz-utils /usr/bin/gcc gcc \
  /usr/lib/x86_64-linux-gnu/libc.a libc6-dev

work=$cache/work
rm -rf "$work"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/apt/lists/partial" "$work/apt/parts" "$work/dl"

# deb-src is not enabled by default. A private apt configuration (its own sources list and
# lists directory) adds one for the mirror the machine already uses, without touching /etc/apt.
# `apt-get indextargets` reads both /etc/apt/sources.list (one-line format) and
# /etc/apt/sources.list.d/*.list and *.sources (deb822).
# shellcheck disable=SC2016 # $(...) is apt's template syntax
uri=$(apt-get indextargets --format '$(TARGET_OF) $(RELEASE) $(CODENAME) $(REPO_URI)' |
  awk '$1 == "deb" && ($2 == "bookworm" || $3 == "bookworm") && $4 ~ /^https?:/ { print $4; exit }')
if [ -z "$uri" ]; then
  say "no 'deb' entry for bookworm in /etc/apt/sources.list or /etc/apt/sources.list.d/; cannot derive deb-src"
  exit 1
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
opts=""
[ -f "$keyring" ] && opts="[signed-by=$keyring] "
echo "deb-src $opts$uri bookworm main" >"$work/apt/sources.list"
say "fetching the kubernetes source package: $(cat "$work/apt/sources.list")"
apt=(apt-get -q -o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=$work/apt/parts"
  -o "Dir::State::Lists=$work/apt/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
"${apt[@]}" update >&2
chown _apt "$work/dl" 2>/dev/null || true # apt downloads as _apt when it can
(cd "$work/dl" && "${apt[@]}" source --download-only kubernetes/bookworm >&2)
dsc=$(echo "$work"/dl/kubernetes_*.dsc)
case $dsc in
  *really$version-* | *_$version-*) ;;
  *)
    say "$dsc is not v$version"
    exit 1
    ;;
esac
# apt checked the files against the signed Sources index; dpkg-source cannot check the .dsc's
# own signature without debian-keyring, and says so.
dpkg-source -x "$dsc" "$work/src" >&2
rm -rf "$work/dl" "$work/apt"

# GOPATH mode, with the tree at $GOPATH/src/k8s.io/kubernetes; no network, no cgo.
export GOPATH=$work/gopath GOCACHE=$work/gocache GO111MODULE=off GOPROXY=off CGO_ENABLED=0 GOFLAGS=
export PATH=$go_root/bin:$PATH
mkdir -p "$GOPATH/src/k8s.io"
ln -s "$work/src" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"

# The vendored reflect2 1.0.1 crashes on the first Pod create when built with Go >= 1.18.
say "replacing vendored github.com/modern-go/reflect2 with Debian's 1.0.2"
rm -rf vendor/github.com/modern-go/reflect2
cp -rL "$reflect2" vendor/github.com/modern-go/reflect2

# The tarball lacks pkg/generated/openapi/zz_generated.openapi.go. Generate it as
# Makefile.generated_files does: every package with a `+k8s:openapi-gen=` tag, staging
# packages named by their vendor/ path, without code-generator and sample-apiserver.
say "generating pkg/generated/openapi/zz_generated.openapi.go"
go build -o "$work/openapi-gen" k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen
inputs=$(find -H . \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune -o -type f -name '*.go' -print0 |
  xargs -0 grep -l '^// *+k8s:' | xargs grep -l '+k8s:openapi-gen=' | xargs -n1 dirname |
  sed 's|^\./staging/src/|./vendor/|; s|^\./|k8s.io/kubernetes/|' |
  grep -v -e /vendor/k8s.io/code-generator/ -e /vendor/k8s.io/sample-apiserver/ | LC_ALL=C sort -u | paste -sd,)
"$work/openapi-gen" --logtostderr -i "$inputs" -p k8s.io/kubernetes/pkg/generated/openapi \
  -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
  -r "$work/openapi-violations.report"
grep -q '"k8s.io/api/core/v1.Pod":' pkg/generated/openapi/zz_generated.openapi.go # named as at run time

# Version stamps as hack/lib/version.sh sets them, so `--version` says v1.20.2.
ldflags="-s -w"
for kv in gitVersion=v$version gitMajor=1 gitMinor=20 gitTreeState=clean buildDate="$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
  for pkg in component-base/version client-go/pkg/version; do
    ldflags+=" -X k8s.io/kubernetes/vendor/k8s.io/$pkg.$kv"
  done
done
mkdir -p "$work/out"
commands=()
for b in "${need[@]}"; do [ -z "${package[$b]:-}" ] || commands+=("k8s.io/kubernetes/${package[$b]}"); done
if [ ${#commands[@]} -gt 0 ]; then
  say "go build ${commands[*]#k8s.io/kubernetes/} (about 7 minutes on 2 cores for all of them)"
  go build -ldflags "$ldflags" -o "$work/out/" "${commands[@]}"
fi

if [[ " ${need[*]} " == *" e2e.test "* ]]; then
  # The tarball lacks test/e2e/generated/bindata.go (the manifests and fixtures e2e.test
  # carries). Generate it with the vendored go-bindata as hack/generate-bindata.sh does.
  say "generating test/e2e/generated/bindata.go"
  go build -o "$work/go-bindata" k8s.io/kubernetes/vendor/github.com/go-bindata/go-bindata/go-bindata
  "$work/go-bindata" -nometadata -o test/e2e/generated/bindata.go -pkg generated \
    -ignore .jpg -ignore .png -ignore .md -ignore 'BUILD(\.bazel)?' \
    test/conformance/testdata/... test/e2e/testing-manifests/... test/e2e_node/testing-manifests/... \
    test/images/... test/fixtures/...
  gofmt -s -w test/e2e/generated/bindata.go
  say "go test -c k8s.io/kubernetes/test/e2e (about 3 minutes more)"
  go test -c -ldflags "$ldflags" -o "$work/out/e2e.test" k8s.io/kubernetes/test/e2e
fi

if [[ " ${need[*]} " == *" pause "* ]]; then
  # The pod sandbox: Kubernetes' own pause, static, as build/pause/Makefile builds it.
  say "gcc -static build/pause/linux/pause.c"
  gcc -Os -Wall -Werror -static -DVERSION=v3.4.1-knp -o "$work/out/pause" build/pause/linux/pause.c
  strip "$work/out/pause"
fi

mkdir -p "$bin"
for b in "${need[@]}"; do mv "$work/out/$b" "$bin/"; done
built || {
  say "the built binaries do not run"
  exit 1
}
say "done: $("$bin/kube-apiserver" --version), kubectl $("$bin/kubectl" version --client --short), $(cd "$bin" && echo "${binaries[*]}")"
echo "$bin"
