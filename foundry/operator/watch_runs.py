"""kopf's watch on FoundryRuns: every event goes to the run controller, nothing else.

A raw event handler keeps no per-object progress and writes nothing to the
object, so a standby can watch (and keep its cache warm) without acting. What
to do, and when, is decided by foundry.operator.controller: reconciles on
the work queue, the next wake of each run on its scheduler, the finalizer
managed by Foundry itself.
"""

from __future__ import annotations

from typing import Any

import kopf

from foundry.domain.phases import ACTIVE_PHASE_NAMES
from foundry.operator.kubeio import GROUP, RUNS, VERSION


def _is_active(status: dict[str, Any], **_: Any) -> bool:
    """Whether a run with this status still has a next wake (the scheduler keeps one for it)."""
    phase = (status or {}).get("phase")
    return not phase or phase in ACTIVE_PHASE_NAMES


@kopf.on.event(GROUP, VERSION, RUNS)
async def run_seen(type: str | None, body: Any, event: Any, memo: Any, **_: Any) -> None:
    controller = memo.get("controller")
    if controller is not None:
        # The event's own object (no copy): a new run's first reconcile starts from it.
        controller.run_event(type, body, raw=(event or {}).get("object"))
