"""Database URL selection and engine settings (foundry.db.engine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from foundry.db.engine import DatabaseConfigError, database_url, make_engine, normalise_url


def test_default_is_a_sqlite_file_in_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOUNDRY_STATE_DIR", str(tmp_path / "state"))
    assert database_url({}) == f"sqlite:///{tmp_path / 'state' / 'foundry.db'}"
    assert database_url({"FOUNDRY_DATABASE_URL": "sqlite:////x.db"}) == "sqlite:////x.db"


def test_sqlite_engines_use_wal_and_wait_for_locks(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_bare_postgres_urls_use_psycopg3() -> None:
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgres://u@h/db").drivername == "postgresql+psycopg"


@pytest.mark.parametrize("bad", ["not a url", "mysql://u@h/db"])
def test_unusable_urls_are_explained(bad: str) -> None:
    with pytest.raises(DatabaseConfigError):
        make_engine(bad)


def test_postgres_engine_connects(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == pg_url.rsplit("/", 1)[1]
    finally:
        engine.dispose()
