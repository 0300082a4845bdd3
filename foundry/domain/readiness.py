"""Is a ticket ready to be planned? A description plus acceptance criteria.

When something is missing, the answer carries the questions to post on the
issue (one clarification comment), phrased for the person who filed it.
The text helpers here (sections, bullet lists, acceptance criteria) are also
what planning reads, so both agree on what "the acceptance criteria" are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Fewer words than this is a title restated, not a description.
MIN_DESCRIPTION_WORDS = 8

_AC_HEADING = re.compile(
    r"^\s*(?:#{1,6}\s*|\*\*)?\s*(?:acceptance[ -]criteria|definition of done|done when|\bac\b)\s*:?\s*(?:\*\*)?\s*:?\s*$",
    re.IGNORECASE,
)
_HEADING = re.compile(r"^\s*(?:#{1,6}\s+(?P<h>.+?)\s*#*\s*|\*\*(?P<b>[^*]+?)\*\*\s*:?|(?P<c>[A-Za-z][A-Za-z /-]{1,40}):)\s*$")
_BULLET = re.compile(r"^\s*(?:[-*+]\s+(?:\[[ xX]\]\s+)?|\d+[.)]\s+|\[[ xX]\]\s+)(?P<text>\S.*)$")
_CHECKBOX = re.compile(r"^\s*(?:[-*+]\s+)?\[[ xX]\]\s+(?P<text>\S.*)$")
_GHERKIN = re.compile(r"^\s*(?:[-*+]\s+)?(?P<text>given\b.+?\bthen\b.+|when\b.+?\bthen\b.+)$", re.IGNORECASE)
_INLINE_AC = re.compile(r"^\s*(?:acceptance[ -]criteria|ac)\s*:\s*(?P<text>\S.+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Readiness:
    """The verdict: `ready`, and otherwise what is `missing` and the `questions` to ask."""

    ready: bool
    missing: tuple[str, ...]  # "description", "acceptance_criteria"
    questions: tuple[str, ...]
    acceptance_criteria: tuple[str, ...]


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def sections(description: str) -> dict[str, list[str]]:
    """The description split at headings: lowercased heading → its lines ('' holds the lines before any heading)."""
    out: dict[str, list[str]] = {"": []}
    current = ""
    for line in description.splitlines():
        m = _HEADING.match(line)
        if m and not _BULLET.match(line):
            current = (m.group("h") or m.group("b") or m.group("c") or "").strip().rstrip(":").lower()
            out.setdefault(current, [])
            continue
        out[current].append(line)
    return out


def bullets(lines: list[str]) -> list[str]:
    """The items of the bullet, numbered or checkbox lists among `lines`."""
    items = []
    for line in lines:
        m = _BULLET.match(line)
        if m:
            items.append(m.group("text").strip())
    return items


def acceptance_criteria(description: str) -> tuple[str, ...]:
    """The acceptance criteria in a description, in order.

    Found, in this order of preference: the items under an "Acceptance criteria"
    (or "Definition of done", "AC") heading; else the lines of a checkbox list;
    else Given/When/Then lines; else an inline "AC: ..." line.
    """
    found: list[str] = []
    lines = description.splitlines()
    for i, line in enumerate(lines):
        if _AC_HEADING.match(line):
            block: list[str] = []
            for follow in lines[i + 1 :]:
                if _HEADING.match(follow) and not _BULLET.match(follow):
                    break
                block.append(follow)
            items = bullets(block) or [b.strip() for b in block if b.strip()]
            found.extend(items)
    if not found:
        found = [m.group("text").strip() for m in map(_CHECKBOX.match, lines) if m]
    if not found:
        found = [m.group("text").strip() for m in map(_GHERKIN.match, lines) if m]
    if not found:
        found = [m.group("text").strip() for m in map(_INLINE_AC.match, lines) if m]
    seen: set[str] = set()
    unique = []
    for item in found:
        if item.lower() not in seen:
            seen.add(item.lower())
            unique.append(item)
    return tuple(unique)


def _description_body(description: str) -> str:
    """The description without its acceptance-criteria block (so criteria alone do not count as a description)."""
    kept: list[str] = []
    skipping = False
    for line in description.splitlines():
        if _AC_HEADING.match(line):
            skipping = True
            continue
        if skipping and _HEADING.match(line) and not _BULLET.match(line):
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept)


def assess(ticket: Mapping[str, Any]) -> Readiness:
    """Judge a ticket snapshot (FoundryRun spec.ticket: title, description, labels, ...)."""
    if not isinstance(ticket, Mapping):
        raise TypeError(f"ticket must be a mapping (spec.ticket), got {type(ticket).__name__}")
    title = _text(ticket.get("title"))
    description = _text(ticket.get("description"))
    criteria = acceptance_criteria(description)
    body_words = re.findall(r"\w+", _description_body(description))

    missing: list[str] = []
    questions: list[str] = []
    if len(body_words) < MIN_DESCRIPTION_WORDS:
        missing.append("description")
        subject = f" in “{title}”" if title else ""
        questions.append(
            f"What should change{subject}, and why? Please describe the current behaviour, "
            "the behaviour you want, and where it shows up (page, endpoint, command or file)."
        )
    if not criteria:
        missing.append("acceptance_criteria")
        questions.append(
            "How will we know it is done? Please add an **Acceptance criteria** section with one "
            "checkable statement per line (for example `- [ ] Saving an empty form shows an error`)."
        )
    return Readiness(ready=not missing, missing=tuple(missing), questions=tuple(questions), acceptance_criteria=criteria)
