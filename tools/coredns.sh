#!/usr/bin/env bash
# Provide CoreDNS for the real-node test bed's cluster DNS, built from Go
# modules into the project cache. Only the plugins the test bed's Corefile uses
# are compiled in (bind, ready, errors, log, cache, kubernetes), which keeps
# the build to the Kubernetes client libraries the node binaries already use.
#
# Prints progress on stderr and the binary's path as the last line on stdout.
#   tools/coredns.sh           ensure the binary, print its path
#   tools/coredns.sh --check   exit 0 if it is present without building
set -euo pipefail

COREDNS_VERSION="${FOUNDRY_COREDNS_VERSION:-1.14.7}"
CACHE_ROOT="${FOUNDRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/foundry}"
DEST="$CACHE_ROOT/coredns/v$COREDNS_VERSION"
BIN="$DEST/coredns"
WORK="$CACHE_ROOT/build/coredns-v$COREDNS_VERSION"

say() { printf '[coredns] %s\n' "$*" >&2; }
die() { printf '[coredns] error: %s\n' "$*" >&2; exit 1; }

ok() { [ -x "$BIN" ] && [[ "$("$BIN" -version 2>/dev/null)" == *"CoreDNS-$COREDNS_VERSION"* ]]; }

if ok; then echo "$BIN"; exit 0; fi
[ "${1:-}" = "--check" ] && { say "CoreDNS v$COREDNS_VERSION is not built"; exit 1; }
command -v go >/dev/null 2>&1 || die "Go is not installed; it is needed to build CoreDNS from Go modules"

mkdir -p "$DEST" "$WORK"
# The same lock as tools/controlplane.sh: one Go build at a time on a small machine.
exec 9>"$CACHE_ROOT/build.lock"
if ! flock -n 9; then say "another build is running; waiting for its lock"; flock 9; fi
if ok; then echo "$BIN"; exit 0; fi

started=$(date +%s)
cat > "$WORK/main.go" <<'GO'
// CoreDNS with only the plugins the Foundry test bed's Corefile names.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The order plugins run in, a subsequence of CoreDNS's plugin.cfg.
var directives = []string{"bind", "ready", "errors", "log", "cache", "kubernetes"}

func init() { dnsserver.Directives = directives }

func main() { coremain.Run() }
GO
printf 'module foundry.local/corednsbuild\n\ngo 1.25.0\n' > "$WORK/go.mod"
export GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0
say "fetching github.com/coredns/coredns v$COREDNS_VERSION"
(cd "$WORK" && go get "github.com/coredns/coredns@v$COREDNS_VERSION" >&2 && go mod tidy >&2)
say "compiling coredns"
(cd "$WORK" && go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=v$COREDNS_VERSION" -o "$BIN" . >&2)
ok || die "built $BIN but it does not report CoreDNS-$COREDNS_VERSION"
say "CoreDNS ready in $BIN ($(( $(date +%s) - started ))s)"
echo "$BIN"
