"""Comments Foundry writes exactly once per (run, purpose).

Each comment ends with a hidden marker, an HTML comment that Linear's markdown
renderer does not show. The run records the comment id it posted; when a crash
falls between posting and recording, the marker is how the retry finds the
comment it already posted instead of posting a second one.
"""

from __future__ import annotations

import re
from typing import Callable, Protocol

from foundry.connectors.errors import ConnectorError

PURPOSES = frozenset({"approval_request", "clarification", "pr_opened", "blocked", "done"})
# Purposes written once per thing rather than once per run: "<purpose>.<key>",
# the key a Kubernetes object name (the refused decision, the PR not adopted, a re-plan's revision
# `r<n>`: its approval request and the notice that it replaced the plan before it).
KEYED_PURPOSES = frozenset({"refused", "pr_not_adopted", "plan", "replanned"})

_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?$")
_MARKER = re.compile(r"<!-- foundry:run=([a-z0-9._-]+);purpose=([a-z_]+(?:\.[a-z0-9][a-z0-9.-]*)?) -->")


def keyed_purpose(purpose: str, key: str) -> str:
    if purpose not in KEYED_PURPOSES:
        raise ValueError(f"unknown keyed comment purpose {purpose!r}; expected one of {sorted(KEYED_PURPOSES)}")
    if not _NAME.match(key) or len(key) > 253:
        raise ValueError(f"comment key {key!r} is not a Kubernetes object name")
    return f"{purpose}.{key}"


def _valid_purpose(purpose: str) -> bool:
    base, dot, key = purpose.partition(".")
    if not dot:
        return purpose in PURPOSES
    return base in KEYED_PURPOSES and bool(_NAME.match(key))


class _Comment(Protocol):
    id: str
    body: str
    user_id: str | None


class CommentWriter(Protocol):
    def list_comments(self, issue_id: str) -> list[_Comment]: ...  # pragma: no cover - protocol

    def create_comment(self, issue_id: str, body: str) -> _Comment: ...  # pragma: no cover - protocol


def marker(run_name: str, purpose: str) -> str:
    if not _NAME.match(run_name):
        raise ValueError(f"run name {run_name!r} is not a Kubernetes object name")
    if not _valid_purpose(purpose):
        raise ValueError(f"unknown comment purpose {purpose!r}; expected one of {sorted(PURPOSES)} "
                         f"or <{'|'.join(sorted(KEYED_PURPOSES))}>.<object name>")
    return f"<!-- foundry:run={run_name};purpose={purpose} -->"


def with_marker(body: str, run_name: str, purpose: str) -> str:
    return f"{body.rstrip()}\n\n{marker(run_name, purpose)}"


def find_markers(body: str) -> list[tuple[str, str]]:
    """(run, purpose) pairs of every Foundry marker in a comment body."""
    return _MARKER.findall(body)


def find_marked(comments: list[_Comment], run_name: str, purpose: str, author_id: str | None = None) -> str | None:
    """Id of the first comment carrying the marker for (run, purpose), if any.
    With `author_id`, only comments by that user count, so a human pasting a
    marker cannot suppress Foundry's comment."""
    for comment in comments:
        if author_id is not None and comment.user_id != author_id:
            continue
        if (run_name, purpose) in find_markers(comment.body):
            return comment.id
    return None


def post_once(
    linear: CommentWriter,
    issue_id: str,
    run_name: str,
    purpose: str,
    body: str,
    recorded_id: str | None,
    record: Callable[[str], None],
    *,
    attempts: int = 3,
    author_id: str | None = None,
) -> str:
    """Post `body` on the issue once for (run, purpose) and return the comment id.

    Order: what the run recorded; else a marked comment already on the issue
    (we crashed after posting); else post, then record. A post that fails
    ambiguously (5xx, timeout: it may have been applied) is followed by another
    search, never by a blind second post. `author_id` (Foundry's own Linear user,
    LinearClient.viewer_id()) limits the search to comments Foundry wrote.
    """
    if recorded_id:
        return recorded_id
    text = with_marker(body, run_name, purpose)
    last: ConnectorError | None = None
    for _ in range(max(1, attempts)):
        found = find_marked(linear.list_comments(issue_id), run_name, purpose, author_id)
        if found is not None:
            record(found)
            return found
        try:
            posted = linear.create_comment(issue_id, text)
        except ConnectorError as err:
            if not err.maybe_applied or not err.retryable:
                raise
            last = err
            continue
        record(posted.id)
        return posted.id
    # Out of attempts; one last look, since the final ambiguous post may have landed.
    found = find_marked(linear.list_comments(issue_id), run_name, purpose, author_id)
    if found is not None:
        record(found)
        return found
    assert last is not None
    raise last
