"""The operator's housekeeping: the reaper, status settling, delivery pruning and finished-run GC, on a timer.

One background thread per operator, started by the startup handler: a round
at once (the reaper must run before intakes pile onto a dead run after a
restore), then one every `retention.interval_seconds`. With leader election
only the leader's rounds run (a standby looks every few seconds, so a new
leader starts at once); each part is safe to run twice at once anyway
(conditional row closes, SKIP LOCKED batches, deletes with a uid
precondition), for replicas that run standalone.

A dependency that is down (the database, the API server) makes a part skip
its round with a warning; the next round tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException
from sqlalchemy.exc import SQLAlchemyError
from urllib3.exceptions import HTTPError as Urllib3Error

from foundry.config import Retention
from foundry.db.deliveries import prune_deliveries
from foundry.operator import reaper, retention
from foundry.operator.leadership import NotLeading
from foundry.periodic import Periodic

if TYPE_CHECKING:
    from foundry.operator.deps import Deps

log = logging.getLogger(__name__)

# What "a dependency is down" looks like from here; anything else is a bug and is logged as one.
# NotLeading: the Lease was lost during the round; the new leader's rounds carry on.
OUTAGES: tuple[type[BaseException], ...] = (SQLAlchemyError, ApiException, Urllib3Error, OSError, NotLeading)


@dataclass
class RoundReport:
    reaped: list[tuple[str, str, str]] = field(default_factory=list)
    deliveries_pruned: int = 0
    runs_deleted: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)  # statuses brought to their ended rows
    skipped: list[str] = field(default_factory=list)  # the parts a dependency kept from running


def settings(deps: "Deps") -> Retention:
    return getattr(deps.config, "retention", None) or Retention()


def reap_once(deps: "Deps") -> reaper.ReapReport:
    r = settings(deps)
    return reaper.reap(deps, grace=timedelta(seconds=r.reap_grace_seconds), batch_size=r.batch_size,
                       max_batches=r.max_batches)


def prune_once(deps: "Deps") -> int:
    r = settings(deps)
    if not r.deliveries_seconds:
        return 0
    return prune_deliveries(deps.engine, timedelta(seconds=r.deliveries_seconds), r.batch_size,
                            clock=deps.clock, max_batches=r.max_batches)


def settle_once(deps: "Deps") -> list[str]:
    """Bring the status of runs whose row already ended (a crash between the row
    write and the status write, then a step that only stays) to the row's phase."""
    from foundry.domain.phases import ACTIVE_PHASE_NAMES
    from foundry.operator.settle import settle_ended_rows

    return settle_ended_rows(deps, deps.metrics.runs_in(ACTIVE_PHASE_NAMES), settings(deps).batch_size)


def collect_once(deps: "Deps", namespaces: Iterable[str]) -> list[str]:
    r = settings(deps)
    if not r.runs_seconds:
        return []
    deleted: list[str] = []
    budget = r.batch_size * r.max_batches
    for namespace in sorted(set(namespaces)):
        if len(deleted) >= budget:
            break
        report = retention.collect_finished_runs(
            deps.api, deps.engine, namespace, older_than=timedelta(seconds=r.runs_seconds), now=deps.clock(),
            page_size=r.batch_size, max_deletes=budget - len(deleted))
        deleted.extend(f"{namespace}/{name}" for name in report.deleted)
    return deleted


def run_round(deps: "Deps", namespaces: Callable[[], Iterable[str]]) -> RoundReport:
    """One round; each part runs even if an earlier one met an outage."""
    out = RoundReport()

    def part(name: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except OUTAGES as err:
            out.skipped.append(name)
            log.warning("housekeeping: %s skipped this round: %s", name, _short(err))
            return None

    reaped = part("reaper", lambda: reap_once(deps))
    out.reaped = reaped.closed if reaped else []
    out.settled = part("status settling", lambda: settle_once(deps)) or []
    out.deliveries_pruned = part("delivery pruning", lambda: prune_once(deps)) or 0
    out.runs_deleted = part("run GC", lambda: collect_once(deps, namespaces())) or []
    return out


def _short(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


STANDBY = "standby"
STANDBY_LOOK = 2.0  # seconds


class Housekeeper:
    """The background thread (foundry.periodic). `namespaces` says where to look for finished runs."""

    def __init__(self, deps: "Deps", namespaces: Callable[[], Iterable[str]]) -> None:
        self.deps = deps
        self.namespaces = namespaces
        # A standby looks again soon, so a new leader's first round (the reaper) comes
        # within seconds of its taking over, not an interval later.
        self._thread = Periodic("foundry-housekeeping", self._round,
                                lambda ran: STANDBY_LOOK if ran is STANDBY else settings(self.deps).interval_seconds,
                                log)

    def _round(self) -> str | None:
        if not self.deps.leadership.leading():
            return STANDBY  # a standby leaves it to the leader (its writes would be fenced anyway)
        report = run_round(self.deps, self.namespaces)
        if report.reaped or report.deliveries_pruned or report.runs_deleted:
            log.info("housekeeping: %d row(s) reaped, %d deliveries pruned, %d finished run(s) deleted",
                     len(report.reaped), report.deliveries_pruned, len(report.runs_deleted))

    def start(self) -> "Housekeeper":
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._thread.stop(timeout)


def start(deps: "Deps", memo: Any) -> Housekeeper:
    """The startup handler's one call. Finished runs are looked for in the namespaces
    named in the memo (`namespaces`), else in those this operator has seen runs in."""
    named = tuple(memo.get("namespaces") or ())
    return Housekeeper(deps, lambda: named or deps.metrics.seen_namespaces()).start()


def stop(memo: Any) -> None:
    keeper = memo.get("housekeeper")
    if keeper is not None:
        keeper.stop()
