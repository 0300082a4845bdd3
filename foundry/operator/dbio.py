"""The operator's database writes, with outages turned into RetryLater.

Thin wrappers over foundry.db: they add idempotency (a transition replayed
after a crash does not append a second audit event) and map "database down"
to a retry rather than a lost transition.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator

from sqlalchemy.exc import DBAPIError, OperationalError

from foundry.db import audit, claims, serial
from foundry.db.claims import OperatorInsert
from foundry.domain.phases import Phase
from foundry.operator.errors import RetryLater
from foundry.operator.checkpoints import reached

if TYPE_CHECKING:
    from foundry.operator.deps import Deps
    from foundry.operator.reconcile.outcome import Transition
    from foundry.operator.reconcile.view import RunView


@contextmanager
def _outage_is_retry(what: str) -> Iterator[None]:
    try:
        yield
    except OperationalError as err:
        raise RetryLater(f"database unavailable while {what}: {err.orig or err}", delay=3.0) from err
    except DBAPIError as err:
        if err.connection_invalidated:
            raise RetryLater(f"database connection lost while {what}", delay=3.0) from err
        raise


@contextmanager
def one_replica(deps: "Deps", what: str, name: str) -> Iterator[None]:
    """Run the block while no other operator replica runs one for `name` (foundry.db.serial).
    A database that is down makes it a retry: better late than posted twice."""
    with _outage_is_retry(what), serial.one_at_a_time(deps.engine, name):
        yield


def _ticket_updated_at(run: "RunView") -> datetime:
    raw = run.ticket.get("updatedAt")
    if raw:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    # A hand-made run may omit it; its creation time is the honest stand-in.
    created = run.meta.get("creationTimestamp")
    if created:
        return datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    return datetime.now(timezone.utc)


def insert_row(deps: "Deps", run: "RunView") -> OperatorInsert:
    deps.leadership.fence()
    with _outage_is_retry(f"recording run {run.name}"):
        result = claims.insert_run_row_for_operator(
            deps.engine, tracker=run.tracker, issue_id=run.issue_id, issue_key=run.issue_key,
            namespace=run.namespace, name=run.name, attempt=int(run.spec.get("attempt") or 1),
            ticket_updated_at=_ticket_updated_at(run))
    if result.outcome == "inserted":
        reached("after-db-insert")
    return result


def record_transition(deps: "Deps", run: "RunView", before: Any, t: "Transition") -> None:
    """Move the DB row to t.to with its audit event, unless a replay already did.

    Raises audit.RunEnded when the row is terminal and t.to is not: the row was
    ended by an earlier computation whose status write was lost (a 409, a
    crash), and the status must follow the row (see `following_row`).
    """
    with _outage_is_retry(f"recording {run.name} → {t.to.value}"):
        if before != t.to:
            # One transaction on the locked row: no row (the Duplicate outcome: the index refused
            # this run a row; its refusal is audited on the run that holds the slot) or the row
            # already there (a replay) writes nothing. The fence runs just before the write: a
            # phase is never written from a stale view by a process that lost the Lease.
            written = audit.advance_phase(deps.engine, run.namespace, run.name, t.to, t.reason,
                                          {"message": t.message, "from": before.value, "k8s_uid": run.uid},
                                          before_write=deps.leadership.fence)
            if written is None:
                return
        else:
            row = claims.get_run(deps.engine, run.namespace, run.name)
            if row is None:
                return
            if row.phase != t.to.value and t.to.is_active and Phase(row.phase).is_terminal:
                raise audit.RunEnded((run.namespace, run.name), row.phase, t.to.value)
            deps.leadership.fence()
            # A step that restarts its own phase (a remediation while the agent
            # runs): no phase change to record, but the decision is history.
            audit.record_decision(deps.engine, row.id, t.reason, {"message": t.message, "k8s_uid": run.uid})
            return
    reached("after-db-phase")


def following_row(deps: "Deps", run: "RunView", ended: audit.RunEnded) -> "Transition":
    """The transition that brings the run's status to its row's terminal phase,
    with the reason and message the row was ended with."""
    from foundry.operator.reconcile.outcome import Transition

    phase = Phase(ended.phase)
    reason, message = "RowEnded", f"the database recorded {phase.value} before the status did"
    with _outage_is_retry(f"reading how {run.name} ended"):
        row = claims.get_run(deps.engine, run.namespace, run.name)
        event = audit.last_phase_event(deps.engine, row.id) if row is not None else None
    if event is not None and event.payload.get("to") == phase.value:
        reason = str(event.payload.get("reason") or reason)
        detail = event.payload.get("detail")
        if isinstance(detail, dict) and detail.get("message"):
            message = str(detail["message"])
    return Transition(phase, reason, message, warning=True)


def record_decision(deps: "Deps", run: "RunView", kind: str, detail: dict[str, Any]) -> None:
    deps.leadership.fence()
    with _outage_is_retry(f"recording {kind} for {run.name}"):
        row = claims.get_run(deps.engine, run.namespace, run.name)
        if row is not None:
            audit.record_decision(deps.engine, row.id, kind, detail)


def record_on(deps: "Deps", run_id: int, kind: str, detail: dict[str, Any]) -> None:
    with _outage_is_retry(f"recording {kind}"):
        audit.record_decision(deps.engine, run_id, kind, detail)


def close_row(deps: "Deps", run: "RunView", phase: Any, reason: str) -> None:
    """On delete: an active row becomes terminal so the issue's slot frees up."""
    with _outage_is_retry(f"closing the row of {run.name}"):
        row = claims.get_run(deps.engine, run.namespace, run.name)
        if row is None or row.finished_at is not None:
            return
        deps.leadership.fence()
        audit.record_phase(deps.engine, row.id, phase, reason, {"k8s_uid": run.uid})
