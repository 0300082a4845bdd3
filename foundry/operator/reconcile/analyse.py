"""Analysing: readiness, repository routing, risk, plan → NeedsClarification |
Blocked | WaitingApproval, each with its one comment on the issue.

The judgements are foundry.domain's pure functions; this step only gathers
their answers, posts the comment and records the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundry.domain import comments as texts
from foundry.domain import planning, policy, readiness, risk, routing
from foundry.domain.phases import Phase
from foundry.operator.reconcile import comments
from foundry.operator.reconcile.outcome import Outcome, Transition
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def analyse(deps: "Deps", run: RunView) -> Outcome:
    cfg = deps.config
    ticket = run.ticket
    ready = readiness.assess(ticket)
    if not ready.ready:
        posted = comments.post(deps, run, "clarification", texts.clarification(run.issue_key, ready.questions))
        return Transition(Phase.NEEDS_CLARIFICATION, "MissingInformation",
                          f"{len(ready.questions)} question(s) posted on {run.issue_key}",
                          status={"questions": list(ready.questions), "comments": posted})
    route = routing.route(ticket, cfg)
    if route.repo is None:
        posted = comments.post(deps, run, "blocked", texts.blocked(run.issue_key, route.reason))
        return Transition(Phase.BLOCKED, "NoRepository", route.reason, status={"comments": posted}, warning=True)
    areas = list(risk.areas_from_ticket(ticket, cfg))
    plan = planning.make_plan(ticket, route.repo, areas)
    required = policy.required_approvals(cfg, areas)
    body = texts.approval_request(run.issue_key, plan, areas, policy.who_may_approve(cfg, areas), required)
    posted = comments.post(deps, run, "approval_request", body)
    return Transition(
        Phase.WAITING_APPROVAL, "Planned",
        f"plan for {route.repo} posted; needs {required} approval(s)"
        + (f" covering {', '.join(areas)}" if areas else ""),
        status={"repo": route.repo, "riskAreas": areas, "plan": plan, "questions": [],
                "approvals": {"required": required, "received": 0, "summary": f"0/{required}", "approvers": []},
                "comments": posted})
