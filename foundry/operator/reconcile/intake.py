"""New run: record it in the database first; the unique index decides whether
it may be the issue's active run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundry.domain.phases import Phase
from foundry.operator import dbio
from foundry.operator.reconcile.outcome import Outcome, Transition
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def claim(deps: "Deps", run: RunView) -> Outcome:
    result = dbio.insert_row(deps, run)
    if result.outcome == "duplicate":
        other = result.run
        # Audited on the run that holds the slot: the duplicate has no row of its own.
        dbio.record_on(deps, other.id, "duplicate-refused",
                       {"namespace": run.namespace, "name": run.name, "k8s_uid": run.uid})
        return Transition(
            Phase.DUPLICATE, "ActiveRunExists",
            f"issue {run.issue_key} already has run {other.namespace}/{other.name} "
            f"(attempt {other.attempt}, {other.phase}); this run does nothing",
            warning=True)
    return Transition(Phase.ANALYSING, "Claimed", f"run recorded for issue {run.issue_key}")
