"""What one reconcile step decided: move to another phase, or stay (maybe with
status updates). Steps return these; `commit` writes them. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from foundry.domain.phases import Phase


@dataclass
class Transition:
    to: Phase
    reason: str  # CamelCase, becomes status.reason, the condition reason and the Event reason
    message: str
    status: dict[str, Any] = field(default_factory=dict)  # other status fields to merge
    warning: bool = False  # the Event type: Warning for failures, Normal otherwise


@dataclass
class Stay:
    status: dict[str, Any] = field(default_factory=dict)  # nothing to write when empty
    # An audit decision worth recording without a phase change (a retry attempt, a refused approval).
    audit: str | None = None
    audit_detail: dict[str, Any] = field(default_factory=dict)


Outcome = Transition | Stay
