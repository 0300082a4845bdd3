"""Statuses that lag an ended row are brought to it.

The row is written before the status. After a crash between the two, the
restarted operator recomputes the step; if that now only stays (its inputs
changed meanwhile), nothing writes the status, and the run shows an active
phase while its row, and the issue's slot, are already released. Here the
runs this operator sees as active are checked against their rows, a page at
a time on the (namespace, name) unique index, and each lagging one gets the
row's ending written to its status by the ordinary commit (which finds the row
already there and adds no audit event).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from sqlalchemy import select

from foundry.db.audit import RunEnded
from foundry.db.engine import session_factory
from foundry.db.models import Run
from foundry.domain.phases import ACTIVE_PHASE_NAMES
from foundry.operator import dbio
from foundry.operator.kubeio import Conflict, get_run
from foundry.operator.reconcile.commit import commit
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def ended_rows(deps: "Deps", runs: list[tuple[str, str]], page: int) -> list[tuple[str, str, str]]:
    """(namespace, name, row phase) for those of `runs` whose row is terminal."""
    by_namespace: dict[str, list[str]] = defaultdict(list)
    for namespace, name in runs:
        by_namespace[namespace].append(name)
    found: list[tuple[str, str, str]] = []
    with session_factory(deps.engine)() as session:
        for namespace, names in by_namespace.items():
            for start in range(0, len(names), page):
                rows = session.execute(select(Run.name, Run.phase).where(
                    Run.namespace == namespace, Run.name.in_(names[start:start + page]),
                    Run.phase.not_in(ACTIVE_PHASE_NAMES)))
                found.extend((namespace, name, phase) for name, phase in rows)
    return found


def settle_ended_rows(deps: "Deps", runs: list[tuple[str, str]], page: int = 500) -> list[str]:
    settled: list[str] = []
    for namespace, name, phase in ended_rows(deps, runs, page):
        with deps.locks.hold(namespace, name):
            body = get_run(deps.api, namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                continue
            run = RunView(body)
            if run.phase.is_terminal:
                continue  # settled by a reconcile meanwhile
            transition = dbio.following_row(deps, run, RunEnded((namespace, name), phase, run.phase.value))
            try:
                commit(deps, run, transition)
            except Conflict:
                continue  # changed under us: the next round looks again
            settled.append(f"{namespace}/{name}")
    return settled
