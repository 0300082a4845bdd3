"""Foundry's database: the runs table with its one-active-run-per-issue guard,
the hash-chained audit trail and the webhook delivery log.

Modules: engine (URLs, SQLite WAL), models (tables), claims (create-or-attach),
audit (phase changes + chain), deliveries (durable dedup), migrate (Alembic).
"""
