"""The intake hot path without threads: psycopg async for the claim and record, aiohttp for the create.

Same steps, same guards and same answers as RealBackend's claim /
create_or_attach_run / record_delivery (see foundry.bridge.backend); only the
transport differs. Used when the database is PostgreSQL; SQLite (a developer's
machine) keeps the threaded path. Why: docs/decisions/0002-bridge-lean-hot-path.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from kubernetes import client
from sqlalchemy.engine import URL

from foundry.bridge.backend import claim_request, kubernetes_errors, run_manifest, ticket_update_outcome
from foundry.bridge.batching import Batcher
from foundry.bridge.commands import Unavailable
from foundry.bridge.deadlines import KUBE_CONNECT_SECONDS, KUBE_REQUEST_SECONDS, SQL_CONNECT_SECONDS, SQL_STATEMENT_SECONDS
from foundry.bridge.kubehttp import KubeRuns, target_from_configuration
from foundry.bridge.mapping import Intake, Ticket
from foundry.bridge.pgpool import PgPool
from foundry.db import claims, deliveries
from foundry.domain.attempts import Claim
from foundry.domain.ticket_refresh import ticket_patch
from foundry.domain.triggers import Trigger


@contextlib.contextmanager
def lean_database_errors() -> Iterator[None]:
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise Unavailable("database", type(exc).__name__) from exc
    except claims.ClaimContention as exc:
        raise Unavailable("database", "claim contention") from exc


def libpq_conninfo(url: URL) -> str:
    """A libpq URI for a (normalised) SQLAlchemy PostgreSQL URL; query options pass through."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


# Records that arrive while a flush is in flight go in the next one (foundry.bridge.batching).
RECORD_BATCH = 64


class LeanIntake:
    """One per bridge process; build it inside the running event loop (open_lean_intake)."""

    def __init__(self, pool: PgPool, kube: KubeRuns, namespace: str, *, record_flushers: int = 2) -> None:
        self.pool = pool
        self.kube = kube
        self.namespace = namespace
        self.records: Batcher[tuple[str, str, str], bool] = Batcher(
            self._record_batch, max_batch=RECORD_BATCH, flushers=record_flushers
        )

    async def claim(self, ticket: Ticket) -> Claim:
        async def work(connection: psycopg.AsyncConnection[Any]) -> Claim:
            return await claims.claim_run_pg(connection, claim_request(ticket, self.namespace))

        with lean_database_errors():
            claim = await self.pool.run(work)
        return claim

    async def create_or_attach_run(self, claim: Claim, intake: Intake, trigger: Trigger) -> str:
        manifest = run_manifest(claim, intake, trigger)
        if manifest is None:
            return "attached"
        namespace = manifest["metadata"]["namespace"]
        with kubernetes_errors():
            result = await self.kube.attach(namespace, manifest)
            if result.created:
                return "created"
            patch = ticket_patch(result.object, manifest["spec"].get("ticket") or {})
            if patch is None:
                return "attached"
            return ticket_update_outcome(await self.kube.merge_patch(namespace, result.name, patch), f"run {result.name}")

    async def record_delivery(self, provider: str, delivery_id: str, outcome: str) -> bool:
        return await self.records.submit((provider, delivery_id, outcome))

    async def _record_batch(self, items: Sequence[tuple[str, str, str]]) -> Sequence[bool | BaseException]:
        async def work(connection: psycopg.AsyncConnection[Any]) -> list[bool]:
            return await deliveries.record_applied_deliveries_pg(connection, items)

        with lean_database_errors():
            try:
                return await self.pool.run(work)
            except psycopg.Error as exc:
                if len(items) == 1 or isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
                    raise
        # The database refused the batch for something in it (no delivery the
        # verifier admits should do that): one at a time, so only that one fails.
        singles = await asyncio.gather(*(self._record_batch([item]) for item in items), return_exceptions=True)
        return [single if isinstance(single, BaseException) else single[0] for single in singles]

    async def close(self) -> None:
        await self.kube.close()
        await self.pool.close()


def open_lean_intake(
    database_url: URL, configuration: client.Configuration, namespace: str, *, connections: int
) -> LeanIntake:
    """The lean path for a PostgreSQL URL and the process's kubernetes Configuration (call inside the loop)."""
    pool = PgPool(
        libpq_conninfo(database_url),
        connections,
        connect_timeout=SQL_CONNECT_SECONDS,
        statement_timeout=SQL_STATEMENT_SECONDS,
    )
    kube = KubeRuns(
        target_from_configuration(configuration),
        connections=connections * 4,
        timeout_seconds=KUBE_REQUEST_SECONDS,
        connect_seconds=KUBE_CONNECT_SECONDS,
    )
    return LeanIntake(pool, kube, namespace, record_flushers=max(1, connections // 4))
