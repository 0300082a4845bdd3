#!/usr/bin/env bash
# Make sure the container runtime and image tools that the real-node test bed
# (foundry/dev/node.py) uses are on this machine, installing Debian's
# packages for whatever is missing. Idempotent: a machine that has them all
# runs no apt command. Progress goes to stderr.
#
#   tools/node-runtime.sh           install what is missing
#   tools/node-runtime.sh --check   exit 0 if everything is present, else list what is not
set -euo pipefail

say() { printf '[node-runtime] %s\n' "$*" >&2; }

# command (or file) that proves the package is installed -> Debian package
declare -A NEED=(
  [/usr/bin/containerd]=containerd
  [/usr/sbin/runc]=runc
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [/usr/bin/umoci]=umoci
  [/usr/bin/skopeo]=skopeo
  [/usr/sbin/debootstrap]=debootstrap
  [/usr/sbin/iptables]=iptables
  [/usr/sbin/conntrack]=conntrack
  [/bin/busybox]=busybox-static
  [/usr/bin/gcc]=gcc
  [/usr/bin/nsenter]=util-linux
  [/usr/sbin/ip]=iproute2
)

missing_pkgs() {
  local path pkgs=()
  for path in "${!NEED[@]}"; do
    [ -x "$path" ] || pkgs+=("${NEED[$path]}")
  done
  # A dynamic busybox may be installed instead: the test images need a static one.
  if [ -x /bin/busybox ] && ! file_is_static /bin/busybox; then pkgs+=(busybox-static); fi
  # gcc -static needs libc's static archive.
  [ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -n "$(ls /usr/lib/*/libc.a 2>/dev/null)" ] || pkgs+=(libc6-dev)
  printf '%s\n' "${pkgs[@]}" | sort -u | sed '/^$/d'
}

file_is_static() { ! LC_ALL=C ldd "$1" >/dev/null 2>&1; }

mapfile -t pkgs < <(missing_pkgs)
if [ ${#pkgs[@]} -eq 0 ]; then exit 0; fi
if [ "${1:-}" = "--check" ]; then say "missing packages: ${pkgs[*]}"; exit 1; fi

command -v apt-get >/dev/null 2>&1 || { say "error: missing ${pkgs[*]} and this is not a Debian-like system; install them yourself"; exit 1; }
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { say "error: installing ${pkgs[*]} needs root (no sudo found)"; exit 1; }
  SUDO=sudo
fi

# One installer at a time (dpkg has its own lock, but a second run would then
# fail instead of waiting).
LOCK_DIR="${FOUNDRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/foundry}"
mkdir -p "$LOCK_DIR"
exec 9>"$LOCK_DIR/node-runtime.lock"
flock 9
mapfile -t pkgs < <(missing_pkgs)  # someone may have installed them while we waited
if [ ${#pkgs[@]} -eq 0 ]; then exit 0; fi

say "installing from Debian's packages: ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >&2
# The containerd package would start a system-wide daemon where systemd runs;
# the test bed runs its own, so the system one is left as the package leaves it.
$SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2

mapfile -t pkgs < <(missing_pkgs)
if [ ${#pkgs[@]} -ne 0 ]; then say "error: still missing after install: ${pkgs[*]}"; exit 1; fi
say "node runtime ready"
