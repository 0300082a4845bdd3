"""Recording a transition, in an order that survives a crash at any point.

1. The database row and its audit event (idempotent: the row already in the
   target phase means a previous attempt got this far, so nothing is added).
2. Linear's workflow state for key phases (setting a state is idempotent).
3. The run's status, conditional on the resourceVersion the step read.
4. A Kubernetes Event and the metrics (courtesy; may be lost in a crash).

A crash after 1 or 2 replays the step on restart; every side effect in a step
is check-before-act, so the replay finds its earlier work and records it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from foundry.db.audit import RunEnded
from foundry.operator import dbio, linear_state
from foundry.operator.events import post_event
from foundry.operator.kubeio import Conflict, get_run, patch_run_status
from foundry.operator.reconcile.outcome import Transition
from foundry.operator.reconcile.view import RunView
from foundry.operator.status import conditions_for, merge_conditions

if TYPE_CHECKING:
    from foundry.operator.deps import Deps

log = logging.getLogger(__name__)


# A terminal status write refused for a stale read is tried again on a fresh
# one; a few rounds cover a burst of concurrent writers (the bridge's hints).
TERMINAL_WRITE_ROUNDS = 5


def commit(deps: "Deps", run: RunView, t: Transition) -> RunView:
    """Record `t`; returns the run as the status write left it (the API server's answer to the
    write, resourceVersion included), so the next step starts from it without reading again."""
    before = run.phase
    try:
        dbio.record_transition(deps, run, before, t)
    except RunEnded as ended:
        # The row ended earlier and that status write was lost; a terminal row
        # never comes back (its slot may be another attempt's by now), so the
        # status follows the row instead of the recomputed step.
        log.info("run %s/%s: the database has it %s; the status follows instead of %s",
                 run.namespace, run.name, ended.phase, t.to.value)
        t = dbio.following_row(deps, run, ended)
    linear_state.sync(deps, run, t.to)
    run = _write_status(deps, run, t)
    log.info("run %s/%s: %s → %s (%s) %s", run.namespace, run.name, before.value, t.to.value, t.reason, t.message,
             extra={"fields": {"namespace": run.namespace, "run": run.name, "issue": run.issue_key,
                               "from": before.value, "to": t.to.value, "reason": t.reason}})
    post_event(deps.api, run.body, t.reason, f"{before.value} → {t.to.value}: {t.message}",
               type_="Warning" if t.warning else "Normal")
    for reason, message, warning in t.events:
        post_event(deps.api, run.body, reason, message, type_="Warning" if warning else "Normal")
    deps.metrics.transitions.labels(from_phase=before.value, to_phase=t.to.value).inc()
    deps.metrics.observe_phase(run.namespace, run.name, t.to.value)
    return run


def _write_status(deps: "Deps", run: RunView, t: Transition) -> RunView:
    """Patch the transition into the run's status; returns the run as written.

    A 409 on an active transition goes back to the loop, which recomputes the
    step from a fresh read. A terminal one is already the database's word (the
    row ended, the issue's slot is free), so recomputing could only contradict
    it: the same transition is written again on a fresh read instead.
    """
    for _ in range(TERMINAL_WRITE_ROUNDS):
        status = dict(t.status)
        status.update({
            "phase": t.to.value,
            "reason": t.reason,
            # The transition's status may say what the run now waits for (WaitingApproval's
            # "0/1 approvals"), so the next step need not write it again; the reason, the
            # condition and the Event keep the transition's own message.
            "message": t.status.get("message") or t.message,
            "observedGeneration": run.meta.get("generation"),
            "conditions": merge_conditions(run.status.get("conditions"),
                                           [*t.conditions, *conditions_for(t.to, t.reason, t.message)],
                                           deps.clock()),
        })
        try:
            return RunView(patch_run_status(deps.api, run.body, status))
        except Conflict:
            if not t.to.is_terminal:
                raise
            body = get_run(deps.api, run.namespace, run.name)
            if body is None or body["metadata"].get("deletionTimestamp") or RunView(body).phase.is_terminal:
                raise  # gone, going, or already ended by someone else: the loop's re-read settles it
            run = RunView(body)
    raise Conflict(f"FoundryRun {run.namespace}/{run.name} kept changing while its {t.to.value} was written")
