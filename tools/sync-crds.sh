#!/usr/bin/env bash
# Copy the CRDs (crds/*.yaml, the single source) into the Helm chart, byte for byte.
#
#   tools/sync-crds.sh          copy, and remove chart CRDs whose source is gone
#   tools/sync-crds.sh --check  exit 1 (listing the differences) if the chart is out of date
#
# tests/test_helm_chart.py fails while the two differ, so run this after editing crds/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/crds"
dest="$root/helm/foundry/crds"

check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

shopt -s nullglob
sources=("$src"/*.yaml)
[ ${#sources[@]} -gt 0 ] || { echo "sync-crds: no CRDs in $src" >&2; exit 1; }

stale=0
for f in "${sources[@]}"; do
  name="$(basename "$f")"
  if ! cmp -s "$f" "$dest/$name"; then
    stale=1
    if $check; then echo "out of date: helm/foundry/crds/$name" >&2; else install -m 0644 "$f" "$dest/$name"; fi
  fi
done
for f in "$dest"/*.yaml; do
  name="$(basename "$f")"
  if [ ! -e "$src/$name" ]; then
    stale=1
    if $check; then echo "no source for: helm/foundry/crds/$name" >&2; else rm -f "$f"; fi
  fi
done
if $check && [ $stale -ne 0 ]; then
  echo "sync-crds: run tools/sync-crds.sh" >&2
  exit 1
fi
