"""Reading what an attempt reported (docs/agent-contract.md, "The result").

Each step of the agent pod writes one JSON object to its container's
termination message; the local provider's child writes the same object to
`<workdir>/result.json`. The text comes from the pod, which ran code the
ticket's author could influence, so it is read defensively: at most 4 KiB,
only the known fields, each type-checked and bounded; anything else is
ignored, and a message that is not such an object becomes a clear reason
instead of an exception. Pure: no I/O here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from foundry.domain import plans

MAX_BYTES = 4096  # the kubelet keeps at most this much of a termination message
OUTCOMES = ("pushed", "no-changes", "refused", "failed")
# What `prepare` and `agent` write when they did their part; never the last word of a finished pod.
STEP_DONE = "ok"
STEPS = ("prepare", "agent", "publish")
# A plan Job's steps, and what its verify step says when it made a plan (foundry.runner.result.PLANNED).
PLAN_STEPS = ("prepare", "plan", "verify")
PLANNED = "planned"
# What the operator records of a result in status.agent.jobs[] (the rest is the pod's business).
RESULT_FIELDS = ("outcome", "reason", "step", "headSha", "pr", "tokens", "costUsd", "summary", "filesChanged",
                 "linesAdded", "linesRemoved", "planHash")
_SHA = re.compile(r"^[0-9a-f]{7,64}$")
_MAX_REASON = 1000
_MAX_SUMMARY = 2000


def _text(value: Any, limit: int, *, one_line: bool = True) -> str | None:
    if not isinstance(value, str):
        return None
    value = " ".join(value.split()) if one_line else value.strip()
    return value[:limit] if value else None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _money(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        return None
    return round(float(value), 6) if value < 1e9 else None


def parse_result(text: str | bytes | None, *, step_done: bool = False, planning: bool = False) -> dict[str, Any]:
    """The result object as the operator records it, or {'error': why} when unreadable.

    Keys (each only when present and well-formed): outcome, reason, step,
    headSha, branch, pr {number, url}, filesChanged, linesAdded, linesRemoved,
    tokens {input, output}, costUsd, turns, runner, summary, planHash. `planning`: a plan
    Job's result, whose outcome may be `planned` and whose `plan` is kept as
    reported (foundry.agents.plan_result checks it; nothing here trusts it).
    """
    if text is None:
        return {"error": "no result was written"}
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
    if not raw.strip():
        return {"error": "the result is empty"}
    if len(raw) > MAX_BYTES:
        return {"error": f"the result is {len(raw)} bytes, more than the {MAX_BYTES} a termination message holds"}
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        return {"error": f"the result is not JSON ({type(err).__name__}): {_text(raw.decode('utf-8', 'replace'), 120)!r}"}
    if not isinstance(doc, Mapping):
        return {"error": f"the result is JSON but not an object (a {type(doc).__name__})"}
    outcome = doc.get("outcome")
    outcomes = (*OUTCOMES, PLANNED) if planning else OUTCOMES
    if outcome not in outcomes and not (step_done and outcome == STEP_DONE):
        return {"error": f"the result's outcome {str(outcome)[:40]!r} is not one of {', '.join(outcomes)}"}
    out: dict[str, Any] = {"outcome": outcome}
    for key, limit in (("reason", _MAX_REASON), ("summary", _MAX_SUMMARY), ("branch", 255), ("runner", 64)):
        value = _text(doc.get(key), limit, one_line=key != "summary")
        if value:
            out[key] = value
    if doc.get("step") in (PLAN_STEPS if planning else STEPS):
        out["step"] = doc["step"]
    if planning and isinstance(doc.get("plan"), Mapping):
        out["plan"] = dict(doc["plan"])
    sha = doc.get("headSha")
    if isinstance(sha, str) and _SHA.match(sha):
        out["headSha"] = sha
    approved = doc.get("planHash")  # the approved plan an apply attempt was given (input.json planHash)
    if plans.is_plan_hash(approved):
        out["planHash"] = approved
    pr = doc.get("pr")
    if isinstance(pr, Mapping) and _count(pr.get("number")):
        out["pr"] = {"number": pr["number"]}
        url = _text(pr.get("url"), 2048)
        if url and url.startswith(("https://", "http://")):
            out["pr"]["url"] = url
    for key in ("filesChanged", "linesAdded", "linesRemoved", "turns"):
        value = _count(doc.get(key))
        if value is not None:
            out[key] = value
    tokens = doc.get("tokens")
    if isinstance(tokens, Mapping):
        counted = {k: _count(tokens.get(k)) for k in ("input", "output")}
        if any(v is not None for v in counted.values()):
            out["tokens"] = {k: v or 0 for k, v in counted.items()}
    cost = _money(doc.get("costUsd"))
    if cost is not None:
        out["costUsd"] = cost
    return out


# ---------------------------------------------------------------- from a pod


def _terminated(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    state = status.get("state") or {}
    return state.get("terminated") if isinstance(state, Mapping) else None


def pod_result(pod: Mapping[str, Any], *, planning: bool = False) -> dict[str, Any] | None:
    """The result of the last step of `pod` (a Pod dict as the API returns it) that ran.

    None while no step has finished. A step that ended without a message (killed
    for memory, say) is reported from its container state: outcome `failed`,
    with the kubelet's reason and exit code. `planning`: a plan Job's pod.
    """
    status = pod.get("status") or {}
    statuses: list[Mapping[str, Any]] = [*(status.get("initContainerStatuses") or []),
                                         *(status.get("containerStatuses") or [])]
    steps = PLAN_STEPS if planning else STEPS
    order = {name: i for i, name in enumerate(steps)}
    ended = [(s, t) for s in statuses if (t := _terminated(s)) is not None]
    if not ended:
        return None
    ended.sort(key=lambda st: (order.get(st[0].get("name"), len(steps)), str(st[1].get("finishedAt") or "")))
    container, term = ended[-1]
    step = str(container.get("name") or "?")
    message = term.get("message")
    if message:
        result = parse_result(message, step_done=True, planning=planning)
        if result.get("outcome") == STEP_DONE:
            # The pod was ended (its deadline, a deletion) while a later step ran: that one said nothing.
            result.update(outcome="failed", reason=f"step {step} was the last to finish")
        if "error" not in result:
            if step in steps:
                result.setdefault("step", step)
            if term.get("reason") == "OOMKilled" and result["outcome"] == "failed":
                # The kernel killed the CLI, not the runner: its own reason says only "exit code 137".
                result["reason"] = (f"step {step} was OOMKilled (over its memory limit): "
                                    f"{result.get('reason') or 'no reason reported'}")[:_MAX_REASON]
            return result
        return {"outcome": "failed", "step": step,
                "reason": f"step {step} exited {term.get('exitCode')} with an unreadable result: {result['error']}"}
    why = term.get("reason") or "Terminated"
    return {"outcome": "failed", "step": step,
            "reason": f"step {step} ended with {why} (exit code {term.get('exitCode')}) and wrote no result"}


def pod_cause(pod: Mapping[str, Any]) -> str | None:
    """`OOMKilled` when the kubelet says a step of `pod` was killed over its memory limit, else None.
    From the container states the kubelet writes, never from the pod's own words (its result)."""
    status = pod.get("status") or {}
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        term = _terminated(container)
        if term is not None and term.get("reason") == "OOMKilled":
            return "OOMKilled"
    return None


def newest_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The attempt's latest pod (a Job with backoffLimit 0 normally has one)."""
    if not pods:
        return None
    return max(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))


def totals(jobs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """status.agent.budgetUsed: tokens and cost summed over every attempt's result."""
    cost = sum(float(j.get("costUsd") or 0) for j in jobs)
    tokens = {"input": 0, "output": 0}
    for j in jobs:
        for k in tokens:
            tokens[k] += int((j.get("tokens") or {}).get(k) or 0)
    return {"costUsd": round(cost, 6), "tokens": tokens}
