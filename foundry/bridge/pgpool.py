"""A small pool of autocommit psycopg AsyncConnections for the bridge's hot path.

psycopg_pool would do, but it is another dependency for ~60 lines; what the
bridge needs is narrow: at most `size` connections, reuse idle ones, and after
a database restart do not answer one 503 per dead pooled connection. So a
failure on a connection that came from the idle list (it may simply be stale)
drops every idle connection and retries the work once on a fresh one; a
failure on a fresh connection is reported. Only idempotent work may be run
here (the claim and the delivery record are: ON CONFLICT DO NOTHING).

Every call is bounded: connecting by `connect_timeout`, each statement by the
server's `statement_timeout`, and the whole of one `work` by the client as well
(a server that stopped answering enforces nothing); running out of time is an
OperationalError like any other unavailable database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

T = TypeVar("T")
Work = Callable[["psycopg.AsyncConnection[Any]"], Awaitable[T]]


class PgPool:
    def __init__(
        self, conninfo: str, size: int, *, connect_timeout: float = 5.0, statement_timeout: float | None = None
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one connection")
        self.conninfo = with_statement_timeout(conninfo, statement_timeout)
        self.connect_timeout = connect_timeout
        # The client's own bound on one `work`: the server's limit plus a round trip.
        self.work_timeout = None if statement_timeout is None else statement_timeout + 0.5
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._closed = False

    async def run(self, work: Work[T]) -> T:
        """Run `work(connection)`; psycopg.OperationalError/InterfaceError mean the database is unavailable."""
        async with self._slots:
            connection, reused = await self._take()
            try:
                result = await self._bounded(work, connection)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                await _close_quietly(connection)
                if not reused or not (connection.closed or connection.broken):
                    raise
                # A stale connection (the server restarted): the others are stale too.
                await self._drop_idle()
                connection, _ = await self._take(fresh=True)
                try:
                    result = await self._bounded(work, connection)
                except BaseException:
                    await _close_quietly(connection)
                    raise
            except BaseException:
                # Cancelled mid-statement, or an error we do not understand: the
                # connection's state is unknown, so it is not reused.
                await _close_quietly(connection)
                raise
            self._give_back(connection)
            return result

    async def _bounded(self, work: Work[T], connection: psycopg.AsyncConnection[Any]) -> T:
        if self.work_timeout is None:
            return await work(connection)
        try:
            return await asyncio.wait_for(work(connection), self.work_timeout)
        except asyncio.TimeoutError:
            # The connection's state is unknown: closed by the callers of _bounded.
            raise psycopg.OperationalError(f"no answer from the database within {self.work_timeout} s") from None

    async def _take(self, fresh: bool = False) -> tuple[psycopg.AsyncConnection[Any], bool]:
        if self._closed:
            raise psycopg.InterfaceError("the bridge's database pool is closed")
        while self._idle and not fresh:
            connection = self._idle.pop()
            if not (connection.closed or connection.broken):
                return connection, True
        connection = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))
        )
        return connection, False

    def _give_back(self, connection: psycopg.AsyncConnection[Any]) -> None:
        if self._closed or connection.closed or connection.broken:
            asyncio.ensure_future(_close_quietly(connection))
        else:
            self._idle.append(connection)

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await _close_quietly(connection)

    async def close(self) -> None:
        self._closed = True
        await self._drop_idle()


def with_statement_timeout(conninfo: str, seconds: float | None) -> str:
    """`conninfo` with the server-side statement_timeout set; other `options` kept."""
    if seconds is None:
        return conninfo
    params = conninfo_to_dict(conninfo)
    setting = f"-c statement_timeout={max(1, round(seconds * 1000))}"
    existing = params.get("options")
    params["options"] = f"{existing} {setting}" if existing else setting
    return make_conninfo(**params)  # type: ignore[arg-type]


async def _close_quietly(connection: psycopg.AsyncConnection[Any]) -> None:
    try:
        await connection.close()
    except Exception:  # closing a broken connection may itself fail; nothing to do about it
        pass
