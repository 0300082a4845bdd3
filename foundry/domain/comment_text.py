"""The markdown bodies of the comments Foundry posts on an issue.

Pure rendering; the once-only posting and the hidden marker are
foundry.connectors.marked_comments' job. Text that came from people (ticket text,
reasons quoting paths) is escaped where it could break the markdown around it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from foundry.config import Approver

APPROVE_COMMAND = "/foundry approve"
REJECT_COMMAND = "/foundry reject"
STOP_COMMAND = "/foundry stop"
REPLAN_COMMAND = "/foundry replan"


def _inline(text: Any) -> str:
    """One line of user text, safe inside a list item or a table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _bullets(items: Iterable[Any], empty: str = "_none_") -> str:
    lines = [f"- {_inline(i)}" for i in items if str(i).strip()]
    return "\n".join(lines) if lines else empty


def _code(path: str) -> str:
    return f"`{path.replace('`', '')}`"


def _approver_line(a: Approver | str) -> str:
    if isinstance(a, str):
        return f"- {_inline(a)}"
    roles = f" ({', '.join(a.roles)})" if a.roles else ""
    return f"- {_inline(a.name)}{roles}"


def plan_text(issue_key: str, plan: Mapping[str, Any]) -> str:
    """The plan as the approvers read it in the approval request, and as the
    agent is told it (job input `planText`): one function, so they cannot differ.
    An agent's plan is its own markdown, verbatim but for `<!--` (which could
    open a hidden marker), under a line naming its hash."""
    files = plan.get("files") or []
    if plan.get("markdown"):
        head = f"### Foundry plan for {_inline(issue_key)}, written by the coding agent"
        return "\n\n".join([head, _plan_id(plan), unhide(str(plan["markdown"])).rstrip()])
    return "\n\n".join([
        f"### Foundry plan for {_inline(issue_key)}",
        f"**Goal:** {_inline(plan.get('goal') or '')}",
        "**Steps**\n" + "\n".join(f"{i}. {_inline(s)}" for i, s in enumerate(plan.get("steps") or [], 1)),
        "**Files likely touched**\n" + ("\n".join(f"- {_code(f)}" for f in files) if files else "_not named in the ticket_"),
        "**Tests to add**\n" + _bullets(plan.get("tests") or []),
        "**Out of scope**\n" + _bullets(plan.get("outOfScope") or []),
    ])


def _plan_id(plan: Mapping[str, Any]) -> str:
    return f"**Plan** `{plan.get('hash')}` (revision {plan.get('revision') or 1})"


def unhide(text: str) -> str:
    """Text from outside made unable to open an HTML comment (Foundry's markers are HTML comments)."""
    return text.replace("<!--", "&lt;!--")


def _sentence(text: str) -> str:
    line = _inline(text)
    return line[:1].upper() + line[1:]


def replanned(issue_key: str, old_hash: str, revision: int, why: str) -> str:
    """The approvers are told: the plan they may have approved is replaced, so their approvals lapse."""
    return (f"### Foundry is re-planning {_inline(issue_key)}\n\n{_sentence(why)}, so plan "
            f"`{old_hash}` (revision {revision}) is replaced by a new plan. Approvals of plan `{old_hash}` no "
            f"longer count: the new plan follows here, and it needs approving on its own.")


def approval_request(
    issue_key: str,
    plan: Mapping[str, Any],
    areas: Sequence[str],
    approvers: Sequence[Approver | str],
    required: int,
) -> str:
    """The plan, the risk areas and who may approve, with how to approve."""
    parts = [
        plan_text(issue_key, plan),
        "**Risk areas:** " + (", ".join(areas) if areas else "none detected"),
    ]
    if plan.get("hash") and not plan.get("markdown"):
        parts.insert(1, _plan_id(plan))
    who = "\n".join(_approver_line(a) for a in approvers) if approvers else (
        "_nobody configured may approve a change in these areas; ask an administrator_")
    noun = "approval" if required == 1 else "approvals"
    parts.append(f"**Needs {required} {noun} from**\n{who}")
    parts.append(
        f"Reply `{APPROVE_COMMAND}` to approve this plan, `{REJECT_COMMAND}` to reject, `{REPLAN_COMMAND}` "
        "for a new plan. An approval counts for this plan only; nothing runs until it is approved."
    )
    return "\n\n".join(parts)


def clarification(issue_key: str, questions: Sequence[str]) -> str:
    """The questions that must be answered before Foundry can plan the work."""
    numbered = "\n".join(f"{i}. {q}" for i, q in enumerate(questions, 1))
    return (
        f"### Foundry needs more information on {_inline(issue_key)}\n\n"
        f"Before this can be planned:\n\n{numbered}\n\n"
        "Update the issue description; the next update starts a new run."
    )


def blocked(issue_key: str, reason: str) -> str:
    """Why Foundry will not work on the issue, and what a human can do."""
    return (
        f"### Foundry stopped on {_inline(issue_key)}\n\n"
        f"**Reason:** {_inline(reason)}\n\n"
        "No agent will run for this issue until a human resolves this."
    )


def pr_opened(issue_key: str, pr_number: int, pr_url: str, branch: str, attempt: int = 1) -> str:
    """A pull request exists for the work."""
    retry = f" (attempt {attempt})" if attempt > 1 else ""
    return (
        f"### Pull request opened for {_inline(issue_key)}\n\n"
        f"[#{pr_number}]({pr_url}) from `{branch}`{retry}. "
        "Foundry watches its checks and reviews and will retry failed checks within policy limits."
    )


def done(issue_key: str, pr_number: int | None, pr_url: str | None, merged: bool = True) -> str:
    """The run finished: merged, or closed without merging."""
    link = f"[#{pr_number}]({pr_url})" if pr_number and pr_url else "the pull request"
    verdict = "was merged" if merged else "was closed without merging"
    return f"### Foundry finished {_inline(issue_key)}\n\n{link} {verdict}."
