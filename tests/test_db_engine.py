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


def _pings(engine: object, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every liveness ping the engine's pool sends."""
    seen: list[object] = []
    dialect = engine.dialect  # type: ignore[attr-defined]
    real = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda conn: seen.append(conn) or real(conn))
    return seen


def test_a_connection_back_in_use_at_once_is_not_pinged(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """pool_pre_ping pinged on every checkout, a round trip per transaction; a connection
    returned healthy less than PING_AFTER_IDLE_SECONDS ago is used without one."""
    engine = make_engine(pg_url, pool_size=1)
    try:
        pings = _pings(engine, monkeypatch)
        for _ in range(5):
            with engine.connect() as conn:
                assert conn.execute(text("select 1")).scalar() == 1
        assert pings == []
    finally:
        engine.dispose()


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle connection whose server side was terminated (a restart, a dropped proxy) is found
    by the ping at checkout and replaced, so the caller's statement works."""
    from foundry.db import engine as engine_module

    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.05)
    engine = make_engine(pg_url, pool_size=1)
    other = make_engine(pg_url, pool_size=1)
    try:
        pings = _pings(engine, monkeypatch)
        with engine.connect() as conn:
            pid = conn.execute(text("select pg_backend_pid()")).scalar()
        with other.connect() as admin:
            assert admin.execute(text("select pg_terminate_backend(:pid)"), {"pid": pid}).scalar() is True
            admin.commit()
        import time

        time.sleep(0.1)
        with engine.connect() as conn:
            assert conn.execute(text("select pg_backend_pid()")).scalar() != pid
        assert len(pings) == 1
    finally:
        engine.dispose()
        other.dispose()
