"""Which plan hash a decision is stamped with (pure; no I/O).

An approval binds to the plan it approves: the FoundryApproval carries the
plan's hash in spec.planHash, and the operator counts it only for that plan
(foundry.domain.plan_status.approval_mismatch). The bridge and the CLI stamp a
decision with the run's current status.plan.hash, or with the hash the person
named (a `/foundry approve <hash>` comment, `foundry approve --plan-hash`);
a named hash must be the current one, since a hash the person did not see
cannot be what they approve.

People copy the short form the ticket shows (plan_status.short: 12 hex
digits) as often as the full `sha256:<64 hex>`, so a reference is either; a
short one is resolved against the current hash only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from foundry.domain.plans import HASH_PREFIX, is_plan_hash

# Decisions about a plan: approve (this plan may be applied) and replan (make
# another). reject and stop end the run whatever its plan is.
STAMPED = frozenset({"approve", "replan"})
SHORT_MIN = 12  # hex digits; fewer would read as an ordinary word in a note
_REF = re.compile(r"^(?:sha256:)?([0-9a-f]{12,64})$")


class StampRefused(ValueError):
    """The named plan is not the run's current plan; the message says so, for the person who named it."""


def current_hash(run: Mapping[str, Any]) -> str | None:
    """The run's status.plan.hash, when it has a well-formed one."""
    plan = (run.get("status") or {}).get("plan") or {}
    value = plan.get("hash") if isinstance(plan, Mapping) else None
    return value if is_plan_hash(value) else None


def current_revision(run: Mapping[str, Any]) -> int | None:
    plan = (run.get("status") or {}).get("plan") or {}
    value = plan.get("revision") if isinstance(plan, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def split_ref(text: str) -> tuple[str | None, str]:
    """(plan reference, the rest) when `text` starts with one: `sha256:<hex>` or 12 to 64 hex digits."""
    first, rest = (text.strip().split(None, 1) + ["", ""])[:2]
    if _REF.match(first.lower()):
        return first.lower(), rest.strip()
    return None, text.strip()


def _hex(ref: str) -> str:
    match = _REF.match(ref.strip().lower())
    if match is None:
        raise StampRefused(f"{ref!r} is not a plan hash (sha256:<64 hex digits>, or its first {SHORT_MIN} or more)")
    return match.group(1)


def stamp(decision: str, current: str | None, named: str | None = None) -> str | None:
    """The spec.planHash for `decision` on a run whose plan hash is `current`.

    None for decisions that are not about a plan, and for a run with no plan
    hash yet (the operator then counts the approval only while the run has had
    a single plan). StampRefused when `named` is not the current plan."""
    if decision not in STAMPED:
        if named:
            raise StampRefused(f"{decision} is not about a plan, so it names none (got {named!r})")
        return None
    if named is None:
        return current
    wanted = _hex(named)
    if current is None:
        raise StampRefused(f"the run has no plan hash yet, so plan {wanted[:SHORT_MIN]} is not its plan")
    have = current.removeprefix(HASH_PREFIX)
    if (len(wanted) == 64 and wanted != have) or not have.startswith(wanted):
        raise StampRefused(f"plan {wanted[:SHORT_MIN]} is not the run's current plan {have[:SHORT_MIN]}; "
                           "it was re-planned, read the new plan and approve that")
    return current
