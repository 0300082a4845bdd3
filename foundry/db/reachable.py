"""Waiting until a database accepts connections (the chart's migration starts with it).

A freshly installed bundled PostgreSQL, or a managed one behind a slow network,
is not there the moment the migration pod starts. `wait_for_database` retries
the connection, and only the connection, until a deadline: a wrong password or
a missing database is not a "not yet" and fails at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from foundry.db.engine import make_engine

# libpq's words for "nobody is listening yet" (DNS not yet resolvable, the port
# closed, the server still starting up or shutting down for its init restart).
_NOT_YET = (
    "connection refused",
    "could not translate host name",
    "name or service not known",
    "temporary failure in name resolution",
    "the database system is starting up",
    "the database system is shutting down",
    "no route to host",
    "timeout expired",
    "connection timed out",
    "server closed the connection unexpectedly",
)


def is_not_yet(err: BaseException) -> bool:
    """Whether a connection error means "try again shortly" rather than "this will never work"."""
    message = str(getattr(err, "orig", None) or err).lower()
    return any(phrase in message for phrase in _NOT_YET)


def wait_for_database(url: str, timeout: float, *, interval: float = 1.0,
                      say: Callable[[str], None] = lambda _msg: None,
                      clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once `SELECT 1` succeeds; re-raise the last error after `timeout` seconds
    or at once when the error is not a "not yet" one."""
    deadline = clock() + timeout
    engine = make_engine(url)
    last_said = float("-inf")
    try:
        while True:
            try:
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
                return
            except OperationalError as err:
                if not is_not_yet(err) or clock() >= deadline:
                    raise
                if clock() - last_said >= 10:
                    say(f"waiting for the database ({str(err.orig).strip().splitlines()[0]})")
                    last_said = clock()
                sleep(interval)
    finally:
        engine.dispose()
