"""Which database, and engines configured so concurrent processes behave.

FOUNDRY_DATABASE_URL selects the database. Without it Foundry uses a SQLite
file in the local state directory, which is fine for one developer's machine.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, InvalidatePoolError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from foundry.paths import state_dir

ENV_VAR = "FOUNDRY_DATABASE_URL"
SQLITE_FILENAME = "foundry.db"
# Long enough to ride out a burst of writers (a webhook storm), short enough
# that a wedged process is noticed.
SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseConfigError(ValueError):
    """The database URL cannot be used; the message says why and what to set."""


def database_url(env: Mapping[str, str] | None = None) -> str:
    """FOUNDRY_DATABASE_URL, else a SQLite file under the state directory."""
    env = os.environ if env is None else env
    url = (env.get(ENV_VAR) or "").strip()
    if url:
        return url
    return f"sqlite:///{state_dir() / SQLITE_FILENAME}"


def normalise_url(url: str | URL) -> URL:
    """Parse a URL, steering bare postgres URLs to psycopg 3 (the only driver we ship)."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError as exc:
        raise DatabaseConfigError(
            f"{ENV_VAR} is not a database URL ({exc}); expected e.g. "
            "postgresql+psycopg://user:pass@host/db or sqlite:////path/foundry.db"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise DatabaseConfigError(f"unsupported database {backend!r}: Foundry supports PostgreSQL and SQLite")
    return parsed


def make_engine(
    url: str | URL | None = None,
    *,
    pool_size: int | None = None,
    echo: bool = False,
    connect_timeout: int | None = None,
    statement_timeout: float | None = None,
    pool_timeout: float | None = None,
) -> Engine:
    """An engine for `url` (default: database_url()).

    pool_size: how many connections may be open at once; raise it for callers
    that run many threads against one engine. connect_timeout (whole seconds,
    libpq's minimum is 2) and statement_timeout (seconds, enforced by the
    server) bound each PostgreSQL call; pool_timeout bounds the wait for a free
    pooled connection. None keeps the driver's default (wait indefinitely).
    """
    parsed = normalise_url(url if url is not None else database_url())
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if pool_size is not None:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = 0
    if pool_timeout is not None:
        kwargs["pool_timeout"] = pool_timeout
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, kwargs)
    kwargs["connect_args"] = postgres_timeouts(parsed, connect_timeout, statement_timeout)
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError as exc:
        raise DatabaseConfigError(f"no driver for {parsed.drivername!r}: {exc}") from None
    _ping_after_idle(engine)
    return engine


# A pooled connection back in use within this many seconds is not pinged on checkout.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_after_idle(engine: Engine) -> None:
    """SQLAlchemy's pool_pre_ping, but only for a connection idle for PING_AFTER_IDLE_SECONDS.

    A ping on every checkout was a round trip per transaction (five or six per operator intake)
    to learn what a connection returned healthy a moment ago already showed. A connection that
    has sat idle (the server restarted, a proxy dropped it) is pinged as before; if the ping
    fails, the pool is invalidated and the checkout reconnects, as pool_pre_ping does. A server
    lost in the last second fails the statement instead, as it could between a ping and the
    statement before: a disconnect error, which invalidates the pool and which the operator
    already retries (foundry.operator.dbio)."""
    dialect = engine.dialect

    @event.listens_for(engine.pool, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["foundry_idle_since"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("foundry_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # a new connection, or one in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as err:
            raise InvalidatePoolError(f"ping after {time.monotonic() - since:.1f} s idle failed: {err}") from err


def postgres_timeouts(url: URL, connect_timeout: int | None, statement_timeout: float | None) -> dict[str, Any]:
    """libpq connection parameters for the timeouts; any `options` already in the URL are kept."""
    params: dict[str, Any] = {}
    if connect_timeout is not None:
        params["connect_timeout"] = max(2, int(connect_timeout))
    if statement_timeout is not None:
        existing = url.query.get("options")
        existing = " ".join(existing) if isinstance(existing, tuple) else existing
        setting = f"-c statement_timeout={max(1, round(statement_timeout * 1000))}"
        params["options"] = f"{existing} {setting}" if existing else setting
    return params


def _sqlite_engine(url: URL, kwargs: dict[str, Any]) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    if not in_memory:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
    else:
        kwargs.pop("pool_size", None)
        kwargs.pop("max_overflow", None)
    kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would not
        # BEGIN before SELECT, and SAVEPOINTs break); we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front (waiting up to busy_timeout).
        # A deferred transaction that reads and then writes fails at once with
        # SQLITE_BUSY if another writer committed in between; busy_timeout cannot
        # help there. Serialising writers is the price of correctness on SQLite.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# One sessionmaker per engine, kept on the engine. Each sessionmaker makes its own
# Session subclass, and SQLAlchemy wires every event listener into each new class,
# so making one per call (every query helper calls this) cost more CPU than some
# of the queries themselves. On the engine rather than in a module-level map, so
# an engine nobody holds is still collected with its pool.
_FACTORY_ATTR = "_foundry_sessionmaker"
_FACTORY_LOCK = threading.Lock()


def session_factory(bind: Engine | sessionmaker[Session]) -> sessionmaker[Session]:
    """Accept either an engine or an existing sessionmaker (the operator may share one).
    For an engine, the same sessionmaker every time (expire_on_commit off)."""
    if isinstance(bind, sessionmaker):
        return bind
    factory = getattr(bind, _FACTORY_ATTR, None)
    if factory is None:
        with _FACTORY_LOCK:
            factory = getattr(bind, _FACTORY_ATTR, None)
            if factory is None:
                factory = sessionmaker(bind=bind, expire_on_commit=False)
                setattr(bind, _FACTORY_ATTR, factory)
    return factory


def create_schema(engine: Engine) -> None:
    """Create tables straight from the models (tests, throwaway SQLite). Production uses migrations."""
    from foundry.db.models import metadata

    metadata.create_all(engine)
