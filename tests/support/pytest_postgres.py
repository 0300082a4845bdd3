"""PostgreSQL fixtures (see docs/contracts.md).

PostgreSQL is required: when no server can be started the tests that need it
fail with the reason; they are never skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from foundry.dev.postgres import PostgresServer, PostgresUnavailable, create_database, drop_database

ENV_SERVER = "FOUNDRY_TEST_DATABASE_URL"
_PG_FIXTURES = {"postgres_url", "pg_url"}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server for this session: $FOUNDRY_TEST_DATABASE_URL, or a throwaway one."""
    external = os.environ.get(ENV_SERVER, "").strip()
    if external:
        yield external
        return
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is required for these tests and could not be started: {exc}", pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    url = create_database(postgres_url)
    try:
        yield url
    finally:
        drop_database(postgres_url, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in tmp_path; foundry.db.engine.make_engine puts it in WAL mode."""
    return f"sqlite:///{tmp_path / 'foundry.db'}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use the server are `postgres` tests whether or not they say so,
    # so `-m "not postgres"` selects exactly the ones that can run without it.
    for item in items:
        if _PG_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
