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

from foundry.operator import dbio, linear_state
from foundry.operator.events import post_event
from foundry.operator.kubeio import patch_run_status
from foundry.operator.reconcile.outcome import Transition
from foundry.operator.reconcile.view import RunView
from foundry.operator.status import conditions_for, merge_conditions

if TYPE_CHECKING:
    from foundry.operator.deps import Deps

log = logging.getLogger(__name__)


def commit(deps: "Deps", run: RunView, t: Transition) -> None:
    before = run.phase
    dbio.record_transition(deps, run, before, t)
    linear_state.sync(deps, run, t.to)
    status = dict(t.status)
    status.update({
        "phase": t.to.value,
        "reason": t.reason,
        "message": t.message,
        "observedGeneration": run.meta.get("generation"),
        "conditions": merge_conditions(run.status.get("conditions"), conditions_for(t.to, t.reason, t.message),
                                       deps.clock()),
    })
    patch_run_status(deps.api, run.body, status)
    log.info("run %s/%s: %s → %s (%s) %s", run.namespace, run.name, before.value, t.to.value, t.reason, t.message,
             extra={"fields": {"namespace": run.namespace, "run": run.name, "issue": run.issue_key,
                               "from": before.value, "to": t.to.value, "reason": t.reason}})
    post_event(deps.api, run.body, t.reason, f"{before.value} → {t.to.value}: {t.message}",
               type_="Warning" if t.warning else "Normal")
    deps.metrics.transitions.labels(from_phase=before.value, to_phase=t.to.value).inc()
    deps.metrics.observe_phase(run.namespace, run.name, t.to.value)
