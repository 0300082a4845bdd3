"""Endings that can come in any active phase, asked before the phase's own step.

- `interrupt`: a human's reject or stop → Rejected | Stopped, the agent
  cancelled. A decision passes the checks an approval passes
  (steps_approval.why_not); one that does not count is told once, then ignored.
- `check` and `blocked`: a failure no retry can fix. A run whose repository
  was removed from the configuration would otherwise fail every reconcile with
  a KeyError, retried forever while it holds its issue's slot. It ends Blocked
  instead, with the reason in its status, an Event and the one "blocked"
  comment; its agent, if still at work, is cancelled.

The PR's own endings (merged → Complete, closed → Closed) are steps_pr.ending;
a deleted run is finalize.finalize_run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundry.domain import comment_text as texts
from foundry.domain import policy
from foundry.domain.phases import Phase
from foundry.operator.errors import CannotReconcile
from foundry.operator.reconcile import agentio, commentio, planio
from foundry.operator.reconcile.outcome import Outcome, Stay, Transition
from foundry.operator.reconcile.steps_approval import Refusal, announce, listed, summary, who, why_not
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def interrupt(deps: "Deps", run: RunView) -> Outcome | None:
    """A valid reject or stop ends the run from any active phase (the agent is cancelled).

    One that does not count (not an approver, older than the run, not
    confirmed by Linear) is told once, then ignored."""
    if run.phase == Phase.PENDING:
        return None  # not yet known to hold the issue's slot; the claim comes first
    refused: list[Refusal] = []
    for approval in listed(deps, run):
        spec = approval.get("spec") or {}
        decision = spec.get("decision")
        if decision not in ("reject", "stop"):
            continue
        verdict = policy.may_decide(deps.config, spec.get("approver", ""), spec.get("source", ""), decision)
        why = verdict.reason if not verdict.allowed else why_not(deps, run, approval)
        if why is not None:
            refused.append((approval, why))
            continue
        jobs = agentio.end_attempt(deps, run)
        phase = Phase.REJECTED if decision == "reject" else Phase.STOPPED
        status = {"agent": {**run.agent, "jobs": jobs}} if jobs != run.jobs else {}
        return Transition(phase, "Rejected" if decision == "reject" else "StoppedByHuman",
                          f"{decision} by {spec.get('approver')} ({spec.get('source')})",
                          status={**status, **_plan_cancelled(deps, run)})
    told = announce(deps, run, refused) if refused else None
    if told is None:
        return None
    return Stay(status={"comments": told, "message": f"decision(s) that did not count: {summary(refused)}"},
                audit="decisions-refused", audit_detail={"refused": [[who(a.get("spec") or {}), why]
                                                                     for a, why in refused]})


def check(deps: "Deps", run: RunView) -> None:
    """Raise CannotReconcile if the run refers to something the configuration no longer has."""
    repo = run.status.get("repo")
    if repo and repo not in deps.config.repositories:
        known = ", ".join(sorted(deps.config.repositories)) or "none"
        raise CannotReconcile(f"repository {repo!r} is no longer in Foundry's configuration "
                              f"(configured: {known})", reason="RepositoryRemoved")


def blocked(deps: "Deps", run: RunView, err: CannotReconcile) -> Transition:
    """The transition that ends the run for `err`."""
    message = str(err)
    status: dict = {}
    if run.attempt:
        jobs = agentio.end_attempt(deps, run)
        if jobs != run.jobs:
            status["agent"] = {**run.agent, "jobs": jobs}
    status.update(_plan_cancelled(deps, run))
    status["comments"] = commentio.post(deps, run, "blocked", texts.blocked(run.issue_key, message))
    return Transition(Phase.BLOCKED, err.reason, message, status=status, warning=True)


def execution_failed(deps: "Deps", run: RunView, reason: str, message: str, status: dict) -> Transition:
    """→ ExecutionFailed (an agent that failed every allowed attempt, a plan Job that failed), with the one
    "blocked" comment that says why: nothing else will happen on the run without a human."""
    status["comments"] = commentio.post(deps, run, "blocked", texts.blocked(run.issue_key, message))
    return Transition(Phase.EXECUTION_FAILED, reason, message, status=status, warning=True)


def _plan_cancelled(deps: "Deps", run: RunView) -> dict:
    """A plan Job still at work is stopped with the run; its record says so."""
    record = planio.cancel(deps, run)
    return {"planJob": record} if record is not None else {}
