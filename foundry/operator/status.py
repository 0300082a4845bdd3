"""Status conditions of a FoundryRun: pure functions, no I/O.

Each phase implies a set of condition values; a transition states its reason
and message and the conditions follow. `lastTransitionTime` moves only when a
condition's status flips (the Kubernetes convention), so re-recording the same
phase after a crash leaves the timestamps alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from foundry.domain.drift import Drift
from foundry.domain.phases import Phase

READY = "Ready"
APPROVED = "Approved"
AGENT_RUNNING = "AgentRunning"
PR_OPEN = "PROpen"
REVIEW_REQUIRED = "ReviewRequired"
BLOCKED = "Blocked"
DUPLICATE = "Duplicate"
COMPLETE = "Complete"
# Not implied by a phase: set by the PR step from the diff (plan_drift_condition).
PLAN_DRIFT = "PlanDrift"

CONDITION_TYPES = (READY, APPROVED, AGENT_RUNNING, PR_OPEN, REVIEW_REQUIRED, BLOCKED, DUPLICATE, COMPLETE,
                   PLAN_DRIFT)


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


# For each phase, the condition values it implies: (type, status). The reason
# and message come from the transition itself; conditions not listed keep
# their previous value (so "Approved" stays True while the agent runs).
_PHASE_CONDITIONS: dict[Phase, tuple[tuple[str, bool], ...]] = {
    Phase.PENDING: (),
    Phase.ANALYSING: (),
    Phase.NEEDS_CLARIFICATION: ((READY, False),),
    Phase.BLOCKED: ((BLOCKED, True), (AGENT_RUNNING, False)),
    Phase.WAITING_APPROVAL: ((READY, True), (APPROVED, False)),
    Phase.APPROVED: ((APPROVED, True),),
    Phase.REJECTED: ((APPROVED, False),),
    Phase.EXPIRED: ((APPROVED, False),),
    Phase.AGENT_RUNNING: ((AGENT_RUNNING, True),),
    Phase.PR_OPEN: ((AGENT_RUNNING, False), (PR_OPEN, True), (REVIEW_REQUIRED, False)),
    Phase.REVIEW_REQUIRED: ((AGENT_RUNNING, False), (REVIEW_REQUIRED, True)),
    Phase.EXECUTION_FAILED: ((AGENT_RUNNING, False),),
    Phase.COMPLETE: ((AGENT_RUNNING, False), (PR_OPEN, False), (COMPLETE, True)),
    Phase.CLOSED: ((AGENT_RUNNING, False), (PR_OPEN, False), (COMPLETE, False)),
    Phase.STOPPED: ((AGENT_RUNNING, False),),
    Phase.DUPLICATE: ((DUPLICATE, True),),
}


def conditions_for(phase: Phase, reason: str, message: str) -> list[Condition]:
    return [Condition(t, s, reason, message) for t, s in _PHASE_CONDITIONS[phase]]


def plan_drift_condition(drift: Drift) -> Condition:
    """PlanDrift from the PR's diff: True naming the out-of-plan paths (and, when they block, why);
    False when the PR stays within the plan, or when the plan names no files to compare with."""
    if not drift.judged:
        return Condition(PLAN_DRIFT, False, "PlanNamesNoFiles", drift.summary())
    if not drift.drifted:
        return Condition(PLAN_DRIFT, False, "WithinPlan", drift.summary())
    if drift.blocking:
        return Condition(PLAN_DRIFT, True, "RiskyFilesOutsidePlan", f"{drift.summary()}; {drift.why_blocked()}")
    return Condition(PLAN_DRIFT, True, "FilesOutsidePlan", drift.summary())


def differs(existing: Iterable[dict[str, Any]] | None, cond: Condition) -> bool:
    """Would writing `cond` change what `existing` (status.conditions) says?"""
    for c in existing or []:
        if c.get("type") == cond.type:
            return (c.get("status"), c.get("reason"), c.get("message")) != (
                "True" if cond.status else "False", cond.reason, cond.message)
    return True


def _rfc3339(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(existing: Iterable[dict[str, Any]] | None, updates: Iterable[Condition],
                     now: datetime) -> list[dict[str, Any]]:
    """The new `status.conditions` list: `existing` with `updates` applied.

    Order is stable (existing first, new types appended) so a status diff shows
    only what changed.
    """
    out: list[dict[str, Any]] = [dict(c) for c in (existing or [])]
    by_type = {c.get("type"): c for c in out}
    for cond in updates:
        value = "True" if cond.status else "False"
        current = by_type.get(cond.type)
        if current is None:
            current = {"type": cond.type}
            out.append(current)
            by_type[cond.type] = current
        if current.get("status") != value or "lastTransitionTime" not in current:
            current["lastTransitionTime"] = _rfc3339(now)
        current["status"] = value
        current["reason"] = cond.reason
        current["message"] = cond.message
    return out


def condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None
