"""Whether a recorded decision is what it claims to be (pure; no I/O).

A FoundryApproval is a claim: "this person decided this on this run". Two
things bind it beyond the admission policy (which only says who created the
object):

- *time*: an approval counts only if made after the plan it approves (else a
  run that does not exist yet, whose name is computable, could be approved in
  advance); a reject or stop only if made after the run was created;
- *Linear*: a decision from Linear names the comment it was made in, and the
  operator reads that comment back from Linear. It counts only if the comment
  exists, is on the run's issue, was written by the named approver, says this
  decision, and is newer than the bound above. The bridge's word alone (a
  signed webhook, or whoever holds the bridge's ServiceAccount) is not enough.

Each check returns None when the decision stands, else the reason in words
meant for the person whose decision did not count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from foundry.domain.plan_stamp import STAMPED, split_ref

# The command as a person types it in a Linear comment: "/foundry approve [plan hash] [note]".
# The bridge parses comments with this too (foundry.bridge.mapping), so both read the same thing.
_COMMAND = re.compile(r"^/foundry[ \t]+(approve|reject|stop|replan)\b[ \t]*(.*)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class LinearCommentFacts:
    """What Linear says about a comment (LinearClient.get_comment)."""

    id: str
    issue_id: str | None
    user_id: str | None
    user_email: str | None
    body: str
    created_at: datetime


def parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def parse_command(body: str) -> tuple[str, str | None, str] | None:
    """(decision, plan reference, note) of a /foundry command comment; None if it is none.

    The plan reference is a hash (full or its first 12+ hex digits) right after
    approve or replan: `/foundry approve 0123456789ab looks right`."""
    match = _COMMAND.match(body.strip())
    if match is None:
        return None
    decision, rest = match.group(1).lower(), match.group(2).strip()
    ref, note = split_ref(rest) if decision in STAMPED else (None, rest)
    return decision, ref, note


def command_in(body: str) -> str | None:
    """The decision a comment body commands (approve | reject | stop | replan), if it is a /foundry command."""
    parsed = parse_command(body)
    return parsed[0] if parsed else None


def _what(decision: str) -> str:
    if decision == "approve":
        return "the plan it approves"
    return "the plan it asks to replace" if decision == "replan" else "the run it decides on"


def _at(stamp: datetime) -> str:
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def check_made_after(decision: str, made_at: datetime, not_before: datetime | None) -> str | None:
    """The time bound: `made_at` (the API server's creationTimestamp) at or after `not_before`.

    Compared at whole seconds, the resolution of Kubernetes timestamps."""
    if not_before is None or made_at.replace(microsecond=0) >= not_before.replace(microsecond=0):
        return None
    what = _what(decision)
    return f"it was recorded at {_at(made_at)}, before {what} existed ({_at(not_before)})"


def check_linear_comment(spec: Mapping[str, Any], facts: LinearCommentFacts | None, issue_id: str,
                         not_before: datetime | None) -> str | None:
    """Whether the Linear comment behind a `source: linear` decision confirms it."""
    comment_id = spec.get("commentId")
    if not comment_id:
        return "it names no Linear comment, so Foundry cannot confirm it with Linear"
    if facts is None:
        return f"Linear has no comment {comment_id}, so nobody made this decision in Linear"
    if facts.issue_id != issue_id:
        return f"Linear comment {comment_id} is not on this issue"
    approver = str(spec.get("approver") or "").strip().lower()
    authors = {a.lower() for a in (facts.user_id, facts.user_email) if a}
    if not approver or approver not in authors:
        return f"Linear comment {comment_id} was not written by {spec.get('approver')!r}"
    parsed = parse_command(facts.body)
    said = parsed[0] if parsed else None
    if said != spec.get("decision"):
        return (f"Linear comment {comment_id} does not say `/foundry {spec.get('decision')}`"
                + (f" (it says `/foundry {said}`)" if said else ""))
    named = parsed[1] if parsed else None
    stamped = str(spec.get("planHash") or "").removeprefix("sha256:")
    if named and not stamped.startswith(named.removeprefix("sha256:")):
        # The person named a plan; a record of another plan (or of none) is not their decision.
        return (f"Linear comment {comment_id} names plan {named.removeprefix('sha256:')[:12]}, and this decision "
                f"is recorded for {'plan ' + stamped[:12] if stamped else 'no plan'}")
    if not_before is not None and facts.created_at.replace(microsecond=0) < not_before.replace(microsecond=0):
        what = _what(str(spec.get("decision")))
        return f"Linear comment {comment_id} was written at {_at(facts.created_at)}, before {what} ({_at(not_before)})"
    return None


def refusal_comment(issue_key: str, decision: str, who: str, source: str, why: str) -> str:
    """The ticket comment telling the person their decision did not count, and why."""
    def line(text: Any) -> str:
        return " ".join(str(text).split()).replace("|", "\\|")

    return (f"### Foundry did not count a decision on {line(issue_key)}\n\n"
            f"**Decision:** `{line(decision)}` by {line(who)} ({line(source)})\n\n"
            f"**Why it did not count:** {line(why)}\n\n"
            "Nothing changed on the run. A configured approver can decide again with a new "
            f"`/foundry {line(decision)}` comment here, or with `foundry {line(decision)} {line(issue_key)}`.")
