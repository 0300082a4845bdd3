"""Durable webhook dedup: a delivery is recorded after its command succeeded.

The bridge applies the command first (every command is idempotent), then
records the delivery in a short transaction of its own (record_delivery, or
record_applied_deliveries_pg on the lean path): holding a transaction open
across the Kubernetes call would pin a connection per delivery in flight. A
crash between the two leaves nothing recorded, and the sender's retry applies
the command again, with the same effect. The unique (provider, delivery_id)
decides between copies racing on different connections; is_recorded is a cheap
pre-check. Dedup is a replay guard, not the correctness mechanism. Old records
are pruned in bounded batches (prune_deliveries, called by the operator's
housekeeping).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Delete, Engine, Select, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from foundry.db.engine import session_factory
from foundry.db.models import WebhookDelivery
from foundry.db.timeutil import Clock, utcnow

if TYPE_CHECKING:  # psycopg is only needed by callers of the lean PostgreSQL path
    from psycopg import AsyncConnection

Bind = Engine | sessionmaker[Session]


def record_delivery(
    session: Session, *, provider: str, delivery_id: str, received_at: datetime, outcome: str | None = None
) -> bool:
    """Insert the delivery inside the caller's transaction. False if it is already recorded.

    Runs in a SAVEPOINT so a duplicate leaves the caller's transaction usable.
    """
    _check_ids(provider, delivery_id)
    try:
        with session.begin_nested():
            session.add(
                WebhookDelivery(provider=provider, delivery_id=delivery_id, received_at=received_at, outcome=outcome)
            )
        return True
    except IntegrityError:
        return False


def is_recorded(bind: Bind, provider: str, delivery_id: str) -> bool:
    """A cheap pre-check (unique index lookup); the unique index at record time is the authority."""
    with session_factory(bind)() as session:
        found = session.scalar(
            select(WebhookDelivery.id).where(
                WebhookDelivery.provider == provider, WebhookDelivery.delivery_id == delivery_id
            )
        )
        return found is not None


def prune_batch_query(cutoff: datetime, batch_size: int) -> Select[tuple[int]]:
    """The ids of up to batch_size deliveries older than cutoff, oldest first.

    ORDER BY received_at LIMIT n walks the received_at index from its start and
    stops after n rows, so a batch costs O(n), not a table scan. Rows another
    pruner has already locked are skipped (PostgreSQL), so two pruners split
    the work instead of queueing on each other.
    """
    return (
        select(WebhookDelivery.id)
        .where(WebhookDelivery.received_at < cutoff)
        .order_by(WebhookDelivery.received_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )


def prune_delete_statement(ids: list[int]) -> Delete:
    return delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids))


def prune_deliveries(
    bind: Bind,
    older_than: timedelta,
    batch_size: int = 1000,
    *,
    clock: Clock = utcnow,
    max_batches: int | None = None,
) -> int:
    """Delete deliveries received more than `older_than` ago, one short transaction per batch.

    Returns how many rows were deleted. max_batches caps the work of one call
    (a periodic pruner can leave the rest for next time).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    cutoff = clock() - older_than
    sessions = session_factory(bind)
    total = batches = 0
    while max_batches is None or batches < max_batches:
        # Two statements rather than DELETE … WHERE id IN (subquery): PostgreSQL
        # may plan that as a hash join over the whole table; deleting a short
        # list of primary keys never does.
        with sessions() as session, session.begin():
            ids = list(session.scalars(prune_batch_query(cutoff, batch_size)))
            if ids:
                session.execute(prune_delete_statement(ids))
        total += len(ids)
        batches += 1
        if len(ids) < batch_size:
            break
    return total


# unnest() keeps it one prepared statement whatever the batch size.
_INSERT_DELIVERIES = (
    "INSERT INTO foundry_webhook_deliveries (provider, delivery_id, received_at, outcome, applied_at)"
    " SELECT p, d, %(now)s::timestamptz, o, %(now)s::timestamptz"
    " FROM unnest(%(providers)s::varchar[], %(ids)s::varchar[], %(outcomes)s::varchar[]) AS t(p, d, o)"
    " ON CONFLICT (provider, delivery_id) DO NOTHING RETURNING provider, delivery_id"
)


async def record_applied_deliveries_pg(
    conn: "AsyncConnection[Any]", items: Sequence[tuple[str, str, str]], *, clock: Clock = utcnow
) -> list[bool]:
    """Record deliveries whose commands have been applied, (provider, delivery_id, outcome) each, in one statement.

    For callers that apply an idempotent command first and record it after (the
    bridge): a crash in between leaves nothing recorded and the retry re-applies.
    Returns, per item, True if this call recorded it and False if it was already
    recorded (or an earlier item of the same batch has the same id). All or none:
    if the statement fails, nothing is recorded. The unique (provider,
    delivery_id) decides between copies racing on different connections.
    """
    for provider, delivery_id, _ in items:
        _check_ids(provider, delivery_id)
    first: dict[tuple[str, str], int] = {}
    for index, (provider, delivery_id, _) in enumerate(items):
        first.setdefault((provider, delivery_id), index)
    unique = [items[i] for i in first.values()]
    cursor = await conn.execute(
        _INSERT_DELIVERIES,
        {
            "now": clock(),
            "providers": [p for p, _, _ in unique],
            "ids": [d for _, d, _ in unique],
            "outcomes": [o for _, _, o in unique],
        },
    )
    inserted = {(row[0], row[1]) for row in await cursor.fetchall()}
    return [
        first[(provider, delivery_id)] == index and (provider, delivery_id) in inserted
        for index, (provider, delivery_id, _) in enumerate(items)
    ]


async def record_applied_delivery_pg(
    conn: "AsyncConnection[Any]", *, provider: str, delivery_id: str, outcome: str, clock: Clock = utcnow
) -> bool:
    """record_applied_deliveries_pg for one delivery: False if it is already recorded."""
    return (await record_applied_deliveries_pg(conn, [(provider, delivery_id, outcome)], clock=clock))[0]


def _check_ids(provider: str, delivery_id: str) -> None:
    if not provider or not delivery_id:
        raise ValueError("a delivery needs a provider and a delivery id")
