#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries are on this machine and print their
# directory (the last line of stdout). Installs Debian's `postgresql` package
# when none is found. Progress goes to stderr. Used by the test fixtures and
# `make test`; it never starts a server (the tests start their own).
set -euo pipefail

find_bin_dir() {
  local best=""
  # Debian/Ubuntu keep each major version under /usr/lib/postgresql/<major>/bin.
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
    [[ -x "$dir/initdb" ]] && best="$dir"
  done
  if [[ -z "$best" ]] && command -v initdb >/dev/null 2>&1; then
    best="$(dirname "$(command -v initdb)")"
  fi
  [[ -n "$best" ]] && echo "$best"
}

if dir="$(find_bin_dir)"; then
  echo "$dir"
  exit 0
fi

if [[ "${1:-}" == "--check" ]]; then
  echo "PostgreSQL is not installed" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL is not installed and this is not a Debian-like system; install PostgreSQL (initdb, postgres) yourself" >&2
  exit 1
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "PostgreSQL is not installed and installing it needs root (no sudo found)" >&2
    exit 1
  fi
fi
echo "Installing PostgreSQL from Debian's packages..." >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update >&2
$SUDO apt-get install -y --no-install-recommends postgresql >&2

if dir="$(find_bin_dir)"; then
  echo "$dir"
else
  echo "installed the postgresql package but still found no initdb" >&2
  exit 1
fi
