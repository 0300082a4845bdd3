"""Delete: cancel the agent (and a plan Job at work), close the DB row (an active row would hold the
issue's slot forever), forget the run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from foundry.domain.phases import Phase
from foundry.operator import dbio
from foundry.operator.reconcile import agentio, planio
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def finalize_run(deps: "Deps", body: dict[str, Any]) -> None:
    run = RunView(body)
    with deps.locks.hold(run.namespace, run.name):
        if run.phase.is_active:
            agentio.cancel(deps, run)
            agentio.cancel_unrecorded(deps, run, run.jobs)
            planio.cancel(deps, run)
            dbio.close_row(deps, run, Phase.STOPPED, "Deleted")
        deps.metrics.observe_phase(run.namespace, run.name, None)
    deps.locks.forget(run.namespace, run.name)
