"""The reconcile driver: read the run, take steps until it waits, write each result.

Each step is a plain function of (deps, run) in a steps_* module, one module
per group of phases, read in this order: steps_intake (Pending, Analysing),
steps_approval (WaitingApproval), steps_agent (Approved, AgentRunning), steps_pr
(PROpen, ReviewRequired), steps_endings (what ends a run from any phase). A
step performs its side effects check-before-act and returns an Outcome;
`commit` records it. A run therefore advances through as many phases as it can
in one call (intake straight to WaitingApproval, say). Each step is decided on
what the API server holds: the first on a fresh read, each next one on the
API server's answer to the previous step's status write (which is the object
as it stands after that write, with its new resourceVersion; not reading it
again saves a GET per step). Every write is conditional on that
resourceVersion, so a change by anyone else in between makes the next write a
409, and the loop then reads the run again and recomputes the step.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from foundry.agents.provider import AgentUnavailable
from foundry.domain.phases import Phase
from foundry.operator import dbio
from foundry.operator.errors import CannotReconcile, RetryLater
from foundry.operator.events import post_event
from foundry.operator.kubeio import Conflict, get_run, patch_run_status
from foundry.operator.reconcile import steps_agent, steps_approval, steps_intake, steps_pr
from foundry.operator.reconcile.commit import commit
from foundry.operator.reconcile.outcome import Outcome, Stay, Transition
from foundry.operator.reconcile.passcache import one_pass
from foundry.operator.reconcile.steps_endings import blocked, check, interrupt
from foundry.operator.reconcile.view import RunView
from foundry.operator.status import merge_conditions

if TYPE_CHECKING:
    from foundry.operator.deps import Deps

log = logging.getLogger(__name__)

# Longest legal chain is Pending → Analysing → WaitingApproval → Approved →
# AgentRunning → PROpen → Complete; the slack absorbs write conflicts.
MAX_STEPS = 12

Step = Callable[["Deps", RunView], Outcome]

# The step of each active phase, in the order a run meets them. Before it,
# every pass asks steps_endings.check (a configuration the run no longer fits)
# and steps_endings.interrupt (a human's reject or stop).
STEPS: dict[Phase, Step] = {
    Phase.PENDING: steps_intake.claim,
    Phase.ANALYSING: steps_intake.analyse,
    Phase.WAITING_APPROVAL: steps_approval.await_approvals,
    Phase.APPROVED: steps_agent.dispatch,
    Phase.AGENT_RUNNING: steps_agent.watch_agent,
    Phase.PR_OPEN: steps_pr.watch_pr,
    Phase.REVIEW_REQUIRED: steps_pr.watch_pr,
}


def reconcile_run(deps: "Deps", namespace: str, name: str) -> Phase | None:
    """Advance one run as far as it can go now; returns its phase (None: gone)."""
    return reconcile(deps, namespace, name)[0]


def reconcile(deps: "Deps", namespace: str, name: str,
              body: dict[str, Any] | None = None) -> tuple[Phase | None, dict[str, Any] | None]:
    """reconcile_run, also returning the run as last read or written (None: gone), so that a
    caller can schedule its next wake without reading it again. `body`, when given, is a read
    of the run fresh enough to decide the first step on (the finalizer write's answer)."""
    with deps.locks.hold(namespace, name), one_pass():
        started = time.monotonic()
        try:
            return _advance(deps, namespace, name, body)
        except RetryLater:
            deps.metrics.reconcile_errors.labels(kind="retry").inc()
            raise
        except AgentUnavailable as err:
            # Any step may read or cancel an attempt (a stop cancels it from any phase): an
            # unreachable agent backend is an outage like the others, retried, not a crash.
            deps.metrics.reconcile_errors.labels(kind="retry").inc()
            raise RetryLater(f"the agent backend for {namespace}/{name}: {err}") from err
        except CannotReconcile:
            deps.metrics.reconcile_errors.labels(kind="permanent").inc()
            raise
        except Exception:
            deps.metrics.reconcile_errors.labels(kind="unexpected").inc()
            raise
        finally:
            deps.metrics.reconcile_seconds.observe(time.monotonic() - started)


def _advance(deps: "Deps", namespace: str, name: str,
             body: dict[str, Any] | None) -> tuple[Phase | None, dict[str, Any] | None]:
    phase: Phase | None = None
    for _ in range(MAX_STEPS):
        if body is None:
            body = get_run(deps.api, namespace, name)
            if body is None:
                deps.metrics.observe_phase(namespace, name, None)
                return None, None
        run = RunView(body)
        phase = run.phase
        deps.metrics.observe_phase(namespace, name, phase.value)
        if body["metadata"].get("deletionTimestamp") or phase.is_terminal:
            return phase, body
        permanent: CannotReconcile | None = None
        try:
            check(deps, run)
            outcome = interrupt(deps, run) or STEPS[phase](deps, run)
        except CannotReconcile as err:
            permanent, outcome = err, blocked(deps, run, err)
        try:
            if isinstance(outcome, Transition):
                body = commit(deps, run, outcome).body
                if permanent is not None:
                    raise permanent
                continue
            assert isinstance(outcome, Stay)
            if outcome.audit:
                dbio.record_decision(deps, run, outcome.audit, outcome.audit_detail)
            status = outcome.status
            if outcome.conditions:
                status = {**status, "conditions": merge_conditions(run.status.get("conditions"), outcome.conditions,
                                                                   deps.clock())}
            if status:
                body = patch_run_status(deps.api, body, status)
            for reason, message, warning in outcome.events:  # after the write: a 409 recomputes the step
                post_event(deps.api, body, reason, message, type_="Warning" if warning else "Normal")
            return phase, body
        except Conflict:
            log.debug("run %s/%s changed under us; re-reading", namespace, name)
            body = None
            continue
    return phase, body
