"""The plan: written (by the agent in a plan Job, or by the deterministic planner), posted, replaced.

Called from steps_intake.analyse once the ticket is ready and routed:

- `by_agent` (plan.mode agent): plan Job `<run>-p<n>` reads the base branch
  read-only and answers with a plan (decisions 0020, 0021). While it runs the
  run stays Analysing (status.planJob says which Job); watch_jobs wakes it
  when the Job ends. Its plan's open questions send the run to
  NeedsClarification; a plan Job that fails or runs past its deadline ends the
  run ExecutionFailed (PlanFailed, PlanDeadlineExceeded). Otherwise the
  files the plan names add their risk areas to the ticket's, so a plan that
  touches `migrations/**` needs the roles that area requires.
- `by_heuristic` (plan.mode heuristic): foundry.domain.planning, at once.

Either way `waiting` posts the plan with its hash and who may approve it.
Approvals bind to that hash (foundry.domain.plan_status); a re-plan
(steps_approval.replan) comes back here for plan n+1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from foundry.agents.provider import DEADLINE_EXCEEDED, utc_iso
from foundry.connectors.marked_comments import keyed_purpose
from foundry.domain import comment_text as texts
from foundry.domain import plan_status, planning, plans, policy, risk
from foundry.domain.phases import Phase
from foundry.operator.reconcile import commentio, planio, steps_approval
from foundry.operator.reconcile.outcome import Outcome, Stay, Transition
from foundry.operator.reconcile.steps_endings import execution_failed
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def by_heuristic(deps: "Deps", run: RunView, repo: str, areas: list[str]) -> Outcome:
    made = planning.make_plan(run.ticket, repo, areas)
    return waiting(deps, run, repo, areas, plan_status.heuristic(made, planio.next_number(run), run.ticket))


def by_agent(deps: "Deps", run: RunView, repo: str, areas: list[str]) -> Outcome:
    number = planio.next_number(run)
    job = run.status.get("planJob") or {}
    if job.get("number") != number:
        # The ticket as the plan reads it: a change while the Job runs is a re-plan once it is posted.
        record = {**planio.start(deps, run, number, repo), "ticketHash": plan_status.ticket_hash(run.ticket)}
        return Stay(status={"repo": repo, "riskAreas": areas, "planJob": planio.replacing(job, record),
                            "message": f"the agent is writing plan {number} ({record.get('name')}), read-only"})
    found = planio.state(deps, run, number)
    record = {**job, **{k: v for k, v in found.items() if k != "plan"}}
    if found["state"] == "running":
        return Stay(status={"planJob": record}) if record != job else Stay()
    if found["state"] != "succeeded":
        return _failed(deps, run, record)
    try:
        made = plans.validate(found["plan"]["json"])
    except (plans.PlanError, KeyError, TypeError) as err:  # the provider checked it; a bug must not apply it
        return _failed(deps, run, {**record, "state": "failed", "reason": "PlanInvalid", "message": str(err)})
    made_from = str(record.get("ticketHash") or plan_status.ticket_hash(run.ticket))
    plan = plan_status.from_agent(made, number, made_from, str(record.get("name") or ""))
    status: dict[str, Any] = {"planJob": record, "plan": planio.replacing(run.status.get("plan"), plan)}
    if made.needs_answers:
        posted = commentio.post(deps, run, "clarification", texts.clarification(run.issue_key, made.open_questions))
        return Transition(Phase.NEEDS_CLARIFICATION, "PlanNeedsAnswers",
                          f"the agent's plan {plan_status.short(plan['hash'])} asks {len(made.open_questions)} "
                          f"question(s), posted on {run.issue_key}",
                          status={**status, "questions": list(made.open_questions), "comments": posted})
    touched = [a for a in risk.areas_from_paths(made.paths, deps.config) if a not in areas]
    return waiting(deps, run, repo, [*areas, *touched], plan, extra=status)


def waiting(deps: "Deps", run: RunView, repo: str, areas: list[str], plan: dict[str, Any],
            extra: dict[str, Any] | None = None) -> Transition:
    """→ WaitingApproval: the plan posted with its hash, the roles its risk areas need, nobody counted yet."""
    cfg = deps.config
    required = policy.required_approvals(cfg, areas)
    body = texts.approval_request(run.issue_key, plan, areas, policy.who_may_approve(cfg, areas), required)
    revision = int(plan.get("revision") or 1)
    purpose = "approval_request" if revision == 1 else keyed_purpose("plan", f"r{revision}")
    posted = commentio.post(deps, run, purpose, body)
    plan = {**plan, "postedAt": utc_iso(deps.clock())}  # the approval window opens (timing.waiting_since)
    status = {**(extra or {}), "plan": planio.replacing(run.status.get("plan"), plan)}
    return Transition(
        Phase.WAITING_APPROVAL, "Planned",
        f"plan {plan_status.short(plan['hash'])} ({plan['source']}, revision {revision}) for {repo} posted; "
        f"needs {required} approval(s)" + (f" covering {', '.join(areas)}" if areas else ""),
        status={**status, "repo": repo, "riskAreas": areas, "questions": [],
                "approvals": {"required": required, "received": 0, "summary": f"0/{required}", "approvers": []},
                "message": steps_approval.waiting_message(0, required), "comments": posted})


def _failed(deps: "Deps", run: RunView, record: dict[str, Any]) -> Transition:
    number = record.get("number")
    deadline = record.get("cause") == DEADLINE_EXCEEDED or record.get("reason") == DEADLINE_EXCEEDED
    if record.get("state") == "missing":
        why = f"plan Job {record.get('name')} disappeared before it reported"
    elif deadline:
        why = (f"plan {number} ran past its deadline of {deps.config.plan.timeout_seconds} s "
               f"(plan.timeout_seconds)")
    else:
        detail = record.get("message") or record.get("reason") or "no reason recorded"
        why = f"plan {number} failed: {detail}"
    return execution_failed(deps, run, "PlanDeadlineExceeded" if deadline else "PlanFailed", why,
                            {"planJob": record})
