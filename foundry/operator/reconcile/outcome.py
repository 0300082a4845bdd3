"""What one reconcile step decided: move to another phase, or stay (maybe with
status updates). Steps return these; `commit` writes them. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from foundry.domain.phases import Phase
from foundry.operator.status import Condition

# An Event to post once the outcome is written: (reason, message, warning).
Event = tuple[str, str, bool]


@dataclass
class Transition:
    to: Phase
    reason: str  # CamelCase, becomes status.reason, the condition reason and the Event reason
    message: str
    status: dict[str, Any] = field(default_factory=dict)  # other status fields to merge
    warning: bool = False  # the Event type: Warning for failures, Normal otherwise
    # Conditions no phase implies (PlanDrift), merged with the phase's; and Events beyond the transition's.
    conditions: list[Condition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass
class Stay:
    status: dict[str, Any] = field(default_factory=dict)  # nothing to write when empty
    # An audit decision worth recording without a phase change (a retry attempt, a refused approval).
    audit: str | None = None
    audit_detail: dict[str, Any] = field(default_factory=dict)
    # Conditions to merge into status.conditions, and Events to post once that write went through.
    conditions: list[Condition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


Outcome = Transition | Stay
