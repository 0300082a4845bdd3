"""What every agent provider offers, and the few things they share.

A provider starts one attempt of a run, reports on it, and cancels it; and,
likewise, a run's plan Job (`<run>-p<n>`, read-only). Every
call is idempotent per (run, attempt): starting an attempt that already
started adopts it, cancelling one that is gone is a no-op. The operator keeps
no other handle than (run, attempt), so a restart loses nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Protocol

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
MISSING = "missing"
STATES = (RUNNING, SUCCEEDED, FAILED, MISSING)
# The reason of an attempt whose pod the cluster refused (admission): retrying cannot help.
POD_REFUSED = "PodRefused"
# What ended a failed attempt, as the cluster reports it (status.agent.jobs[].cause).
OOM_KILLED = "OOMKilled"  # the kubelet killed a step over its memory limit
DEADLINE_EXCEEDED = "DeadlineExceeded"  # the Job controller ended the Job at activeDeadlineSeconds
CAUSES = (OOM_KILLED, DEADLINE_EXCEEDED, POD_REFUSED)


class AgentError(RuntimeError):
    """Starting or reading an attempt failed in a way retrying will not fix (bad manifest, forbidden)."""


class AgentUnavailable(ConnectionError):
    """The agent backend (API server, webhook target) is unreachable or overloaded; retry later."""


class AgentProvider(Protocol):
    """The interface the operator calls. `run` is the FoundryRun object as a dict."""

    def dispatch(self, run: Mapping[str, Any], attempt: int, job_input: Mapping[str, Any]) -> dict[str, Any]:
        """Start (or adopt) the attempt; returns its record for status.agent.jobs."""
        ...  # pragma: no cover - protocol

    def state(self, run: Mapping[str, Any], attempt: int) -> dict[str, Any]:
        """{'state': running|succeeded|failed|missing, 'startedAt', 'finishedAt', 'reason'}."""
        ...  # pragma: no cover - protocol

    def cancel(self, run: Mapping[str, Any], attempt: int) -> None:
        """Stop the attempt if it still runs; a no-op when it is gone."""
        ...  # pragma: no cover - protocol

    # -- plans (docs/decisions/0021-plan-job.md): idempotent per (run, number) in the same way

    def dispatch_plan(self, run: Mapping[str, Any], number: int, job_input: Mapping[str, Any]) -> dict[str, Any]:
        """Start (or adopt) plan `<run>-p<number>` (input.json mode plan) with a read-only token, or none,
        never the push token; returns {'name', 'number', 'state', 'startedAt', 'finishedAt'?}."""
        ...  # pragma: no cover - protocol

    def plan_state(self, run: Mapping[str, Any], number: int) -> dict[str, Any]:
        """{'state': running|succeeded|failed|missing, 'startedAt', 'finishedAt', 'reason', 'message', 'cause'}
        and the verify result's fields (outcome, step, summary, tokens, costUsd). `succeeded` comes with
        'plan': {'hash', 'json', 'markdown', 'bytes'}, validated again and its hash recomputed
        (foundry.agents.plan_result); a plan Job that succeeded without an acceptable plan is `failed`
        with reason PlanInvalid and a message saying why. A failed plan's reason is the runner's; cause
        DeadlineExceeded when it ran past plan.timeout_seconds, PodRefused when admission refused it."""
        ...  # pragma: no cover - protocol

    def cancel_plan(self, run: Mapping[str, Any], number: int) -> None:
        """Stop the plan and take its read token away; a no-op when it is gone."""
        ...  # pragma: no cover - protocol


def attempt_name(run_name: str, attempt: int) -> str:
    """`<run>-a<attempt>`: the Job name, the webhook delivery id, the local work folder."""
    return _numbered(run_name, "a", attempt, "attempt must be")


def plan_job_name(run_name: str, number: int) -> str:
    """`<run>-p<n>`: a plan Job's name (n counts the run's plans: a re-plan is n+1)."""
    return _numbered(run_name, "p", number, "a plan's number must be")


def _numbered(run_name: str, letter: str, number: int, what: str) -> str:
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"{what} a positive integer, got {number!r}")
    if not run_name:
        raise ValueError("run name is empty")
    return f"{run_name}-{letter}{number}"


def run_identity(run: Mapping[str, Any]) -> tuple[str, str, str]:
    """(name, namespace, uid) of a FoundryRun dict, with a clear error when the object is incomplete."""
    meta = run.get("metadata") if isinstance(run, Mapping) else None
    if not isinstance(meta, Mapping) or not meta.get("name") or not meta.get("namespace"):
        raise ValueError("the FoundryRun needs metadata.name and metadata.namespace")
    return str(meta["name"]), str(meta["namespace"]), str(meta.get("uid") or "")


def recorded_job(run: Mapping[str, Any], attempt: int) -> Mapping[str, Any] | None:
    """The status.agent.jobs entry for `attempt`, if the run recorded one."""
    for job in ((run.get("status") or {}).get("agent") or {}).get("jobs") or []:
        if job.get("attempt") == attempt:
            return job
    return None


def utc_iso(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def record(name: str, attempt: int, state: str, started_at: str | None, finished_at: str | None = None,
           **extra: Any) -> dict[str, Any]:
    """A status.agent.jobs entry."""
    return _entry({"name": name, "attempt": attempt, "state": state}, started_at, finished_at, extra)


def plan_record(name: str, number: int, state: str, started_at: str | None,
                finished_at: str | None = None) -> dict[str, Any]:
    """What dispatch_plan returns: {name, number, state, startedAt, finishedAt?}."""
    return _entry({"name": name, "number": number, "state": state}, started_at, finished_at, {})


def _entry(out: dict[str, Any], started_at: str | None, finished_at: str | None,
           extra: Mapping[str, Any]) -> dict[str, Any]:
    if started_at:
        out["startedAt"] = started_at
    if finished_at:
        out["finishedAt"] = finished_at
    out.update({k: v for k, v in extra.items() if v is not None})
    return out
