"""A run's plan as its status records it, whoever wrote it, and what an approval must name. Pure.

Both planners give status.plan the same generic fields (goal, steps, files,
tests, outOfScope: what the diff check, the CLI and the prompt read) plus:

- `source`: `agent` (a plan Job's validated plan, foundry.domain.plans) or
  `heuristic` (foundry.domain.planning's restatement of the ticket);
- `revision`: 1 for a run's first plan, +1 for each re-plan;
- `hash`: what approvals bind to. For an agent plan it is plans.plan_hash of
  `agent` (the validated JSON form, kept so the hash can be checked again
  before anything is applied); for a heuristic plan, the same rule over the
  generic fields;
- `ticketHash`: the ticket text the plan was made from, so a changed ticket
  is noticed without asking Linear;
- `markdown` (agent plans): the plan as approvers read it and as the apply
  attempt is told it, verbatim.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from foundry.domain import plans

AGENT, HEURISTIC = "agent", "heuristic"
GOAL_MAX = 8192  # status.plan.goal: an agent's summary may be 8000 characters


def ticket_hash(ticket: Mapping[str, Any]) -> str:
    """The ticket text a plan reads: its title and description (not its labels or URL)."""
    return plans.json_hash({"title": str(ticket.get("title") or ""),
                            "description": str(ticket.get("description") or "")})


def heuristic(plan: Mapping[str, Any], revision: int, ticket: Mapping[str, Any]) -> dict[str, Any]:
    """status.plan for foundry.domain.planning's plan."""
    generic = {k: plan[k] for k in ("goal", "steps", "files", "tests", "outOfScope") if k in plan}
    return {**generic, "source": HEURISTIC, "revision": revision, "hash": plans.json_hash(generic),
            "ticketHash": ticket_hash(ticket)}


def from_agent(made: plans.AgentPlan, revision: int, made_from: str, job: str) -> dict[str, Any]:
    """status.plan for a plan Job's validated plan; `made_from`: the ticket_hash of the ticket its input held."""
    return {
        "source": AGENT, "revision": revision, "hash": plans.plan_hash(made), "job": job,
        "ticketHash": made_from, "agent": made.as_dict(), "markdown": plans.render_markdown(made),
        "goal": made.summary[:GOAL_MAX], "steps": [made.approach[:GOAL_MAX]], "files": list(made.paths),
        "tests": list(made.tests), "outOfScope": [],
    }


class PlanIntegrityError(ValueError):
    """status.plan does not hash to what it says (edited by hand, or a bug): nothing may apply it."""


def verified_hash(plan: Mapping[str, Any]) -> str:
    """The plan's hash, recomputed from what status holds; PlanIntegrityError when it differs."""
    claimed = str(plan.get("hash") or "")
    if plan.get("source") == AGENT:
        try:
            actual = plans.plan_hash(plans.validate(plan.get("agent")))
        except plans.PlanError as err:
            raise PlanIntegrityError(f"status.plan.agent is no valid plan: {err}") from None
    else:
        actual = plans.json_hash({k: plan[k] for k in ("goal", "steps", "files", "tests", "outOfScope") if k in plan})
    if not claimed or claimed != actual:
        raise PlanIntegrityError(f"status.plan.hash {claimed or '(none)'} is not the plan's hash {actual}")
    return actual


def approval_mismatch(spec: Mapping[str, Any], plan: Mapping[str, Any]) -> str | None:
    """Why an approval does not approve the current plan (None: it does).

    An approval names the hash it approves (spec.planHash; the bridge and the CLI
    stamp it). One that names none is taken for the plan only while the run has
    had one plan: once it was re-planned, nobody can tell which plan it meant."""
    named = str(spec.get("planHash") or "")
    current = str(plan.get("hash") or "")
    if named:
        if named == current:
            return None
        return f"it approves plan {short(named)}, and the plan is now {short(current)}"
    if int(plan.get("revision") or 1) <= 1:
        return None
    return (f"it names no plan hash, and the run has been re-planned (plan {short(current)}, revision "
            f"{plan.get('revision')}); approve again")


def short(plan_hash: str) -> str:
    """`sha256:0123abcd…` → `0123abcd` (what people compare by eye)."""
    return plan_hash.removeprefix(plans.HASH_PREFIX)[:12] or "(none)"
