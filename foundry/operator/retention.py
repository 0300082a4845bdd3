"""Deleting finished FoundryRuns after their retention time (the timer and `foundry runs gc`).

Only the Kubernetes object goes: the database row and its audit trail stay,
so `foundry runs show` and any audit still answer for a deleted run. The
Jobs a run owns go with it (owner references); their input ConfigMaps and
token Secrets are owned by the Job and go with that.

When did a run finish? The database row's finished_at (stamped once, when it
entered a terminal phase); a run without a row (a Duplicate: the index refused
it at birth) finished when it was created. A run whose row cannot be read is
kept. Work is bounded: objects are listed a page at a time and at most
`max_deletes` are deleted per call; the next round goes on from the start,
which by then holds fewer finished runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from sqlalchemy import Engine, select

from foundry.db.engine import session_factory
from foundry.db.models import Run
from foundry.domain.phases import Phase
from foundry.operator.kubeio import GROUP, RUNS, VERSION
from foundry.operator.runview import is_paused_label


@dataclass
class GcReport:
    listed: int = 0
    deleted: list[str] = field(default_factory=list)
    kept: int = 0  # finished, but within retention (or its finish time unknown)


def _phase(obj: dict[str, Any]) -> Phase | None:
    raw = (obj.get("status") or {}).get("phase")
    try:
        return Phase(raw) if raw else None
    except ValueError:
        return None


def _created(obj: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


def finished_rows_query(namespace: str, names: list[str]):
    """The finish times of a page of runs: one lookup on the (namespace, name) unique index."""
    return select(Run.name, Run.finished_at).where(Run.namespace == namespace, Run.name.in_(names))


def finish_times(engine: Engine | None, namespace: str, names: list[str]) -> dict[str, datetime | None]:
    """name → finished_at for the runs that have a row; without a database, none have."""
    if engine is None or not names:
        return {}
    with session_factory(engine)() as session:
        return {name: at for name, at in session.execute(finished_rows_query(namespace, names))}


def due(obj: dict[str, Any], rows: dict[str, datetime | None], cutoff: datetime) -> bool:
    """Finished before `cutoff` (pure)."""
    phase = _phase(obj)
    if phase is None or phase.is_active or obj["metadata"].get("deletionTimestamp"):
        return False
    if is_paused_label(obj["metadata"].get("labels")):
        return False  # paused: the operator leaves it alone, its deletion included
    name = obj["metadata"]["name"]
    if name in rows:
        finished = rows[name]
        return finished is not None and finished < cutoff
    return phase is Phase.DUPLICATE and _created(obj) < cutoff


def collect_finished_runs(api: client.ApiClient, engine: Engine | None, namespace: str, *,
                          older_than: timedelta, now: datetime, page_size: int = 500,
                          max_deletes: int = 10_000, dry_run: bool = False) -> GcReport:
    """Delete (or with dry_run only name) up to max_deletes runs of `namespace` finished before now - older_than."""
    if page_size < 1 or max_deletes < 0:
        raise ValueError("page_size must be at least 1 and max_deletes not negative")
    objects = client.CustomObjectsApi(api)
    cutoff = now - older_than
    report = GcReport()
    token: str | None = None
    while len(report.deleted) < max_deletes:
        kwargs: dict[str, Any] = {"limit": page_size}
        if token:
            kwargs["_continue"] = token
        page = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, **kwargs)
        items = page.get("items") or []
        report.listed += len(items)
        finished = [o for o in items if (_phase(o) or Phase.PENDING).is_terminal]
        rows = finish_times(engine, namespace, [o["metadata"]["name"] for o in finished
                                                if _phase(o) is not Phase.DUPLICATE])
        for obj in finished:
            if len(report.deleted) >= max_deletes:
                break
            if not due(obj, rows, cutoff):
                report.kept += 1
                continue
            name = obj["metadata"]["name"]
            if not dry_run and not _delete(objects, namespace, name, obj["metadata"]["uid"]):
                continue
            report.deleted.append(name)
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            break
    return report


def _delete(objects: client.CustomObjectsApi, namespace: str, name: str, uid: str) -> bool:
    """Delete exactly the object that was judged (uid precondition); False if it is already gone or replaced."""
    try:
        objects.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, RUNS, name,
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid),
                                        propagation_policy="Background"))
        return True
    except ApiException as err:
        if err.status in (404, 409):  # another replica got there first, or a new object took the name
            return False
        raise
