"""Intake and analysis: Pending → Analysing → NeedsClarification | Blocked | WaitingApproval.

`claim` (Pending) records the run in the database first; the unique index on
the issue's active run decides whether it may go on or ends as a Duplicate.

`analyse` (Analysing) asks foundry.domain's pure judgements — readiness,
repository routing, risk — and turns their answers into one transition with
its one comment on the issue: the questions, or why there is no repository.
A ready, routed ticket is planned next (steps_plan): by the coding agent in a
read-only plan Job, or by the deterministic planner, per plan.mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundry.domain import comment_text as texts
from foundry.domain import readiness, risk, routing
from foundry.domain.phases import Phase
from foundry.operator import dbio
from foundry.operator.reconcile import commentio, steps_plan
from foundry.operator.reconcile.outcome import Outcome, Transition
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def claim(deps: "Deps", run: RunView) -> Outcome:
    result = dbio.insert_row(deps, run)
    if result.outcome == "duplicate":
        other = result.run
        # Audited on the run that holds the slot: the duplicate has no row of its own.
        dbio.record_on(deps, other.id, "duplicate-refused",
                       {"namespace": run.namespace, "name": run.name, "k8s_uid": run.uid})
        return Transition(
            Phase.DUPLICATE, "ActiveRunExists",
            f"issue {run.issue_key} already has run {other.namespace}/{other.name} "
            f"(attempt {other.attempt}, {other.phase}); this run does nothing",
            warning=True)
    return Transition(Phase.ANALYSING, "Claimed", f"run recorded for issue {run.issue_key}")


def analyse(deps: "Deps", run: RunView) -> Outcome:
    cfg = deps.config
    ticket = run.ticket
    ready = readiness.assess(ticket)
    if not ready.ready:
        posted = commentio.post(deps, run, "clarification", texts.clarification(run.issue_key, ready.questions))
        return Transition(Phase.NEEDS_CLARIFICATION, "MissingInformation",
                          f"{len(ready.questions)} question(s) posted on {run.issue_key}",
                          status={"questions": list(ready.questions), "comments": posted})
    route = routing.route(ticket, cfg)
    if route.repo is None:
        posted = commentio.post(deps, run, "blocked", texts.blocked(run.issue_key, route.reason))
        return Transition(Phase.BLOCKED, "NoRepository", route.reason, status={"comments": posted}, warning=True)
    areas = list(risk.areas_from_ticket(ticket, cfg))
    if cfg.agent_plans:
        return steps_plan.by_agent(deps, run, route.repo, areas)
    return steps_plan.by_heuristic(deps, run, route.repo, areas)
