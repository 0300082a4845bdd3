"""`foundry db`: apply and inspect the database schema (Alembic migrations)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError, OperationalError

from foundry.db import migrate
from foundry.db import engine as db_engine
from foundry.db.engine import ENV_VAR, DatabaseConfigError, normalise_url

url_option = click.option(
    "--database-url",
    envvar=ENV_VAR,
    default=None,
    help=f"Database URL (default: ${ENV_VAR}, else a SQLite file in the state directory).",
)


@click.group()
def db() -> None:
    """Apply and inspect Foundry's database schema."""


@db.command()
@url_option
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Seconds to wait for the database to accept connections first (a database that is still "
                   "starting); other errors fail at once.")
def upgrade(database_url: str | None, wait_seconds: float) -> None:
    """Migrate the database to the latest schema (safe to run from several processes at once)."""
    url = _resolve(database_url)
    with _plain_errors(url):
        if wait_seconds:
            from foundry.db.reachable import wait_for_database

            wait_for_database(url, wait_seconds, say=lambda msg: click.echo(msg, err=True))
        migrate.upgrade(url)
        click.echo(f"database at {migrate.current_revision(url)} (head)")


@db.command()
@click.argument("revision")
@url_option
def downgrade(revision: str, database_url: str | None) -> None:
    """Migrate the database down to REVISION (`base` removes every Foundry table)."""
    url = _resolve(database_url)
    with _plain_errors(url):
        migrate.downgrade(url, revision)
        click.echo(f"database at {migrate.current_revision(url) or 'base (empty)'}")


@db.command()
@url_option
def current(database_url: str | None) -> None:
    """Print the database's schema revision and whether it is the latest."""
    url = _resolve(database_url)
    with _plain_errors(url):
        revision = migrate.current_revision(url)
        head = migrate.head_revision()
        if revision is None:
            click.echo(f"none (empty database; run `foundry db upgrade` to reach {head})")
        elif revision == head:
            click.echo(f"{revision} (head)")
        else:
            click.echo(f"{revision} (behind head {head}; run `foundry db upgrade`)")


@db.command("seal-audit")
@url_option
def seal_audit(database_url: str | None) -> None:
    """Give trails written before the audit key was set a keyed head record
    ($FOUNDRY_AUDIT_KEY), so a cut-off tail shows on them too. Trails that do
    not verify are listed and left as they are. Safe to run again."""
    from foundry.db.audit import seal_unkeyed_trails
    from foundry.db.audit_chain import AuditKeyError

    url = _resolve(database_url)
    with _plain_errors(url):
        engine = db_engine.make_engine(url)
        try:
            report = seal_unkeyed_trails(engine)
        except AuditKeyError as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            engine.dispose()
    click.echo(f"sealed {report.sealed} trail(s)")
    if report.broken:
        click.echo(f"{len(report.broken)} trail(s) do not verify and were left unsealed: run ids "
                   + ", ".join(str(i) for i in report.broken), err=True)
        raise SystemExit(1)


def _resolve(database_url: str | None) -> str:
    try:
        return normalise_url(database_url or db_engine.database_url()).render_as_string(hide_password=False)
    except DatabaseConfigError as exc:
        raise click.ClickException(str(exc)) from None



@contextmanager
def _plain_errors(url: str) -> Iterator[None]:
    """Turn the failures an operator can fix into one readable message (no traceback)."""
    shown = normalise_url(url).render_as_string(hide_password=True)
    try:
        yield
    except migrate.MigrationError as exc:
        raise click.ClickException(str(exc)) from None
    except CommandError as exc:  # unknown revision and the like
        raise click.ClickException(f"migration: {exc}") from None
    except OperationalError as exc:
        raise click.ClickException(f"cannot use the database at {shown}: {exc.orig}") from None
    except DBAPIError as exc:
        raise click.ClickException(f"the database at {shown} refused a migration step: {exc.orig}") from None
