"""When the resync daemon should next look at a run (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from foundry.domain.phases import Phase

# Phases whose progress depends on GitHub or the agent: polled every resync period.
POLLED = {Phase.APPROVED, Phase.AGENT_RUNNING, Phase.PR_OPEN, Phase.REVIEW_REQUIRED, Phase.PENDING, Phase.ANALYSING}
# WaitingApproval moves on FoundryApproval events (and a resume after restart);
# it is only woken for its expiry, or rarely as a safety net.
IDLE_SECONDS = 3600.0


def next_wake(run: dict[str, Any], config: Any, now: datetime) -> float:
    status = run.get("status") or {}
    raw = status.get("phase")
    phase = Phase(raw) if raw else Phase.PENDING
    resync = float(config.timeouts.resync_seconds)
    if phase in POLLED:
        return resync
    if phase == Phase.WAITING_APPROVAL:
        seconds = getattr(config.timeouts, "approval_seconds", None)
        since = waiting_since(status)
        if since is not None and seconds:
            return max(0.5, min(IDLE_SECONDS, (since - now).total_seconds() + float(seconds) + 0.5))
        return IDLE_SECONDS
    return IDLE_SECONDS


def waiting_since(status: dict[str, Any]) -> datetime | None:
    """When the plan now awaiting approval was posted: approvals must be newer, and it expires from then.

    The plan's own postedAt (a re-plan opens a new window), else when Approved last turned False
    (runs planned before plans carried the time)."""
    posted = (status.get("plan") or {}).get("postedAt")
    if posted:
        return _parse(posted)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Approved" and cond.get("status") == "False" and cond.get("lastTransitionTime"):
            return _parse(cond["lastTransitionTime"])
    return None


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
