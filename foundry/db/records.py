"""Plain, immutable views of rows, so callers never hold live ORM objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from foundry.db.models import Run


@dataclass(frozen=True)
class RunRecord:
    id: int
    tracker: str
    issue_id: str
    issue_key: str
    namespace: str
    name: str
    attempt: int
    phase: str
    ticket_updated_at: datetime
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, row: Run) -> RunRecord:
        return cls(
            id=row.id,
            tracker=row.tracker,
            issue_id=row.issue_id,
            issue_key=row.issue_key,
            namespace=row.namespace,
            name=row.name,
            attempt=row.attempt,
            phase=row.phase,
            ticket_updated_at=row.ticket_updated_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
        )
