"""Pre-push policy: may this set of file changes leave the agent pod?

Pure and independent of git, so the runner (before its one push) and the
operator (after it, on GitHub's list of a PR's files) judge with the same
rules:

- *forbidden paths*: a change whose path — or, for a rename or copy, whose
  old path — matches a forbidden glob is refused, whatever its status. So
  deleting a protected file and renaming it away are refused like editing it;
- *workflow files*: anything under `.github/workflows/` is refused unless the
  constraints allow workflows (a workflow runs with the repository's secrets,
  so an agent editing one is a privilege escalation, not a code change);
- *max files* and *max lines* (additions + deletions over all files) cap the
  size of one change.

Globs follow foundry.domain.globs. Every rule is checked, so a verdict lists
all violations; `reason` names the first one: the rule, the path and the
pattern.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from foundry.domain.globs import first_match

STATUSES = ("added", "modified", "removed", "renamed", "copied")
# GitHub's PR files API also says "changed" (mode only) and "unchanged"; both are modifications here.
_GITHUB_STATUS = {"changed": "modified", "unchanged": "modified"}
WORKFLOW_GLOB = ".github/workflows/**"

RULE_FORBIDDEN = "forbidden-path"
RULE_WORKFLOW = "workflow-file"
RULE_MAX_FILES = "max-files"
RULE_MAX_LINES = "max-lines"


@dataclass(frozen=True)
class Change:
    """One changed file. `previous_path` is set for renames and copies."""

    path: str
    status: str = "modified"
    previous_path: str | None = None
    additions: int = 0
    deletions: int = 0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"change status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if not self.path:
            raise ValueError("a change needs a path")
        if self.additions < 0 or self.deletions < 0:
            raise ValueError(f"{self.path}: additions and deletions cannot be negative")

    @property
    def paths(self) -> tuple[str, ...]:
        """Every path the change touches: the new one and, for a rename or copy, the old one."""
        return (self.path, self.previous_path) if self.previous_path else (self.path,)


@dataclass(frozen=True)
class Constraints:
    """The limits of input.json's `constraints` (camelCase there)."""

    forbidden_paths: tuple[str, ...] = ()
    max_changed_files: int | None = None
    max_changed_lines: int | None = None
    allow_workflows: bool = False

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> "Constraints":
        """From input.json's camelCase object; missing keys mean no limit (workflows still refused)."""
        raw = raw or {}
        paths = raw.get("forbiddenPaths") or ()
        if isinstance(paths, str) or not all(isinstance(p, str) for p in paths):
            raise ValueError("constraints.forbiddenPaths must be a list of glob strings")
        return cls(
            forbidden_paths=tuple(paths),
            max_changed_files=_limit(raw, "maxChangedFiles"),
            max_changed_lines=_limit(raw, "maxChangedLines"),
            allow_workflows=_flag(raw, "allowWorkflows"),
        )


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str
    path: str | None = None
    pattern: str | None = None


@dataclass(frozen=True)
class ChangeVerdict:
    allowed: bool
    violations: tuple[Violation, ...]
    files: int
    lines: int

    @property
    def reason(self) -> str:
        """One line: the first violation (and how many more), or why it passed."""
        if not self.violations:
            return f"{self.files} file(s), {self.lines} line(s) changed, within policy"
        first = self.violations[0].message
        more = len(self.violations) - 1
        return f"{first} (and {more} more violation{'s' if more > 1 else ''})" if more else first


def check_changes(changes: Iterable[Change], constraints: Constraints | Mapping[str, Any] | None) -> ChangeVerdict:
    """Judge `changes` against `constraints` (a Constraints or input.json's camelCase mapping)."""
    limits = constraints if isinstance(constraints, Constraints) else Constraints.from_mapping(constraints)
    items = list(changes)
    violations: list[Violation] = []
    for change in items:
        for path in change.paths:
            role = _role(change, path)
            pattern = first_match(path, limits.forbidden_paths)
            if pattern is not None:
                violations.append(Violation(RULE_FORBIDDEN, f"{path} matches forbidden path {pattern} ({role})",
                                            path, pattern))
            elif not limits.allow_workflows and first_match(path, (WORKFLOW_GLOB,)):
                violations.append(Violation(
                    RULE_WORKFLOW, f"{path} is a workflow file ({WORKFLOW_GLOB}, {role}) and workflows are not allowed",
                    path, WORKFLOW_GLOB))
    lines = sum(c.additions + c.deletions for c in items)
    if limits.max_changed_files is not None and len(items) > limits.max_changed_files:
        violations.append(Violation(RULE_MAX_FILES,
                                    f"{len(items)} files changed, more than the limit of {limits.max_changed_files}"))
    if limits.max_changed_lines is not None and lines > limits.max_changed_lines:
        violations.append(Violation(RULE_MAX_LINES,
                                    f"{lines} lines changed, more than the limit of {limits.max_changed_lines}"))
    return ChangeVerdict(not violations, tuple(violations), len(items), lines)


def from_github_files(files: Iterable[Mapping[str, Any]]) -> list[Change]:
    """GitHub's `GET /repos/{o}/{r}/pulls/{n}/files` entries as changes (previous_filename included)."""
    out: list[Change] = []
    for f in files:
        status = str(f.get("status") or "modified")
        out.append(Change(
            path=str(f["filename"]),
            status=_GITHUB_STATUS.get(status, status),
            previous_path=f.get("previous_filename") or None,
            additions=int(f.get("additions") or 0),
            deletions=int(f.get("deletions") or 0),
        ))
    return out


def _role(change: Change, path: str) -> str:
    if path == change.previous_path and path != change.path:
        return f"{change.status} away to {change.path}"
    return change.status


def _limit(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"constraints.{key} must be a non-negative integer, got {value!r}")
    return value


def _flag(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"constraints.{key} must be true or false, got {value!r}")
    return value
