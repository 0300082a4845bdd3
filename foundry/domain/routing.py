"""Which repository does a ticket belong to?

1. A `repo:<name>` label decides, when it names one configured repository.
   A label naming an unknown repository, or labels naming two, decide nothing
   and say so: a human was explicit, and guessing past them would be wrong.
2. Otherwise the catalogue: each repository's keywords (whole words in the
   title and description, 1 point each) and paths (a configured path written
   in the ticket, 2 points each, as a path is the stronger hint).
   Confident means the best score is at least MIN_SCORE and at least twice
   the runner-up's. Anything less routes nowhere, with the scores as reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from foundry.config import FoundryConfig, Repository

MIN_SCORE = 2
KEYWORD_POINTS = 1
PATH_POINTS = 2
LABEL_PREFIX = "repo:"


@dataclass(frozen=True)
class Route:
    """The routed repository name (None: not confident) and why."""

    repo: str | None
    reason: str
    via: str  # "label" | "catalogue" | "none"
    scores: Mapping[str, int] = field(default_factory=dict)


def _labels(ticket: Mapping[str, Any]) -> list[str]:
    raw = ticket.get("labels") or []
    out = []
    for label in raw:
        if isinstance(label, Mapping):  # tolerate Linear's {name: ...} shape
            label = label.get("name")
        if isinstance(label, str):
            out.append(label.strip())
    return out


def _score(repo: Repository, text: str) -> tuple[int, list[str]]:
    lowered = text.lower()
    points = 0
    hits: list[str] = []
    for word in repo.keywords:
        if re.search(rf"(?<![\w-]){re.escape(word.lower())}(?![\w-])", lowered):
            points += KEYWORD_POINTS
            hits.append(word)
    for path in repo.paths:
        needle = path.strip("/").lower()
        if needle and re.search(rf"(?<![\w./-]){re.escape(needle)}(?=[/\s`'\".,:;)]|$)", lowered):
            points += PATH_POINTS
            hits.append(path)
    return points, hits


def route(ticket: Mapping[str, Any], cfg: FoundryConfig) -> Route:
    """Route a ticket snapshot (spec.ticket) to one configured repository, or to none with a reason."""
    repos = cfg.repositories
    named = sorted({l[len(LABEL_PREFIX):].strip() for l in _labels(ticket) if l.lower().startswith(LABEL_PREFIX)})
    if named:
        if len(named) > 1:
            return Route(None, f"the labels name several repositories ({', '.join(named)}); keep one repo: label", "label")
        name = named[0]
        match = next((r for r in repos if r.lower() == name.lower()), None)
        if match is None:
            known = ", ".join(repos) or "none configured"
            return Route(None, f"label repo:{name} names no configured repository (known: {known})", "label")
        return Route(match, f"label repo:{name}", "label", {match: 0})
    if not repos:
        return Route(None, "no repositories are configured", "none")

    text = "\n".join(str(ticket.get(k) or "") for k in ("title", "description"))
    scores: dict[str, int] = {}
    hits: dict[str, list[str]] = {}
    for name, repo in repos.items():
        scores[name], hits[name] = _score(repo, text)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    best, best_score = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else 0
    summary = ", ".join(f"{n}={s}" for n, s in ranked)
    if best_score < MIN_SCORE:
        return Route(None, f"no repository matched confidently (scores: {summary}; need {MIN_SCORE}); "
                     "add a repo:<name> label", "none", scores)
    if best_score < 2 * runner_up:
        return Route(None, f"ambiguous between {best} and {ranked[1][0]} (scores: {summary}); "
                     "add a repo:<name> label", "none", scores)
    return Route(best, f"matched {', '.join(hits[best])} (scores: {summary})", "catalogue", scores)
