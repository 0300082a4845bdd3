"""AgentRunning: the agent works on the branch; GitHub tells us when it has.

A PR whose head is new (not a SHA we are remediating) is judged like any PR.
Without one: a failed attempt is retried within the caps, else
ExecutionFailed; a finished attempt that leaves no new commit within the
timeout is ExecutionFailed. Either way the ticket gets the one "blocked"
comment that says why: nothing else will happen on it without a human.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from foundry.domain import comments as texts
from foundry.domain.phases import Phase
from foundry.operator.reconcile import agentio, comments, pr
from foundry.operator.reconcile.dispatch import gate
from foundry.operator.reconcile.outcome import Outcome, Stay, Transition
from foundry.operator.reconcile.prtruth import fetch
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def watch_agent(deps: "Deps", run: RunView) -> Outcome:
    truth = fetch(deps, run)
    if truth is not None:
        end = pr.ending(deps, run, truth)
        if end is not None:
            return end
        if truth.head_sha not in run.remediations:
            return pr.judge(deps, run, truth)
    base = pr.synced(deps, run, truth)
    jobs = base.get("agent", run.agent).get("jobs") or []
    job = next((j for j in jobs if j.get("attempt") == run.attempt), None)
    if job is None:  # not recorded (cannot normally happen): ask the provider
        job = {**_current(run), **agentio.state(deps, run, run.attempt)}
        jobs = agentio.with_job(jobs, job)
    if job["state"] in ("failed", "missing"):  # missing: the Job was deleted under us
        nxt = run.attempt + 1
        verdict = gate(deps, run, nxt)
        if not verdict.allowed:
            return _failed(deps, run, "AgentFailed", f"attempt {run.attempt} failed; {verdict.reason}",
                           {**base, "agent": {**run.agent, "jobs": jobs}})
        record = agentio.start(deps, run, nxt)
        agent = {**run.agent, "attempt": nxt, "jobs": agentio.with_job(jobs, record)}
        return Stay(status={**base, "agent": agent}, audit="agent-retry",
                    audit_detail={"failed_attempt": run.attempt, "attempt": nxt})
    if job["state"] == "succeeded":
        finished = job.get("finishedAt")
        limit = timedelta(seconds=deps.config.timeouts.pr_wait_seconds)
        if finished and deps.clock() - datetime.fromisoformat(finished.replace("Z", "+00:00")) > limit:
            return _failed(deps, run, "NoPullRequest", f"attempt {run.attempt} finished but no new commit on "
                           f"{run.branch} within {int(limit.total_seconds())}s", base)
    if jobs != run.jobs or base.get("pr") not in (None, run.pr):
        base.pop("agent", None)
        return Stay(status={**base, "agent": {**run.agent, "jobs": jobs}})
    return Stay()


def _failed(deps: "Deps", run: RunView, reason: str, message: str, status: dict) -> Transition:
    status["comments"] = comments.post(deps, run, "blocked", texts.blocked(run.issue_key, message))
    return Transition(Phase.EXECUTION_FAILED, reason, message, status=status, warning=True)


def _current(run: RunView) -> dict:
    for job in run.jobs:
        if job.get("attempt") == run.attempt:
            return job
    return {"attempt": run.attempt}
