"""The phases of a FoundryRun and which of them hold an issue's single active slot.

The strings are stored as-is in the database (`foundry_runs.phase`) and in
`status.phase` of the custom resource, so they are part of the public contract.
"""

from __future__ import annotations

import enum


class Phase(str, enum.Enum):
    PENDING = "Pending"
    ANALYSING = "Analysing"
    WAITING_APPROVAL = "WaitingApproval"
    APPROVED = "Approved"
    AGENT_RUNNING = "AgentRunning"
    PR_OPEN = "PROpen"
    REVIEW_REQUIRED = "ReviewRequired"
    NEEDS_CLARIFICATION = "NeedsClarification"
    BLOCKED = "Blocked"
    REJECTED = "Rejected"
    STOPPED = "Stopped"
    EXECUTION_FAILED = "ExecutionFailed"
    COMPLETE = "Complete"
    CLOSED = "Closed"
    EXPIRED = "Expired"
    DUPLICATE = "Duplicate"

    def __str__(self) -> str:  # so f-strings and SQL parameters carry the bare name
        return self.value

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_PHASES

    @property
    def is_terminal(self) -> bool:
        return not self.is_active


# Order matters only for readability; membership is what the unique index uses.
ACTIVE_PHASES: tuple[Phase, ...] = (
    Phase.PENDING,
    Phase.ANALYSING,
    Phase.WAITING_APPROVAL,
    Phase.APPROVED,
    Phase.AGENT_RUNNING,
    Phase.PR_OPEN,
    Phase.REVIEW_REQUIRED,
)
TERMINAL_PHASES: tuple[Phase, ...] = tuple(p for p in Phase if p not in ACTIVE_PHASES)
ACTIVE_PHASE_NAMES: tuple[str, ...] = tuple(p.value for p in ACTIVE_PHASES)
