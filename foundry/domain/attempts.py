"""Attempt numbering and the create/attach/unchanged decision for claiming an issue.

Pure functions: the database layer (foundry.db.claims) feeds them rows, the
Kubernetes layer can feed them the FoundryRuns it lists for an issue. Both
must agree on the attempt number because it is part of the run's name.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from foundry.domain.phases import ACTIVE_PHASE_NAMES


@dataclass(frozen=True)
class PriorRun:
    """What the decision needs to know about an earlier run of the same issue."""

    attempt: int
    phase: str
    ticket_updated_at: datetime


class ClaimAction(str, enum.Enum):
    CREATE = "create"  # no active run and the ticket changed: make attempt `attempt`
    ATTACH = "attach"  # a run is active: join it
    UNCHANGED = "unchanged"  # nothing active, ticket not newer than the last run: do nothing


ClaimStatus = Literal["created", "attached", "unchanged"]


@dataclass(frozen=True)
class Claim:
    """What claiming an issue's run decided (created | attached | unchanged) and the run it names.

    The database layer fills every field; `run_id` and `phase` are the row's
    (None only from a stand-in backend that has no rows).
    """

    status: ClaimStatus
    name: str | None
    attempt: int | None
    namespace: str | None = None
    run_id: int | None = None
    phase: str | None = None


@dataclass(frozen=True)
class ClaimDecision:
    action: ClaimAction
    attempt: int  # the attempt to create, or the existing run's attempt


def next_attempt(prior_attempts: Iterable[int]) -> int:
    """Attempts count from 1; the next one follows the highest seen (gaps are never refilled)."""
    return max(prior_attempts, default=0) + 1


def decide_claim(prior: Sequence[PriorRun], ticket_updated_at: datetime) -> ClaimDecision:
    """Decide what a claim for an issue should do, given all earlier runs of that issue.

    An active run always wins (attach). Otherwise a new attempt is made only when the
    ticket's updatedAt is strictly newer than that of the latest attempt, so redelivered
    copies of the webhook that started a finished run create nothing.
    """
    _require_aware(ticket_updated_at)
    active = [r for r in prior if r.phase in ACTIVE_PHASE_NAMES]
    if active:
        return ClaimDecision(ClaimAction.ATTACH, max(r.attempt for r in active))
    if not prior:
        return ClaimDecision(ClaimAction.CREATE, 1)
    latest = max(prior, key=lambda r: r.attempt)
    _require_aware(latest.ticket_updated_at)
    if ticket_updated_at > latest.ticket_updated_at:
        return ClaimDecision(ClaimAction.CREATE, next_attempt(r.attempt for r in prior))
    return ClaimDecision(ClaimAction.UNCHANGED, latest.attempt)


def _require_aware(moment: datetime) -> None:
    # Comparing a naive with an aware datetime raises deep inside; say what is wrong up front.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"ticket updatedAt must carry a timezone, got naive {moment.isoformat()}")
