"""The bridge's small psycopg pool: bounded, reused, and honest after the database restarts."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import psycopg
import pytest

from foundry.bridge.commands import Unavailable
from foundry.bridge.lean import libpq_conninfo, lean_database_errors
from foundry.bridge.pgpool import PgPool
from foundry.db.engine import normalise_url

pytestmark = pytest.mark.postgres


async def backend_pid(connection: psycopg.AsyncConnection[Any]) -> int:
    cursor = await connection.execute("SELECT pg_backend_pid()")
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


def test_connections_are_reused_and_bounded(pg_url: str) -> None:
    conninfo = libpq_conninfo(normalise_url(pg_url))

    async def go() -> tuple[set[int], int]:
        pool = PgPool(conninfo, 3)
        in_flight = peak = 0

        async def work(connection: psycopg.AsyncConnection[Any]) -> int:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await connection.execute("SELECT pg_sleep(0.02)")
            in_flight -= 1
            return await backend_pid(connection)

        try:
            pids = await asyncio.gather(*(pool.run(work) for _ in range(30)))
        finally:
            await pool.close()
        return set(pids), peak

    pids, peak = asyncio.run(go())
    assert peak == 3 and len(pids) == 3


def test_stale_connections_after_a_restart_are_replaced_not_reported(pg_url: str) -> None:
    conninfo = libpq_conninfo(normalise_url(pg_url))

    async def go() -> tuple[set[int], int, list[int]]:
        pool = PgPool(conninfo, 2)
        try:
            before = set(await asyncio.gather(pool.run(backend_pid), pool.run(backend_pid)))
            # What a database restart does to pooled connections: their server processes are gone.
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin:
                for pid in before:
                    await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            after = await pool.run(backend_pid)
            again = [await pool.run(backend_pid) for _ in range(3)]
        finally:
            await pool.close()
        return before, after, again

    before, after, again = asyncio.run(go())
    assert after not in before
    assert set(again) == {after}  # the fresh connection went back to the pool


def test_an_unreachable_database_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go() -> None:
        pool = PgPool(f"postgresql://nobody@127.0.0.1:{port}/nothing", 2, connect_timeout=2)
        try:
            with lean_database_errors():
                await pool.run(backend_pid)
        finally:
            await pool.close()

    with pytest.raises(Unavailable) as info:
        asyncio.run(go())
    assert info.value.what == "database" and info.value.detail == "OperationalError"


def test_a_cancelled_statement_does_not_return_its_connection(pg_url: str) -> None:
    conninfo = libpq_conninfo(normalise_url(pg_url))

    async def go() -> tuple[int, int]:
        pool = PgPool(conninfo, 1)
        try:
            first = await pool.run(backend_pid)

            async def slow(connection: psycopg.AsyncConnection[Any]) -> None:
                await connection.execute("SELECT pg_sleep(5)")

            task = asyncio.ensure_future(pool.run(slow))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return first, await pool.run(backend_pid)
        finally:
            await pool.close()

    first, second = asyncio.run(go())
    assert first != second


def test_a_batch_of_records_the_database_refuses_fails_only_the_culprit(pg_url: str) -> None:
    from kubernetes import client

    from foundry.bridge.kubehttp import KubeRuns, target_from_configuration
    from foundry.bridge.lean import LeanIntake
    from foundry.db import migrate

    migrate.upgrade(pg_url)
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # never called: only records are written here

    async def go() -> list[Any]:
        lean = LeanIntake(
            PgPool(libpq_conninfo(normalise_url(pg_url)), 2),
            KubeRuns(target_from_configuration(configuration), connections=1, timeout_seconds=1),
            "ns",
        )
        try:
            # The verifier never lets a delivery id this long through; if one did, it alone must fail.
            items = [("linear", "ok-1", "created"), ("linear", "x" * 500, "created"), ("linear", "ok-2", "created")]
            return list(await lean._record_batch(items))
        finally:
            await lean.close()

    first, bad, last = asyncio.run(go())
    assert (first, last) == (True, True)
    assert isinstance(bad, psycopg.errors.StringDataRightTruncation)
