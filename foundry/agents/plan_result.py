"""The plan a plan Job reported, checked before the operator believes it (pure: no I/O).

The verify step's result carries `plan` as {hash, bytes, json, markdown}, or,
when that would not fit the 4 KiB termination message, {hash, bytes, cut: true};
either way the step's log holds the whole plan between the lines
`----- plan sha256:<hex> -----` and `----- end of plan -----` (foundry.runner.steps).

The pod ran code the ticket's author could influence, so nothing it says is
taken as it is: the plan is validated again (foundry.domain.plans.validate),
its hash recomputed and compared with the one reported, and its markdown
rendered here rather than copied. A plan that fails any of this is no plan:
PlanInvalid says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from foundry.domain import plans
from foundry.runner.steps import PLAN_END, plan_begin

PLAN_INVALID = "PlanInvalid"  # the reason of a plan Job that succeeded without a plan the operator accepts
MAX_LOG_BYTES = 4 << 20  # a verify log is a few lines and the plan (at most plans.MAX_PLAN_BYTES)


class PlanInvalid(ValueError):
    """The plan Job's plan cannot be accepted; the message says why, in one line."""


def checked_plan(reported: Any, log: str | None = None) -> dict[str, Any]:
    """{'hash', 'json', 'markdown', 'bytes'} of the plan in a verify result's `plan` field, re-validated;
    a cut plan is read from `log` (the verify step's output; None: it could not be read)."""
    if not isinstance(reported, Mapping) or not isinstance(reported.get("hash"), str):
        raise PlanInvalid("the plan Job succeeded but its result carries no plan hash")
    claimed = reported["hash"]
    try:
        if reported.get("cut"):
            if log is None:
                raise PlanInvalid(f"plan {claimed} was cut from the result and the verify log could not be read")
            plan = plans.parse_json(framed_plan(log, claimed))
        else:
            if "json" not in reported:
                raise PlanInvalid(f"plan {claimed}: the result carries neither the plan nor a cut mark")
            plan = plans.validate(reported["json"])
    except plans.PlanError as err:
        raise PlanInvalid(f"plan {claimed} does not validate: {err}") from None
    actual = plans.plan_hash(plan)
    if actual != claimed:
        raise PlanInvalid(f"the plan hashes to {actual}, not to the {claimed} its result reports")
    return {"hash": actual, "json": plan.as_dict(), "markdown": plans.render_markdown(plan),
            "bytes": len(plans.canonical_json(plan).encode("utf-8"))}


def framed_plan(log: str, plan_hash: str) -> str:
    """The JSON line framed by `plan_hash` in `log` (the last such frame: the verify step writes one)."""
    lines = log.replace("\r\n", "\n").split("\n")
    begin = plan_begin(plan_hash)
    starts = [i for i, line in enumerate(lines) if line == begin]
    for i in reversed(starts):
        if i + 2 < len(lines) and lines[i + 2] == PLAN_END:
            return lines[i + 1]
    raise PlanInvalid(f"plan {plan_hash} was cut from the result and its log holds no complete frame for it")
