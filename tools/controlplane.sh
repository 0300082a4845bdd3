#!/usr/bin/env bash
# Provide kube-apiserver, etcd, kubectl and helm at the versions Foundry pins,
# plus the node binaries (kubelet, kube-controller-manager, kube-scheduler,
# kube-proxy) that the real-node test bed runs.
#
# Order of preference, per binary:
#   1. $KUBEBUILDER_ASSETS/<bin> at the pinned version
#   2. <bin> on PATH at the pinned version
#   3. the project cache (~/.cache/foundry/k8s/v<k8s>/) filled by an earlier build
#   4. a build from Go modules (no release downloads needed: only the Go module proxy)
#
# Prints progress on stderr and, on success, the directory holding all four
# binaries as the last line on stdout (usable as KUBEBUILDER_ASSETS).
#
#   tools/controlplane.sh            ensure the binaries, print the directory
#   tools/controlplane.sh --check    exit 0 if all are present without building
#   tools/controlplane.sh --versions print the pinned versions
set -euo pipefail

K8S_VERSION="${FOUNDRY_K8S_VERSION:-1.35.4}"
# The etcd release that Kubernetes ${K8S_VERSION} names in build/dependencies.yaml.
ETCD_VERSION="${FOUNDRY_ETCD_VERSION:-3.6.6}"
HELM_VERSION="${FOUNDRY_HELM_VERSION:-3.22.0}"

K8S_MINOR=${K8S_VERSION#*.}; K8S_MINOR=${K8S_MINOR%%.*}
ALL_BINS="kube-apiserver etcd kubectl helm kubelet kube-controller-manager kube-scheduler kube-proxy"
NODE_CMDS="kubelet kube-controller-manager kube-scheduler kube-proxy"

CACHE_ROOT="${FOUNDRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/foundry}"
DEST="$CACHE_ROOT/k8s/v$K8S_VERSION"
WORK="$CACHE_ROOT/build"

say() { printf '[controlplane] %s\n' "$*" >&2; }
die() { printf '[controlplane] error: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  --versions) echo "kubernetes v$K8S_VERSION"; echo "etcd v$ETCD_VERSION"; echo "helm v$HELM_VERSION"; exit 0 ;;
  -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
CHECK_ONLY=0; [ "${1:-}" = "--check" ] && CHECK_ONLY=1

# version_ok BIN PATH: does the binary at PATH report the pinned version?
version_ok() {
  local bin=$1 path=$2 out
  [ -x "$path" ] || return 1
  case "$bin" in
    kube-apiserver|kubelet|kube-controller-manager|kube-scheduler|kube-proxy)
      out=$("$path" --version 2>/dev/null) || return 1; [[ "$out" == "Kubernetes v$K8S_VERSION"* ]] ;;
    kubectl) out=$("$path" version --client -o json 2>/dev/null) || return 1; [[ "$out" == *"\"gitVersion\": \"v$K8S_VERSION\""* ]] ;;
    etcd) out=$("$path" --version 2>/dev/null) || return 1; [[ "$out" == *"etcd Version: $ETCD_VERSION"* ]] ;;
    # A helm built without the Kubernetes stamp believes every cluster is v1.20.
    helm) out=$("$path" version --short 2>/dev/null) || return 1; [[ "$out" == "v$HELM_VERSION"* ]] || return 1
          out=$("$path" template x "$HELM_PROBE_CHART" 2>/dev/null) || return 1; [[ "$out" == *"minor: \"${K8S_MINOR}\""* ]] ;;
  esac
}

# find_existing BIN: echo a usable path for BIN from KUBEBUILDER_ASSETS, PATH or the cache.
find_existing() {
  local bin=$1 cand
  for cand in ${KUBEBUILDER_ASSETS:+"$KUBEBUILDER_ASSETS/$bin"} "$(command -v "$bin" 2>/dev/null || true)" "$DEST/$bin"; do
    [ -n "$cand" ] && version_ok "$bin" "$cand" && { echo "$cand"; return 0; }
  done
  return 1
}

missing=()
mkdir -p "$DEST"
# A one-template chart that prints the Kubernetes version helm believes in.
HELM_PROBE_CHART=$(mktemp -d); trap 'rm -rf "$HELM_PROBE_CHART"' EXIT
mkdir -p "$HELM_PROBE_CHART/templates"
printf 'apiVersion: v2\nname: probe\nversion: 0.0.1\n' > "$HELM_PROBE_CHART/Chart.yaml"
printf 'minor: "{{ .Capabilities.KubeVersion.Minor }}"\n' > "$HELM_PROBE_CHART/templates/v.yaml"

for bin in $ALL_BINS; do
  if p=$(find_existing "$bin"); then
    [ "$p" = "$DEST/$bin" ] || ln -sf "$p" "$DEST/$bin"
  else
    missing+=("$bin")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then echo "$DEST"; exit 0; fi
[ $CHECK_ONLY -eq 1 ] && { say "missing: ${missing[*]}"; exit 1; }

command -v go >/dev/null 2>&1 || die "Go is not installed, and ${missing[*]} at the pinned versions were not found.
  Either install Go (https://go.dev/doc/install) so this script can build them from Go modules,
  or download the official binaries and set KUBEBUILDER_ASSETS to their directory (see README)."

mkdir -p "$WORK"
exec 9>"$CACHE_ROOT/build.lock"
if ! flock -n 9; then
  say "another build is running; waiting for its lock ($CACHE_ROOT/build.lock)"
  flock 9
fi
export GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0

stamp_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
started=$(date +%s)

build_k8s() {
  local mod="$WORK/kubernetes-v$K8S_VERSION" minor=${K8S_VERSION#*.}; minor=${minor%%.*}
  local staging="v0.${K8S_VERSION#*.}"
  mkdir -p "$mod"
  say "fetching k8s.io/kubernetes v$K8S_VERSION from the Go module proxy"
  local dir; dir=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  # The kubernetes module points each staging module k8s.io/<x> at ./staging;
  # as a dependency those replaces are ignored, so pin each to its published v0.X.Y.
  {
    echo "module foundry.local/k8sbuild"
    echo
    echo "go 1.25.0"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    sed -n 's|^\t\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*|\t\1 => \1 '"$staging"'|p' "$dir/go.mod"
    echo ")"
  } > "$mod/go.mod"
  local pkg=k8s.io/component-base/version cgo=k8s.io/client-go/pkg/version ld="-s -w"
  for p in $pkg $cgo; do
    ld+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$stamp_date"
  done
  local cmds="" pkgs="" c
  for c in kube-apiserver kubectl $NODE_CMDS; do
    need "$c" || continue
    cmds+=" $c"; pkgs+=" k8s.io/kubernetes/cmd/$c"
  done
  [ -n "$cmds" ] || return 0
  say "resolving dependencies for$cmds (first time: a few minutes)"
  # shellcheck disable=SC2086
  (cd "$mod" && go get $(for c in $cmds; do echo "k8s.io/kubernetes/cmd/$c@v$K8S_VERSION"; done) >&2)
  say "compiling$cmds (first time: 10-25 minutes on 2 cores)"
  # shellcheck disable=SC2086
  (cd "$mod" && go build -trimpath -ldflags "$ld" -o "$DEST/" $pkgs >&2)
}

build_etcd() {
  local mod="$WORK/etcd-v$ETCD_VERSION"
  mkdir -p "$mod"
  cat > "$mod/main.go" <<'GO'
// A thin main for etcd's server, so it can be built from the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  printf 'module foundry.local/etcdbuild\n\ngo 1.24\n' > "$mod/go.mod"
  say "fetching go.etcd.io/etcd/server/v3 v$ETCD_VERSION"
  (cd "$mod" && go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2 && go mod tidy >&2)
  say "compiling etcd"
  (cd "$mod" && go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION" -o "$DEST/etcd" . >&2)
}

build_helm() {
  local mod="$WORK/helm-v$HELM_VERSION"
  mkdir -p "$mod"
  printf 'module foundry.local/helmbuild\n\ngo 1.24\n' > "$mod/go.mod"
  say "fetching helm.sh/helm/v3 v$HELM_VERSION"
  (cd "$mod" && go get "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" >&2)
  say "compiling helm"
  # Offline (`helm template`, lint) helm assumes the Kubernetes version it was
  # stamped with. Helm's Makefile stamps its client-go minor (v0.37 for helm
  # 3.22, newer than the cluster); stamp the pinned version the tests run instead.
  local kv=$K8S_MINOR
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$kv"
  done
  (cd "$mod" && go build -trimpath -ldflags "$ld" -o "$DEST/helm" helm.sh/helm/v3/cmd/helm >&2)
}

need() { local b; for b in "${missing[@]}"; do [ "$b" = "$1" ] && return 0; done; return 1; }
# Someone may have finished the build while we waited for the lock: re-check.
still=()
for b in "${missing[@]}"; do version_ok "$b" "$DEST/$b" || still+=("$b"); done
missing=("${still[@]}")
if need kube-apiserver || need kubectl || need kubelet || need kube-controller-manager || need kube-scheduler || need kube-proxy; then
  build_k8s
fi
if need etcd; then build_etcd; fi
if need helm; then rm -f "$DEST/helm"; build_helm; fi

for bin in $ALL_BINS; do
  version_ok "$bin" "$DEST/$bin" || die "$bin was built but does not report the pinned version; see the output above"
done
say "control-plane binaries ready in $DEST ($(( $(date +%s) - started ))s)"
echo "$DEST"
