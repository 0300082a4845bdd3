"""Where Foundry keeps local state and caches on a developer's machine."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def state_dir() -> Path:
    """Local state (SQLite database, dev cluster, demo logs): $FOUNDRY_STATE_DIR or ~/.local/state/foundry."""
    base = os.environ.get("FOUNDRY_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "foundry"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Caches that survive checkouts (control-plane binaries): $FOUNDRY_CACHE_DIR or ~/.cache/foundry."""
    base = os.environ.get("FOUNDRY_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "foundry"
    )
    return Path(base)


def data_path(name: str) -> Path:
    """A folder shipped with Foundry (`crds`, `migrations`): inside the wheel, else the source tree."""
    packaged = Path(__file__).resolve().parent / "_data" / name
    return packaged if packaged.exists() else REPO_ROOT / name
