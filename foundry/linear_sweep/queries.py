"""The sweep's GraphQL queries and the filters they send (pure; Linear's documented schema).

Each query names exactly the fields the commands need, with small `first`
arguments, because Linear charges complexity by what a query could return
(a connection multiplies its children by `first`), not by what it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from foundry.bridge.mapping import CLOSED_STATE_TYPES
from foundry.domain.triggers import TriggerRule

ISSUE_PAGE = 10
COMMENT_PAGE = 25
HISTORY_PAGE = 25
LABELS_PER_ISSUE = 30  # routing reads them; more on one issue is rare, and each costs every page
# Comments are asked for per batch of issues: `in` lists stay short.
ISSUES_PER_COMMENT_QUERY = 50

ISSUES_QUERY = """
query FoundrySweepIssues($filter: IssueFilter!, $first: Int!, $after: String) {
  issues(filter: $filter, first: $first, after: $after, orderBy: updatedAt) {
    nodes {
      id identifier title description url updatedAt priority
      state { id name type }
      team { id key }
      labels(first: %d) { nodes { id name } }
    }
    pageInfo { hasNextPage endCursor }
  }
}
""" % LABELS_PER_ISSUE

COMMENTS_QUERY = """
query FoundrySweepComments($filter: CommentFilter!, $first: Int!, $after: String) {
  comments(filter: $filter, first: $first, after: $after, orderBy: createdAt) {
    nodes { id body createdAt issue { id } user { id name email } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

HISTORY_QUERY = """
query FoundrySweepHistory($id: String!, $first: Int!, $after: String) {
  issue(id: $id) {
    history(first: $first, after: $after) {
      nodes {
        createdAt fromStateId toStateId fromTitle toTitle updatedDescription
        addedLabelIds removedLabelIds fromPriority toPriority
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""


def iso(at: datetime) -> str:
    """Linear's timestamp form: UTC, milliseconds, Z."""
    return at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def issue_filter(rule: TriggerRule, since: datetime, team: str | None = None) -> dict[str, Any]:
    """Open issues that carry the trigger, updated at or after `since`.

    The trigger is checked again on each node by the webhooks' own mapping;
    the filter only keeps the pages short.
    """
    flt: dict[str, Any] = {
        "updatedAt": {"gte": iso(since)},
        "state": {"type": {"nin": sorted(CLOSED_STATE_TYPES)}},
    }
    if rule.label:
        flt["labels"] = {"some": {"name": {"eqIgnoreCase": rule.label}}}
    if rule.states:
        flt["or"] = [{"state": {"name": {"eqIgnoreCase": state}}} for state in rule.states]
    if team:
        flt["team"] = {"key": {"eq": team}}
    return flt


def comment_filter(issue_ids: Sequence[str], since: datetime) -> dict[str, Any]:
    """`/foundry` comments on these issues, created at or after `since` (the mapping parses them)."""
    return {
        "issue": {"id": {"in": list(issue_ids)}},
        "createdAt": {"gte": iso(since)},
        "body": {"containsIgnoreCase": "/foundry"},
    }


def page_of(data: dict[str, Any], *path: str) -> tuple[list[dict[str, Any]], str | None]:
    """The nodes at `path` in a query's data and the cursor of the next page (None: last page)."""
    connection: Any = data
    for key in path:
        connection = connection.get(key) if isinstance(connection, dict) else None
    if not isinstance(connection, dict):
        return [], None
    nodes = [n for n in connection.get("nodes") or [] if isinstance(n, dict)]
    info = connection.get("pageInfo") or {}
    return nodes, info.get("endCursor") if info.get("hasNextPage") else None
