"""Plan drift: the paths a change touches that the approved plan did not name.

People approved a plan that names files (status.plan.files: paths, directories
or globs); the pull request's diff says which files the work really touched.
A path is *within the plan* when it is a planned file, lies under a planned
directory, matches a planned glob, sits next to a planned file (same
directory: a helper beside the module is the same change), or is a test
(tests for the change are always welcome). Every other path is *drift*.

Harmless drift is shown to people (the PlanDrift condition, the PR body) and
sends the PR to review. Drift that is forbidden by policy or lies in a risk
area the approvals did not cover is the case an approval of the plan could
not have consented to, so it blocks (decision 0023).

A plan that names no files (the deterministic planner when the ticket
mentions none) bounds nothing: nothing is drift, `judged` is False.

The PR body says it too (`pr_body_with`): one "Plan drift" section between
hidden markers, replaced rather than added again, and taken out when a later
head is back within the plan.

Pure: the diff check (foundry.domain.policy.check_diff) and the PR step
(foundry.operator.reconcile.steps_pr, the condition and the PR body) use it.
"""

from __future__ import annotations

import re

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from foundry.domain.globs import first_match, glob_match

# How many paths a message (a condition, a comment, the PR body) names before "and N more".
SHOWN = 10


def planned_paths(files: Iterable[Any] | None) -> list[str]:
    """The plan's file entries as paths: strings, or {"path": ...} entries; blanks and `./` dropped."""
    out: list[str] = []
    for entry in files or ():
        if isinstance(entry, Mapping):
            entry = entry.get("path")
        if isinstance(entry, str):
            path = entry.strip()
            while path.startswith("./"):
                path = path[2:]
            path = path.lstrip("/")
            if path:
                out.append(path)
    return out


def within_plan(path: str, planned: Sequence[str]) -> bool:
    """Is `path` within the plan's files (see the module doc)? `planned` as planned_paths gives it."""
    lowered = path.lower()
    if "test" in lowered.rsplit("/", 1)[-1] or "/tests/" in f"/{lowered}" or "/test/" in f"/{lowered}":
        return True
    directory = path.rsplit("/", 1)[0] if "/" in path else ""
    for entry in planned:
        if any(ch in entry for ch in "*?"):
            if glob_match(path, entry):
                return True
            continue
        if path == entry or path.startswith(entry.rstrip("/") + "/"):
            return True
        entry_dir = entry.rsplit("/", 1)[0] if "/" in entry else ""
        if entry_dir == directory and "." in entry.rsplit("/", 1)[-1]:
            return True
    return False


def outside_plan(paths: Iterable[str], plan_files: Iterable[Any] | None) -> tuple[str, ...]:
    """The paths (in order, once each) outside a plan; none when the plan names no files."""
    planned = planned_paths(plan_files)
    if not planned:
        return ()
    return tuple(p for p in dict.fromkeys(paths) if not within_plan(p, planned))


def shown(paths: Sequence[str], limit: int = SHOWN) -> str:
    """`a, b, c and 4 more`: a bounded list for a one-line message."""
    head = ", ".join(paths[:limit])
    return head + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


@dataclass(frozen=True)
class Drift:
    """What a change touches outside its plan, and which of that the approvals could not have covered."""

    judged: bool  # the plan named files; False: nothing bounds the change, so nothing is drift
    outside: tuple[str, ...] = ()
    forbidden: tuple[tuple[str, str], ...] = ()  # (path, the policy.forbidden_paths glob it matches)
    risky: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (path, the risk areas no approval covered)

    @property
    def drifted(self) -> bool:
        return bool(self.outside)

    @property
    def blocking(self) -> bool:
        return bool(self.forbidden or self.risky)

    def summary(self) -> str:
        """One line for the condition: the out-of-plan paths, bounded."""
        if not self.judged:
            return "the plan names no files, so the change is not compared with it"
        if not self.outside:
            return "every changed file is within the approved plan"
        return f"{len(self.outside)} changed file(s) outside the approved plan: {shown(self.outside)}"

    def why_blocked(self) -> str:
        """Which out-of-plan paths block and why (empty when none does)."""
        parts = [f"{path} matches forbidden path {glob}" for path, glob in self.forbidden[:SHOWN]]
        room = max(0, SHOWN - len(parts))
        parts += [f"{path} is in risk area {', '.join(areas)}, which the approvals did not cover"
                  for path, areas in self.risky[:room]]
        more = len(self.forbidden) + len(self.risky) - len(parts)
        if not parts:
            return ""
        return ("the change reaches outside the approved plan: " + "; ".join(parts)
                + (f"; and {more} more" if more > 0 else ""))


def plan_drift(paths: Iterable[str], plan_files: Iterable[Any] | None, *,
               forbidden_paths: Sequence[str] = (), areas_of: Any = None,
               covered_areas: Iterable[str] = ()) -> Drift:
    """The drift of a change touching `paths` from a plan naming `plan_files`.

    `forbidden_paths` are policy.forbidden_paths; `areas_of(path)` gives a
    path's risk areas (foundry.domain.risk.areas_of_path with the config);
    `covered_areas` are the risk areas the approvals covered (status.riskAreas).
    """
    planned = planned_paths(plan_files)
    if not planned:
        return Drift(judged=False)
    outside = outside_plan(paths, planned)
    covered = set(covered_areas)
    forbidden: list[tuple[str, str]] = []
    risky: list[tuple[str, tuple[str, ...]]] = []
    for path in outside:
        glob = first_match(path, tuple(forbidden_paths))
        if glob is not None:
            forbidden.append((path, glob))
            continue
        uncovered = tuple(a for a in (areas_of(path) if areas_of else ()) if a not in covered)
        if uncovered:
            risky.append((path, uncovered))
    return Drift(True, outside, tuple(forbidden), tuple(risky))


# The PR body's drift section sits between these (HTML comments: GitHub does not render them).
BODY_BEGIN = "<!-- foundry:plan-drift -->"
BODY_END = "<!-- /foundry:plan-drift -->"
_BODY_SECTION = re.compile(r"\n*" + re.escape(BODY_BEGIN) + r".*?" + re.escape(BODY_END) + r"\n*", re.DOTALL)
_UNSAFE = re.compile(r"[`<>\x00-\x1f\x7f]")  # a path must not end its code span, forge a marker, or break a line
PATH_SHOWN = 200  # characters of one path in the PR body


def _code(path: str) -> str:
    safe = _UNSAFE.sub("?", path)
    return f"`{safe[:PATH_SHOWN]}{'…' if len(safe) > PATH_SHOWN else ''}`"


def body_section(d: Drift) -> str:
    """The PR body's "Plan drift" section (markers included); empty when nothing drifted."""
    if not d.drifted:
        return ""
    lines = [BODY_BEGIN, "## Plan drift", "",
             f"{len(d.outside)} changed file(s) outside the approved plan:", ""]
    lines += [f"- {_code(path)}" for path in d.outside[:SHOWN]]
    if len(d.outside) > SHOWN:
        lines.append(f"- and {len(d.outside) - SHOWN} more")
    if d.blocking:
        blocked = [f"{_code(path)} (forbidden path)" for path, _ in d.forbidden]
        blocked += [f"{_code(path)} (risk area {', '.join(areas)}, not covered by the approvals)"
                    for path, areas in d.risky]
        lines += ["", "Foundry blocked this run: " + "; ".join(blocked[:SHOWN])
                  + (f"; and {len(blocked) - SHOWN} more" if len(blocked) > SHOWN else "") + "."]
    else:
        lines += ["", "A person reviews this before it goes on."]
    return "\n".join([*lines, BODY_END])


def pr_body_with(body: str | None, d: Drift) -> str:
    """`body` with its drift section as `d` says: replaced (one, however many were there),
    removed when nothing drifted, the rest of the body kept. Idempotent."""
    body = body or ""
    section = body_section(d)
    rest = _BODY_SECTION.sub("\n\n", body)
    if section:
        return f"{rest.rstrip()}\n\n{section}\n".lstrip("\n")
    return f"{rest.rstrip()}\n" if rest != body else body
