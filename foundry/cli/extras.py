"""Which optional extra a command needs, and a one-line refusal when it is missing.

The requirements of an extra are read from the installed distribution's
metadata (pyproject.toml is their one definition), so the check cannot drift
from what `pip install 'foundry[dev]'` installs.
"""

from __future__ import annotations

import re
from importlib import metadata

_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def extra_requirements(requires: list[str], extra: str) -> list[str]:
    """The distribution names an extra adds (Requires-Dist lines marked `extra == ...`)."""
    names = []
    for line in requires:
        marker = line.partition(";")[2]
        if extra in _EXTRA.findall(marker):
            match = _NAME.match(line)
            if match and match.group(1) not in names:
                names.append(match.group(1))
    return names


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def missing_for(extra: str, dist: str = "foundry") -> list[str]:
    """What of `extra` is not installed; empty when it all is, or when Foundry
    itself is not installed as a distribution (a bare source tree: nothing to compare)."""
    try:
        requires = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return []
    return [name for name in extra_requirements(requires, extra)
            if name.lower() != dist and not _installed(name)]
