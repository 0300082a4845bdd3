"""Triggers: which tickets start a run (TriggerRule), and what started a given run (Trigger).

Pure values. The config file's `trigger` section (with `linear.team`) is read
into a TriggerRule, which the bridge's webhook mapping and the Linear sweep
both apply; a Trigger travels from the bridge into the FoundryRun's
spec.trigger (foundry.kube.runs.build_run_manifest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

DEFAULT_TRIGGER_LABEL = "foundry"
TRIGGER_SOURCES = ("webhook", "sweep", "manual")


@dataclass(frozen=True)
class TriggerRule:
    """When a ticket starts work: the label (if set) and one of the states (if any) must hold,
    and the ticket must belong to `team` (a team key) when one is set."""

    label: str | None = DEFAULT_TRIGGER_LABEL
    states: tuple[str, ...] = ()
    team: str | None = None

    def matches(self, labels: Sequence[str], state: str | None, team_key: str | None = None) -> bool:
        if not self.label and not self.states:
            return False  # a rule that names nothing triggers nothing, never everything
        if self.team and (team_key is None or team_key.casefold() != self.team.casefold()):
            return False
        if self.label and self.label.casefold() not in {name.casefold() for name in labels}:
            return False
        if self.states and (state is None or state.casefold() not in {s.casefold() for s in self.states}):
            return False
        return True


@dataclass(frozen=True)
class Trigger:
    """What made Foundry create a run: a webhook delivery, the Linear sweep, or a person."""

    source: str = "webhook"  # one of TRIGGER_SOURCES
    delivery_id: str | None = None
    actor: str | None = None
    received_at: datetime | str | None = None
