"""The provider calls of a plan Job (`<run>-p<n>`): start it, read it, cancel it.

Like agentio for attempts: the provider (job | local) is idempotent per
(run, plan number), reading before it creates and adopting on 409, so a
replayed step or a second operator finds the Job the first one started.
status.planJob records the plan in flight; its number is the revision the
plan will have (status.plan.revision + 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from foundry.domain.phases import Phase
from foundry.operator.checkpoints import reached
from foundry.operator.errors import RetryLater
from foundry.operator.reconcile import jobinput
from foundry.operator.reconcile.agentio import FINISHED, api_url
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def next_number(run: RunView) -> int:
    """The number of the plan the run needs next: one more than the plan it has."""
    return int((run.status.get("plan") or {}).get("revision") or 0) + 1


def plan_input(deps: "Deps", run: RunView, number: int, repo: str) -> dict[str, Any]:
    return jobinput.build_plan(deps.config, run=run.name, issue_key=run.issue_key, number=number,
                               repo=deps.config.repositories[repo], branch=run.branch, api_url=api_url(deps),
                               ticket=run.ticket)


def start(deps: "Deps", run: RunView, number: int, repo: str) -> dict[str, Any]:
    """Start (or adopt) plan `number`; returns its record for status.planJob."""
    deps.leadership.fence()
    try:
        record = deps.agents.dispatch_plan(run.body, number, plan_input(deps, run, number, repo))
    except RetryLater:
        raise
    except ConnectionError as err:
        raise RetryLater(f"starting plan {number} of {run.name}: {err}") from err
    reached("after-plan-job-create")
    return {"number": number, **_lean(record)}


def state(deps: "Deps", run: RunView, number: int) -> dict[str, Any]:
    """The plan Job as status.planJob records it, and under 'plan' its validated plan once it succeeded."""
    try:
        found = dict(deps.agents.plan_state(run.body, number))
    except ConnectionError as err:
        raise RetryLater(f"reading plan {number} of {run.name}: {err}") from err
    out = _lean(found)
    if found.get("plan") is not None:
        out["plan"] = found["plan"]
    return out


def cancel(deps: "Deps", run: RunView) -> dict[str, Any] | None:
    """Cancel the plan in flight, if one may still run; its record marked cancelled (None: nothing to do).

    An Analysing run may have started plan n+1 without recording it (a crash between the create and
    the status write): its name is deterministic, so it is cancelled by number too; gone is fine."""
    job = run.status.get("planJob") or {}
    if job.get("number") == next_number(run) and job.get("state") not in FINISHED:
        number = int(job["number"])
    elif run.phase == Phase.ANALYSING and deps.config.agent_plans:
        number, job = next_number(run), {}
    else:
        return None
    deps.leadership.fence()
    try:
        deps.agents.cancel_plan(run.body, number)
    except ConnectionError as err:
        raise RetryLater(f"cancelling plan {number} of {run.name}: {err}") from err
    return {**job, "number": number, "state": "cancelled"} if job else None


# What status.planJob records of a provider's answer (the plan itself goes to status.plan).
RECORDED = ("name", "state", "startedAt", "finishedAt", "reason", "message", "cause", "outcome", "step")


def _lean(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: record[k] for k in RECORDED if record.get(k) is not None}
    if out.get("reason"):
        out["reason"] = str(out["reason"])[:1024]
    if out.get("message"):
        out["message"] = str(out["message"])[:1024]
    return out


def replacing(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """`new` as a merge patch over `old`: the keys only `old` has are deleted (null), not kept."""
    return {**{k: None for k in (old or {}) if k not in new}, **new}
