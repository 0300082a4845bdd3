"""Path globs as used in the config (forbidden_paths, risk_paths).

Semantics, close to .gitignore so they read as people expect:
- `*` matches within one path segment, `**` matches across segments
  (`infra/**` is everything under infra/, `**/secrets.yaml` is that file anywhere);
- `?` is one character other than `/`;
- a pattern without `/` matches the file's name at any depth (`*.pem`);
- a pattern ending in `/` matches everything under that directory.
Matching is case-sensitive, like paths in git.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    pat = pattern.strip().lstrip("/")
    if pat.endswith("/"):
        pat += "**"
    anywhere = "/" not in pat
    out: list[str] = []
    i = 0
    while i < len(pat):
        ch = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")  # zero or more whole directories
            i += 3
        elif pat.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(ch))
            i += 1
    body = "".join(out)
    return re.compile(("(?:.*/)?" if anywhere else "") + body + r"\Z")


def glob_match(path: str, pattern: str) -> bool:
    """Whether repository-relative `path` matches config glob `pattern` (see module doc)."""
    return _compile(pattern).match(path.lstrip("/")) is not None


def first_match(path: str, patterns: tuple[str, ...] | list[str]) -> str | None:
    """The first of `patterns` that `path` matches, or None."""
    for pattern in patterns:
        if glob_match(path, pattern):
            return pattern
    return None
