"""Running the Alembic migrations programmatically (no alembic.ini needed).

The migrations ship inside the wheel at foundry/_data/migrations and live at
<repo>/migrations in a checkout; foundry.paths.data_path finds either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from foundry.db.engine import database_url, make_engine, normalise_url
from foundry.paths import data_path

# Arbitrary but fixed: every Foundry process that migrates takes this
# PostgreSQL advisory lock first, so a Helm hook and starting pods can race safely.
# ("Foundry" in ASCII, fits a signed bigint.)
MIGRATION_LOCK_KEY = 0x466F756E647279


class MigrationError(RuntimeError):
    """A migration cannot proceed; the message says why in plain words."""


@dataclass(frozen=True)
class ActiveRunRow:
    id: int
    tracker: str
    issue_id: str
    issue_key: str
    namespace: str
    name: str
    attempt: int
    phase: str


class DuplicateActiveRuns(MigrationError):
    """Some issues already have several active runs, so the one-active guard cannot be built."""

    def __init__(self, rows: Sequence[ActiveRunRow]):
        self.rows = list(rows)
        super().__init__(describe_duplicates(self.rows))


def describe_duplicates(rows: Iterable[ActiveRunRow]) -> str:
    by_issue: dict[tuple[str, str], list[ActiveRunRow]] = {}
    for row in rows:
        by_issue.setdefault((row.tracker, row.issue_id), []).append(row)
    lines = [
        "Cannot add the one-active-run-per-issue guard (uq_foundry_runs_one_active_per_issue): "
        f"{len(by_issue)} issue(s) already have more than one active run.",
        "Move all but one run of each issue to a terminal phase (e.g. Duplicate or Stopped), "
        "then run `foundry db upgrade` again. The duplicates:",
    ]
    for (tracker, issue_id), runs in sorted(by_issue.items()):
        lines.append(f"  {tracker} issue {issue_id} ({runs[0].issue_key}):")
        for r in runs:
            lines.append(f"    run id {r.id}: {r.namespace}/{r.name}, attempt {r.attempt}, phase {r.phase}")
    return "\n".join(lines)


def migrations_dir() -> Path:
    path = data_path("migrations")
    if not (path / "env.py").exists():
        raise MigrationError(f"Foundry's migrations are missing: no env.py under {path}")
    return path


def alembic_config(url: str | None = None, engine: Engine | None = None) -> Config:
    """An Alembic Config pointing at Foundry's migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # Passed as attributes, not main options: ConfigParser would choke on '%' in passwords.
    config.attributes["engine"] = engine
    config.attributes["url"] = url or database_url()
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    if len(heads) != 1:
        raise MigrationError(f"the migrations have {len(heads)} heads ({', '.join(heads)}); merge them")
    return heads[0]


def current_revision(url: str | None = None) -> str | None:
    """The database's revision, or None for an empty (never migrated) database."""
    engine = make_engine(normalise_url(url or database_url()))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
