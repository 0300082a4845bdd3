"""Dispatch and agent: Approved → AgentRunning, and AgentRunning until a PR or an ending.

`dispatch` (Approved) asks the policy gate (default deny) and starts attempt 1.

`watch_agent` (AgentRunning): the agent works on the branch; GitHub tells us
when it has. A PR whose head is new (not a SHA we are remediating) is judged
like any PR (steps_pr). Without one, the attempt's result (its pod's
termination message) decides: `refused` (the change broke policy before push)
→ Blocked; `failed` or `no-changes`, or a Job that failed without a result, →
retried within the caps, else ExecutionFailed with the reason (AgentOOMKilled
or AgentDeadlineExceeded when the cluster ended the last attempt, else
AgentFailed); a pod the cluster refused (admission) → ExecutionFailed at once,
since a retry would be refused too; a finished attempt that leaves no new
commit within the timeout → ExecutionFailed. Each ending gets the one
"blocked" comment that says why: nothing else will happen on it without a
human.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from foundry.agents.provider import DEADLINE_EXCEEDED, OOM_KILLED, POD_REFUSED
from foundry.domain import comment_text as texts
from foundry.domain.phases import Phase
from foundry.operator.reconcile import agentio, commentio, feedback, steps_pr
from foundry.operator.reconcile.outcome import Outcome, Stay, Transition
from foundry.operator.reconcile.prtruth import PRTruth, fetch
from foundry.operator.reconcile.steps_endings import execution_failed
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def dispatch(deps: "Deps", run: RunView) -> Outcome:
    attempt = max(run.attempt, 1)
    verdict = agentio.gate(deps, run, attempt)
    if not verdict.allowed:
        return Transition(Phase.BLOCKED, "PolicyDenied", verdict.reason, warning=True)
    record = agentio.start(deps, run, attempt)
    agent = agentio.agent_status(run.agent, agentio.with_job(run.jobs, record), attempt=attempt)
    return Transition(Phase.AGENT_RUNNING, "AgentStarted", f"attempt {attempt}: {record.get('name')}",
                      status={"agent": agent, "pr": {"branch": run.branch}})


def watch_agent(deps: "Deps", run: RunView) -> Outcome:
    truth = fetch(deps, run)
    if truth is not None:
        end = steps_pr.ending(deps, run, truth)
        if end is not None:
            return end
        if truth.head_sha not in run.remediations:
            return steps_pr.judge(deps, run, truth)
    base = steps_pr.synced(deps, run, truth)
    jobs = base.get("agent", run.agent).get("jobs") or []
    job = next((j for j in jobs if j.get("attempt") == run.attempt), None)
    if job is None:  # not recorded (cannot normally happen): ask the provider
        job = {**_current(run), **agentio.state(deps, run, run.attempt)}
        jobs = agentio.with_job(jobs, job)
    if job.get("reason") == POD_REFUSED:
        # The same pod would be refused again: no retry. Deleting the Job stops the controller's attempts.
        agentio.cancel(deps, run)
        message = f"attempt {run.attempt}: the agent pod was refused by the cluster: {job.get('message') or ''}"
        return execution_failed(deps, run, "AgentPodRefused", message.rstrip(": "),
                       {**base, "agent": agentio.agent_status(run.agent, jobs)})
    if job.get("outcome") == "refused":
        why = f"attempt {run.attempt} was refused before push: {job.get('reason') or 'policy'}"
        status = {**base, "agent": agentio.agent_status(run.agent, jobs)}
        status["comments"] = commentio.post(deps, run, "blocked", texts.blocked(run.issue_key, why))
        return Transition(Phase.BLOCKED, "ChangeRefused", why, status=status, warning=True)
    if job["state"] in ("failed", "missing") or job.get("outcome") in ("failed", "no-changes"):
        why = _why(run.attempt, job)
        nxt = run.attempt + 1
        verdict = agentio.gate(deps, run, nxt, jobs)
        if not verdict.allowed:
            reason = FAILURE_REASONS.get(job.get("cause"), "AgentFailed")
            return execution_failed(deps, run, reason, f"{why}; {verdict.reason}",
                           {**base, "agent": agentio.agent_status(run.agent, jobs)})
        record = agentio.start(deps, run, nxt, **_remediation(deps, run, truth))
        agent = agentio.agent_status(run.agent, agentio.with_job(jobs, record), attempt=nxt)
        return Stay(status={**base, "agent": agent, "message": f"{why}; retrying as attempt {nxt}"},
                    audit="agent-retry", audit_detail={"failed_attempt": run.attempt, "attempt": nxt, "why": why})
    if job["state"] == "succeeded":
        finished = job.get("finishedAt")
        limit = timedelta(seconds=deps.config.timeouts.pr_wait_seconds)
        if finished and deps.clock() - datetime.fromisoformat(finished.replace("Z", "+00:00")) > limit:
            return execution_failed(deps, run, "NoPullRequest", f"attempt {run.attempt} finished but no new commit on "
                           f"{run.branch} within {int(limit.total_seconds())}s", base)
    if jobs != run.jobs or base.get("pr") not in (None, run.pr):
        base.pop("agent", None)
        return Stay(status={**base, "agent": agentio.agent_status(run.agent, jobs)})
    return Stay()


# The run's reason when its last attempt was ended by the cluster (status.agent.jobs[].cause).
FAILURE_REASONS = {OOM_KILLED: "AgentOOMKilled", DEADLINE_EXCEEDED: "AgentDeadlineExceeded"}


def _why(attempt: int, job: dict) -> str:
    """One line on how an attempt ended, from its result (or its Job when it left none)."""
    reason = job.get("reason") or job.get("message")
    if job.get("state") == "missing":
        return f"attempt {attempt}'s Job disappeared"
    verb = "made no changes" if job.get("outcome") == "no-changes" else "failed"
    return f"attempt {attempt} {verb}: {reason}" if reason else f"attempt {attempt} {verb}"


def _remediation(deps: "Deps", run: RunView, truth: PRTruth | None) -> dict:
    """A retry on a branch that already has a PR works on that PR, told what fails on it."""
    if truth is None:
        return {}
    failing = truth.checks == "failure" or truth.review == "changes_requested"
    if not failing:
        return {"pr_number": truth.number}
    reason = "CI failed" if truth.checks == "failure" else "changes requested"
    repo = deps.config.repositories[run.status["repo"]].github
    return {"pr_number": truth.number, "feedback": feedback.gather(deps, repo, truth, reason)}


def _current(run: RunView) -> dict:
    for job in run.jobs:
        if job.get("attempt") == run.attempt:
            return job
    return {"attempt": run.attempt}
