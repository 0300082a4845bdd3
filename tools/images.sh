#!/usr/bin/env bash
# Build (or reuse) Foundry's container images without Docker or a registry, as
# docker-archive tarballs under ~/.cache/foundry/images/ that containerd imports
# under the chart's image names. Needs root (debootstrap, chroot), umoci and skopeo.
# The work is foundry.dev.images; progress goes to stderr and, on success,
# one "REF TARBALL" line per image to stdout.
#
#   tools/images.sh                     all three images
#   tools/images.sh foundry postgres    only these (foundry, foundry-agent, postgres)
#   tools/images.sh --json              the same, as JSON
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
[ "$(id -u)" = 0 ] || { echo "[images] error: building images needs root (debootstrap, chroot, file ownership)" >&2; exit 1; }
for tool in debootstrap umoci skopeo; do
  command -v "$tool" >/dev/null 2>&1 && continue
  command -v apt-get >/dev/null 2>&1 || { echo "[images] error: $tool is missing and this is not Debian: install it" >&2; exit 1; }
  echo "[images] installing debootstrap umoci skopeo from Debian's packages" >&2
  apt-get install -y -q debootstrap umoci skopeo >&2
  break
done
PY=.venv/bin/python
[ -x "$PY" ] || { echo "[images] error: no .venv: run make venv first" >&2; exit 1; }
exec "$PY" -m foundry.dev.images "$@"
