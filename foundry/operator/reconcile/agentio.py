"""The agent provider calls a step needs: may an attempt start (the policy gate),
start it, read it, cancel it.

The provider (foundry.agents: job | webhook | local) is idempotent per
(run, attempt): for Jobs, `<run>-a<attempt>` is read before it is created and
409 means adopt. The fault point sits after the start and before the status
write that records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from foundry.agents.provider import attempt_name
from foundry.agents.result import totals
from foundry.domain import plan_status, policy
from foundry.operator.errors import CannotReconcile, RetryLater
from foundry.operator.checkpoints import reached
from foundry.operator.reconcile import jobinput
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def api_url(deps: "Deps") -> str:
    """The GitHub API the operator itself uses (FOUNDRY_GITHUB_URL over github.api_url); the agent gets the same."""
    return str(getattr(deps.github, "base_url", None) or deps.config.github.api_url)


def job_input(deps: "Deps", run: RunView, attempt: int, *, pr_number: int | None = None,
              feedback: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """input.json version 2 for attempt `attempt` (foundry.operator.reconcile.jobinput)."""
    repo = deps.config.repositories[run.status["repo"]]
    return jobinput.build(deps.config, run=run.name, issue_key=run.issue_key, attempt=attempt, repo=repo,
                          branch=run.branch, api_url=api_url(deps), ticket=run.ticket,
                          plan=run.status.get("plan") or {}, pr_number=pr_number, feedback=feedback)


def gate(deps: "Deps", run: RunView, next_attempt: int, jobs: list[dict] | None = None) -> policy.Verdict:
    """policy.gate's verdict for starting attempt `next_attempt` of this run; `jobs`, when
    given, are the attempts as just re-read (their spend counts before it is recorded)."""
    return policy.gate(
        deps.config,
        approved=(run.status.get("approvals") or {}).get("received", 0) >= (run.status.get("approvals") or {}).get(
            "required", 1) and bool((run.status.get("approvals") or {}).get("required")),
        ready=not run.status.get("questions"),
        repo=run.status.get("repo"),
        risk_areas=list(run.status.get("riskAreas") or []),
        attempt=next_attempt,
        spent=totals(jobs) if jobs is not None else run.agent.get("budgetUsed"),
    )


def approved_plan(run: RunView) -> str:
    """The hash of the plan the run may apply: status.plan as it stands hashes to what it claims, and
    that hash is the one the approvals counted (status.approvals.planHash). Every attempt starts
    here (the first from Approved, every retry and remediation after it), so no path into
    AgentRunning applies a plan nobody approved; CannotReconcile (the run ends Blocked) otherwise."""
    plan = run.status.get("plan") or {}
    try:
        actual = plan_status.verified_hash(plan)
    except plan_status.PlanIntegrityError as err:
        raise CannotReconcile(f"no attempt starts: {err}", reason="PlanNotApproved") from None
    approved = (run.status.get("approvals") or {}).get("planHash")
    if approved != actual:
        raise CannotReconcile(f"no attempt starts: the approvals counted were for plan "
                              f"{plan_status.short(approved or '')}, not plan {plan_status.short(actual)}",
                              reason="PlanNotApproved")
    return actual


def start(deps: "Deps", run: RunView, attempt: int, *, pr_number: int | None = None,
          feedback: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Start (or adopt) attempt `attempt` of the approved plan; returns the job record for status.agent.jobs."""
    approved_plan(run)
    deps.leadership.fence()  # also for the webhook and local providers, which do not write through deps.api
    try:
        record = deps.agents.dispatch(run.body, attempt,
                                      job_input(deps, run, attempt, pr_number=pr_number, feedback=feedback))
    except RetryLater:
        raise
    except ConnectionError as err:
        raise RetryLater(f"starting agent attempt {attempt} of {run.name}: {err}") from err
    reached("after-job-create")
    return dict(record)


def state(deps: "Deps", run: RunView, attempt: int) -> dict[str, Any]:
    """{'state': running|succeeded|failed|missing, 'finishedAt': ...}."""
    return dict(deps.agents.state(run.body, attempt))


# States after which an attempt's record never changes again.
FINISHED = frozenset({"succeeded", "failed", "cancelled", "missing"})


def refreshed_jobs(deps: "Deps", run: RunView) -> list[dict[str, Any]]:
    """status.agent.jobs with every unfinished attempt re-read from the provider,
    so `foundry runs show` never reports a long-finished agent as running."""
    out = []
    for job in run.jobs:
        if job.get("attempt") and job.get("state") not in FINISHED:
            job = {**job, **state(deps, run, int(job["attempt"]))}
        out.append(job)
    return out


def cancel(deps: "Deps", run: RunView) -> None:
    if run.attempt:
        deps.leadership.fence()
        deps.agents.cancel(run.body, run.attempt)


def cancel_running(deps: "Deps", run: RunView, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cancel the current attempt if it still runs; `jobs` with it marked
    cancelled. A finished Job is left alone: its record and logs stay."""
    for job in jobs:
        if job.get("attempt") == run.attempt and job.get("state") == "running":
            cancel(deps, run)
            return with_job(jobs, {**job, "state": "cancelled"})
    return jobs


def unrecorded(deps: "Deps", run: RunView) -> dict[str, Any] | None:
    """The attempt after the recorded one, if it was started but never recorded.

    Starting an attempt and recording it are two writes: a crash, or a status
    write refused as a conflict, in between leaves a Job (`<run>-a<n>`) that
    status does not name. Its name is deterministic, so it is found by asking
    the provider for attempt `status.agent.attempt + 1`; a replayed step adopts
    it the same way (the provider reads before it creates)."""
    nxt = run.attempt + 1
    if any(j.get("attempt") == nxt for j in run.jobs):
        return None
    found = state(deps, run, nxt)
    if found.get("state") == "missing":
        return None
    return {"name": attempt_name(run.name, nxt), "attempt": nxt, **found}


def cancel_unrecorded(deps: "Deps", run: RunView, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cancel an attempt started but never recorded (see `unrecorded`); `jobs` with it recorded."""
    stray = unrecorded(deps, run)
    if stray is None:
        return jobs
    if stray.get("state") == "running":
        deps.leadership.fence()
        deps.agents.cancel(run.body, stray["attempt"])
        stray = {**stray, "state": "cancelled"}
    return with_job(jobs, stray)


def end_attempt(deps: "Deps", run: RunView) -> list[dict[str, Any]]:
    """The run ends by a human's hand: cancel its current attempt if it is
    still at work; returns status.agent.jobs recording that. A finished Job is
    kept, with its record and logs."""
    jobs = cancel_unrecorded(deps, run, refreshed_jobs(deps, run))
    if run.attempt and not any(j.get("attempt") == run.attempt for j in jobs):
        cancel(deps, run)  # started but never recorded (a crash in between): it may be at work
        return jobs
    return cancel_running(deps, run, jobs)


def agent_status(agent: Mapping[str, Any], jobs: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    """status.agent with `jobs`, and budgetUsed summed from their results (tokens and cost)."""
    out = {**agent, **changes, "jobs": jobs}
    if any("tokens" in j or "costUsd" in j for j in jobs) or "budgetUsed" in agent:
        out["budgetUsed"] = totals(jobs)
    return out


def with_job(jobs: list[dict[str, Any]], record: dict[str, Any]) -> list[dict[str, Any]]:
    """status.agent.jobs with `record` added or updated (keyed by attempt)."""
    out = [j for j in jobs if j.get("attempt") != record.get("attempt")]
    out.append(record)
    return sorted(out, key=lambda j: j.get("attempt", 0))
