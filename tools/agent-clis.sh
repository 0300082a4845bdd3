#!/usr/bin/env bash
# Install the coding-agent CLIs Foundry's runner drives, at pinned versions, into
# the project cache (never the checkout):
#
#   ~/.cache/foundry/agent-clis/claude-code-<v>/   npm @anthropic-ai/claude-code
#   ~/.cache/foundry/agent-clis/codex-<v>/         npm @openai/codex
#   ~/.cache/foundry/agent-clis/aider-<v>/         PyPI aider-chat, its own python3.11 venv
#   ~/.cache/foundry/agent-clis/set-<pins>/bin/    claude, codex, aider (symlinks)
#
# A complete install (its binary reports the pinned version) is reused; a broken or
# partial one is replaced. Prints progress on stderr and, on success, the directory
# holding bin/ as the last line on stdout. $FOUNDRY_CACHE_DIR moves the cache.
#
#   tools/agent-clis.sh             ensure the CLIs, print the directory
#   tools/agent-clis.sh --check     exit 0 if all are installed, without installing
#   tools/agent-clis.sh --versions  print the pinned versions
set -euo pipefail

CLAUDE_CODE_VERSION="2.1.332"
CODEX_VERSION="0.171.0"
AIDER_VERSION="0.86.2"
AIDER_PYTHON="${FOUNDRY_AIDER_PYTHON:-python3.11}"

CACHE_ROOT="${FOUNDRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/foundry}"
BASE="$CACHE_ROOT/agent-clis"
SET="$BASE/set-claude-code-$CLAUDE_CODE_VERSION-codex-$CODEX_VERSION-aider-$AIDER_VERSION"
# Aider fetches litellm's price table from the internet unless $HOME/.aider/caches holds a
# fresh copy: the install keeps litellm's bundled backup beside the venv, and the runner
# copies it into each run's private HOME.
PRICES_NAME="model_prices_and_context_window.json"

say() { printf '[agent-clis] %s\n' "$*" >&2; }
die() { printf '[agent-clis] error: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  --versions) echo "claude-code $CLAUDE_CODE_VERSION"; echo "codex $CODEX_VERSION"; echo "aider $AIDER_VERSION"; exit 0 ;;
  -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
CHECK_ONLY=0; [ "${1:-}" = "--check" ] && CHECK_ONLY=1

# The version probes run with a throwaway HOME and every phone-home switch off, so
# checking an install writes nothing into the user's home and sends nothing anywhere.
PROBE_HOME=$(mktemp -d); trap 'rm -rf "$PROBE_HOME"' EXIT
probe() {
  env -i PATH="/usr/bin:/bin" HOME="$PROBE_HOME" DISABLE_AUTOUPDATER=1 DISABLE_TELEMETRY=1 \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 LITELLM_LOCAL_MODEL_COST_MAP=True \
    timeout 60 "$@" </dev/null 2>/dev/null
}

# The executable each install provides, relative to its directory.
exe_of() {
  case "$1" in
    claude-code) echo "node_modules/.bin/claude" ;;
    codex) echo "node_modules/.bin/codex" ;;
    aider) echo "venv/bin/aider" ;;
  esac
}

# installed_ok NAME VERSION: does the install answer --version with the pin (and, for
# Aider, hold the price table the runner seeds)?
installed_ok() {
  local name=$1 version=$2 dir="$BASE/$1-$2" out
  [ -x "$dir/$(exe_of "$name")" ] && [ -f "$dir/.complete" ] || return 1
  out=$(probe "$dir/$(exe_of "$name")" --version) || return 1
  case "$name" in
    claude-code) [[ "$out" == "$version"* ]] ;;
    codex) [[ "$out" == *"codex-cli $version"* ]] ;;
    aider) [[ "$out" == *"aider $version"* ]] && [ -s "$dir/$PRICES_NAME" ] ;;
  esac
}

install_npm() {  # install_npm NAME VERSION PACKAGE
  local name=$1 version=$2 package=$3 dir="$BASE/$1-$2" stage
  command -v npm >/dev/null 2>&1 || die "npm is not installed; $name needs it (apt-get install npm)"
  stage="$dir"
  rm -rf "$stage"; mkdir -p "$stage"
  say "installing $package@$version from npm into $dir"
  # Scripts must run: the postinstall puts the platform's native binary in place.
  npm install --prefix "$stage" --no-audit --no-fund --no-update-notifier --loglevel=error \
    "$package@$version" >&2 || die "npm install $package@$version failed (see above)"
  finish "$name" "$version" "$stage"
}

install_aider() {
  local version=$1 dir="$BASE/aider-$1" stage py prices
  command -v "$AIDER_PYTHON" >/dev/null 2>&1 || die "$AIDER_PYTHON is not installed; Aider needs it (set FOUNDRY_AIDER_PYTHON to another interpreter >= 3.10)"
  stage="$dir"
  rm -rf "$stage"; mkdir -p "$stage"
  say "installing aider-chat==$version from PyPI into $dir (a venv with $AIDER_PYTHON; about a minute)"
  "$AIDER_PYTHON" -m venv "$stage/venv"
  "$stage/venv/bin/python" -m pip install --quiet --disable-pip-version-check "aider-chat==$version" >&2 \
    || die "pip install aider-chat==$version failed (see above)"
  py="$stage/venv/bin/python"
  prices=$("$py" -c 'import importlib.resources as r; print(r.files("litellm") / "model_prices_and_context_window_backup.json")') \
    || die "litellm (an Aider dependency) has no bundled price table"
  [ -s "$prices" ] || die "litellm's bundled price table $prices is missing or empty"
  cp "$prices" "$stage/$PRICES_NAME"
  finish aider "$version" "$stage"
}

# finish NAME VERSION DIR: mark an install complete once it reports its version. Installs
# go straight into their final directory (a venv embeds its own path, so it cannot be
# moved); the marker is what tells a finished install from one interrupted half-way.
finish() {
  local name=$1 version=$2 dir=$3
  touch "$dir/.complete"
  installed_ok "$name" "$version" || { rm -f "$dir/.complete"; die "$name $version installed but does not report its version; see $dir"; }
}

mkdir -p "$BASE"
exec 9>"$BASE/.lock"
if ! flock -n 9; then
  say "another install is running; waiting for its lock ($BASE/.lock)"
  flock 9
fi

started=$(date +%s)
missing=()
for pin in "claude-code $CLAUDE_CODE_VERSION" "codex $CODEX_VERSION" "aider $AIDER_VERSION"; do
  set -- $pin
  installed_ok "$1" "$2" || missing+=("$1")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ $CHECK_ONLY -eq 1 ] && { say "missing: ${missing[*]} (run tools/agent-clis.sh)"; exit 1; }
  for name in "${missing[@]}"; do
    case "$name" in
      claude-code) install_npm claude-code "$CLAUDE_CODE_VERSION" @anthropic-ai/claude-code ;;
      codex) install_npm codex "$CODEX_VERSION" @openai/codex ;;
      aider) install_aider "$AIDER_VERSION" ;;
    esac
  done
  say "installed ${missing[*]} in $(( $(date +%s) - started )) s"
fi

mkdir -p "$SET/bin"
ln -sfn "../../claude-code-$CLAUDE_CODE_VERSION/$(exe_of claude-code)" "$SET/bin/claude"
ln -sfn "../../codex-$CODEX_VERSION/$(exe_of codex)" "$SET/bin/codex"
ln -sfn "../../aider-$AIDER_VERSION/$(exe_of aider)" "$SET/bin/aider"
echo "$SET"
