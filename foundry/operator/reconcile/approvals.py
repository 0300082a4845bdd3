"""Approvals: WaitingApproval → Approved | Rejected | Expired, and the human
"reject"/"stop" that ends any active phase.

Who counts is foundry.domain.policy's decision (distinct approvers, roles that
cover the run's risk areas, N-of-M, default deny); this step reads the
FoundryApproval objects, asks, and records the verdict and the reasons for any
refused approval.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from foundry.domain import policy
from foundry.domain.phases import Phase
from foundry.operator.kubeio import list_approvals
from foundry.operator.reconcile import agentio, passcache
from foundry.operator.reconcile.outcome import Outcome, Stay, Transition
from foundry.operator.reconcile.view import RunView
from foundry.operator.status import APPROVED, condition

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def _decisions(deps: "Deps", run: RunView, *, until: datetime | None = None) -> list[dict[str, Any]]:
    """The decisions on the run; with `until`, only those made by then (API server time)."""
    listed = passcache.cached(("approvals", run.namespace, run.name),
                              lambda: list_approvals(deps.api, run.namespace, run.name))
    return [a.get("spec") or {} for a in listed if until is None or _made_at(a) <= until]


def _made_at(approval: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(approval["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


def interrupt(deps: "Deps", run: RunView) -> Outcome | None:
    """A valid reject or stop ends the run from any active phase (the agent is cancelled)."""
    if run.phase == Phase.PENDING:
        return None  # not yet known to hold the slot; the claim comes first
    for spec in _decisions(deps, run):
        decision = spec.get("decision")
        if decision not in ("reject", "stop"):
            continue
        verdict = policy.may_decide(deps.config, spec.get("approver", ""), spec.get("source", ""), decision)
        if not verdict.allowed:
            continue
        jobs = agentio.end_attempt(deps, run)
        phase = Phase.REJECTED if decision == "reject" else Phase.STOPPED
        return Transition(phase, "Rejected" if decision == "reject" else "StoppedByHuman",
                          f"{decision} by {spec.get('approver')} ({spec.get('source')})",
                          status={"agent": {**run.agent, "jobs": jobs}} if jobs != run.jobs else {})
    return None


def _waiting_since(run: RunView) -> datetime | None:
    cond = condition(run.status, APPROVED)
    if cond and cond.get("status") == "False" and cond.get("lastTransitionTime"):
        return datetime.fromisoformat(cond["lastTransitionTime"].replace("Z", "+00:00"))
    return None


def expires_at(deps: "Deps", run: RunView) -> datetime | None:
    since = _waiting_since(run)
    seconds = getattr(deps.config.timeouts, "approval_seconds", None)
    if since is None or not seconds:
        return None
    return since + timedelta(seconds=seconds)


def await_approvals(deps: "Deps", run: RunView) -> Outcome:
    deadline = expires_at(deps, run)
    # Only approvals given by the deadline count: one given later (while the
    # operator was down, or before the resync noticed the deadline) must not
    # revive an expired plan.
    tally = policy.tally_approvals(deps.config, _decisions(deps, run, until=deadline),
                                   list(run.status.get("riskAreas") or []))
    approvals = {"required": tally.required, "received": tally.received,
                 "summary": f"{tally.received}/{tally.required}", "approvers": tally.approvers}
    if tally.satisfied:
        return Transition(Phase.APPROVED, "ApprovalsSatisfied",
                          f"approved by {', '.join(a['name'] for a in tally.approvers)}",
                          status={"approvals": approvals})
    if deadline is not None and deps.clock() >= deadline:
        return Transition(Phase.EXPIRED, "ApprovalExpired", f"no sufficient approval by {deadline.isoformat()}",
                          status={"approvals": approvals}, warning=True)
    refused = "; ".join(f"{who}: {why}" for who, why in tally.refused)
    message = f"{tally.received}/{tally.required} approvals" + (f"; refused: {refused}" if refused else "")
    if approvals == run.status.get("approvals") and message == run.status.get("message"):
        return Stay()
    return Stay(status={"approvals": approvals, "message": message},
                audit="approvals-seen" if tally.refused or tally.received else None,
                audit_detail={"received": tally.received, "required": tally.required, "refused": tally.refused})
