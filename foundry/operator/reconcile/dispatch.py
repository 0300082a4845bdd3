"""Approved → AgentRunning: the policy gate (default deny), then the agent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundry.agents.result import totals
from foundry.domain import policy
from foundry.domain.phases import Phase
from foundry.operator.reconcile import agentio
from foundry.operator.reconcile.outcome import Outcome, Transition
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def gate(deps: "Deps", run: RunView, next_attempt: int, jobs: list[dict] | None = None):
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


def dispatch(deps: "Deps", run: RunView) -> Outcome:
    attempt = max(run.attempt, 1)
    verdict = gate(deps, run, attempt)
    if not verdict.allowed:
        return Transition(Phase.BLOCKED, "PolicyDenied", verdict.reason, warning=True)
    record = agentio.start(deps, run, attempt)
    agent = agentio.agent_status(run.agent, agentio.with_job(run.jobs, record), attempt=attempt)
    return Transition(Phase.AGENT_RUNNING, "AgentStarted", f"attempt {attempt}: {record.get('name')}",
                      status={"agent": agent, "pr": {"branch": run.branch}})
