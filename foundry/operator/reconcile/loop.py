"""The reconcile driver: read the run, take steps until it waits, write each result.

Each step is a plain function of (deps, run) in a phase module; it performs its
side effects check-before-act and returns an Outcome; `commit` records it. A
run therefore advances through as many phases as it can in one call (intake
straight to WaitingApproval, say), re-reading the object between steps so each
decision is made on what the API server holds.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import TYPE_CHECKING, Callable

from foundry.agents.base import AgentUnavailable
from foundry.domain.phases import Phase
from foundry.operator.errors import CannotReconcile, RetryLater
from foundry.operator.kubeio import Conflict, get_run, patch_run_status
from foundry.operator.reconcile.commit import commit
from foundry.operator.reconcile.outcome import Outcome, Stay, Transition
from foundry.operator.reconcile.passcache import one_pass
from foundry.operator.reconcile.permanent import blocked, check
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps

log = logging.getLogger(__name__)

# Longest legal chain is Pending → Analysing → WaitingApproval → Approved →
# AgentRunning → PROpen → Complete; the slack absorbs write conflicts.
MAX_STEPS = 12

Step = Callable[["Deps", RunView], Outcome]

# (module, function) per active phase. Imported on first use so a run that
# only needs the claim (a Duplicate) never loads the planning machinery.
STEPS: dict[Phase, tuple[str, str]] = {
    Phase.PENDING: ("intake", "claim"),
    Phase.ANALYSING: ("analyse", "analyse"),
    Phase.WAITING_APPROVAL: ("approvals", "await_approvals"),
    Phase.APPROVED: ("dispatch", "dispatch"),
    Phase.AGENT_RUNNING: ("agent", "watch_agent"),
    Phase.PR_OPEN: ("pr", "watch_pr"),
    Phase.REVIEW_REQUIRED: ("pr", "watch_pr"),
}


def step_for(phase: Phase) -> Step:
    module, func = STEPS[phase]
    return getattr(importlib.import_module(f"foundry.operator.reconcile.{module}"), func)


def _interrupt(deps: "Deps", run: RunView) -> Outcome | None:
    if run.phase == Phase.PENDING:
        return None
    from foundry.operator.reconcile.approvals import interrupt

    return interrupt(deps, run)


def reconcile_run(deps: "Deps", namespace: str, name: str) -> Phase | None:
    """Advance one run as far as it can go now; returns its phase (None: gone)."""
    with deps.locks.hold(namespace, name), one_pass():
        started = time.monotonic()
        try:
            return _advance(deps, namespace, name)
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


def _advance(deps: "Deps", namespace: str, name: str) -> Phase | None:
    phase: Phase | None = None
    for _ in range(MAX_STEPS):
        body = get_run(deps.api, namespace, name)
        if body is None:
            deps.metrics.observe_phase(namespace, name, None)
            return None
        run = RunView(body)
        phase = run.phase
        deps.metrics.observe_phase(namespace, name, phase.value)
        if body["metadata"].get("deletionTimestamp") or phase.is_terminal:
            return phase
        permanent: CannotReconcile | None = None
        try:
            check(deps, run)
            outcome = _interrupt(deps, run) or step_for(phase)(deps, run)
        except CannotReconcile as err:
            permanent, outcome = err, blocked(deps, run, err)
        try:
            if isinstance(outcome, Transition):
                commit(deps, run, outcome)
                if permanent is not None:
                    raise permanent
                continue
            assert isinstance(outcome, Stay)
            if outcome.audit:
                from foundry.operator import dbio

                dbio.record_decision(deps, run, outcome.audit, outcome.audit_detail)
            if outcome.status:
                patch_run_status(deps.api, body, outcome.status)
            return phase
        except Conflict:
            log.debug("run %s/%s changed under us; re-reading", namespace, name)
            continue
    return phase
