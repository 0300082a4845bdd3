"""When a changed ticket is written into the run that is planning it (pure; no I/O).

A plan is made from the ticket's title and description (spec.ticket). While
the run has not been approved yet, a person may still sharpen the ticket; the
operator then re-plans (a new revision and hash, so approvals of the old plan
stop counting) when spec.ticket no longer says what the plan was made from.
The bridge's part is only to bring spec.ticket up to date, once: a retried or
duplicated delivery finds it already so and changes nothing, and a delivery
older than what the run holds (Linear retries arrive out of order) never
overwrites a newer text.

Once approved, the ticket is not the work's definition any more (the approved
plan is), so later edits are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from foundry.domain.phases import Phase

# Phases in which the plan is not approved yet. Pending: the run has not been
# analysed, so its first plan should be made from the ticket as it is now.
REPLANNABLE = frozenset({Phase.PENDING.value, Phase.ANALYSING.value, Phase.WAITING_APPROVAL.value})
TEXT_FIELDS = ("title", "description")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def ticket_patch(run: Mapping[str, Any], ticket: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch that writes `ticket`'s text into `run` (a FoundryRun), or None when none is due.

    `ticket` is a spec.ticket as the bridge builds it (foundry.kube.runs). The
    patch carries the run's resourceVersion, so it applies only to the object
    judged here: a run that moved on meanwhile (say, approved) refuses it (409)
    and the sender's retry judges again."""
    phase = (run.get("status") or {}).get("phase") or Phase.PENDING.value
    if phase not in REPLANNABLE:
        return None
    held = (run.get("spec") or {}).get("ticket") or {}
    if all((held.get(f) or "") == (ticket.get(f) or "") for f in TEXT_FIELDS):
        return None
    held_at, new_at = _time(held.get("updatedAt")), _time(ticket.get("updatedAt"))
    if held_at is not None and (new_at is None or new_at <= held_at):
        return None  # an older (or undated) text than the one the run holds
    # A description removed from the ticket is removed from the run (null deletes in a merge patch).
    changes: dict[str, Any] = {f: ticket.get(f) or None for f in TEXT_FIELDS}
    changes["updatedAt"] = ticket.get("updatedAt")
    metadata = run.get("metadata") or {}
    return {"metadata": {"resourceVersion": metadata.get("resourceVersion")}, "spec": {"ticket": changes}}
