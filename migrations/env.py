"""Alembic environment for Foundry. Configured by foundry.db.migrate (no alembic.ini).

On PostgreSQL every migrating process first takes a session advisory lock, so
concurrent `foundry db upgrade` runs happen one after another; the later ones
then find the schema at head and do nothing.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from foundry.db.engine import make_engine
from foundry.db.migrate import MIGRATION_LOCK_KEY
from foundry.db.models import metadata

config = context.config


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    owned = engine is None
    if owned:
        engine = make_engine(config.attributes.get("url"))
    try:
        with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                connection.commit()  # the lock is session-level; Alembic must start outside a transaction
            try:
                context.configure(
                    connection=connection,
                    target_metadata=metadata,
                    compare_type=True,
                    render_as_batch=connection.dialect.name == "sqlite",
                )
                with context.begin_transaction():
                    context.run_migrations()
            finally:
                if postgres:
                    connection.rollback()
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                    connection.commit()
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Foundry's migrations run against a live database only (no --sql mode).")
run_migrations_online()
