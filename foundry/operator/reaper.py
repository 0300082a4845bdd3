"""The reaper: active database rows whose FoundryRun is gone or has ended are closed.

Such a row holds its issue's single active slot, so every later intake would
attach to a run that will never move. It happens when a create is refused
after a successful claim, when a run is deleted without its finalizer, or
when the database is restored from a backup taken mid-run.

The verdict is a pure function of the row and the object; the I/O around it
only reads and writes. Safe across replicas: a row is closed only if it is
still active and unchanged since it was read (foundry.db.audit.close_if_unchanged,
under the row lock), so two reapers with the same verdict close it once, and a
row that the operator moved meanwhile is left to the operator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from foundry.db import audit, stale
from foundry.db.records import RunRecord
from foundry.domain.phases import Phase
from foundry.operator.kubeio import GROUP, RUNS, VERSION

if TYPE_CHECKING:
    from foundry.operator.deps import Deps

log = logging.getLogger(__name__)

REASON_GONE = "RunGone"
REASON_ENDED = "RunEnded"


@dataclass(frozen=True)
class Verdict:
    phase: Phase
    reason: str
    message: str


def verdict(row: RunRecord, obj: dict[str, Any] | None) -> Verdict | None:
    """What the row must become, given its FoundryRun (None: there is none); None: leave it."""
    if obj is None:
        return Verdict(Phase.STOPPED, REASON_GONE,
                       f"FoundryRun {row.namespace}/{row.name} no longer exists; the row held the issue's slot")
    raw = (obj.get("status") or {}).get("phase")
    try:
        phase = Phase(raw) if raw else Phase.PENDING
    except ValueError:
        return None  # a phase this operator does not know: not its call
    if phase.is_terminal:
        return Verdict(phase, REASON_ENDED, f"FoundryRun {row.namespace}/{row.name} ended {phase.value}; "
                                            "the row had not followed")
    return None


@dataclass
class ReapReport:
    examined: int = 0
    closed: list[tuple[str, str, str]] = field(default_factory=list)  # (namespace, name, phase)
    skipped: int = 0  # moved meanwhile, or not readable by this operator
    requests: int = 0  # to the API server: a paged list per namespace, and a read per run not listed


def _read(api: client.ApiClient, row: RunRecord) -> tuple[bool, dict[str, Any] | None]:
    """(known, object): known is False when this operator may not read it (another's namespace)."""
    try:
        return True, client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, row.namespace, RUNS, row.name)
    except ApiException as err:
        if err.status == 404:
            return True, None
        if err.status == 403:
            return False, None
        raise


class _Listed:
    """The FoundryRuns of each namespace as one paged list per round (`page` objects a request),
    instead of one read per row: with thousands of idle runs every row is "untouched for the
    grace", and a read each would be thousands of requests a round. Only the phase is kept.

    A listing is a snapshot: a row whose run it does not show is read once more before the
    verdict "gone" (the run may have been created after the listing)."""

    def __init__(self, api: client.ApiClient, page: int) -> None:
        self.api = api
        self.page = page
        self._by_namespace: dict[str, dict[str, dict[str, Any]] | None] = {}
        self.requests = 0

    def read(self, row: RunRecord) -> tuple[bool, dict[str, Any] | None]:
        if row.namespace not in self._by_namespace:
            self._by_namespace[row.namespace] = self._list(row.namespace)
        listed = self._by_namespace[row.namespace]
        if listed is None:
            return False, None  # this operator may not list there
        obj = listed.get(row.name)
        if obj is not None:
            return True, obj
        self.requests += 1
        return _read(self.api, row)

    def _list(self, namespace: str) -> dict[str, dict[str, Any]] | None:
        objects = client.CustomObjectsApi(self.api)
        out: dict[str, dict[str, Any]] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.page}
            if token:
                kwargs["_continue"] = token
            try:
                self.requests += 1
                page = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, **kwargs)
            except ApiException as err:
                if err.status == 403:
                    return None
                if err.status == 410:  # the continue token expired: start the listing over
                    out, token = {}, None
                    continue
                raise
            for obj in page.get("items") or []:
                status = obj.get("status") or {}
                out[obj["metadata"]["name"]] = {"metadata": {"name": obj["metadata"]["name"]},
                                                "status": {"phase": status.get("phase")}}
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return out


def reap(deps: "Deps", *, grace: timedelta, batch_size: int, max_batches: int,
         now: datetime | None = None) -> ReapReport:
    """One pass over active rows untouched for `grace`, at most max_batches pages of batch_size."""
    report = ReapReport()
    untouched_since = (now or deps.clock()) - grace
    after: stale.PageKey | None = None
    listed = _Listed(deps.api, batch_size)
    for _ in range(max_batches):
        page = stale.active_rows_page(deps.engine, untouched_since, after, batch_size)
        for row in page:
            report.examined += 1
            known, obj = listed.read(row)
            found = verdict(row, obj) if known else None
            if found is None:
                report.skipped += 0 if known else 1
                continue
            closed = audit.close_if_unchanged(
                deps.engine, row.id, row.updated_at, found.phase, found.reason,
                {"message": found.message, "by": "reaper", "was": row.phase})
            if closed is None:
                report.skipped += 1
                continue
            report.closed.append((row.namespace, row.name, found.phase.value))
            log.warning("reaped the row of %s/%s: %s → %s (%s)", row.namespace, row.name, row.phase,
                        found.phase.value, found.message)
        if len(page) < batch_size:
            break
        after = (page[-1].tracker, page[-1].issue_id)
    report.requests = listed.requests
    return report
