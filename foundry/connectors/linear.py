"""Linear GraphQL client: read issues and comments, post comments, move issues between states.

Personal API keys go in `Authorization` without a scheme (Linear's convention);
OAuth tokens would need "Bearer ", which the caller can include in `api_key`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from foundry.connectors.errors import (
    BadResponse,
    ConnectorError,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
)
from foundry.connectors.retry import RetryPolicy, call_with_retry, header_epoch_wait, parse_retry_after
from foundry.connectors.transport import send

DEFAULT_URL = "https://api.linear.app/graphql"

_ISSUE_FIELDS = """
  id identifier number title description url createdAt updatedAt priority
  state { id name type }
  team { id key }
  labels { nodes { id name } }
"""

ISSUE_QUERY = "query FoundryIssue($id: String!) { issue(id: $id) {" + _ISSUE_FIELDS + "} }"

COMMENTS_QUERY = """
query FoundryIssueComments($id: String!, $after: String) {
  issue(id: $id) {
    comments(first: 100, after: $after) {
      nodes { id body createdAt user { id name } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""

COMMENT_CREATE = """
mutation FoundryCommentCreate($issueId: String!, $body: String!) {
  commentCreate(input: { issueId: $issueId, body: $body }) { success comment { id body createdAt } }
}
"""

STATES_QUERY = """
query FoundryTeamStates($teamId: ID!) {
  workflowStates(filter: { team: { id: { eq: $teamId } } }, first: 100) { nodes { id name type } }
}
"""

VIEWER_QUERY = "query FoundryViewer { viewer { id name } }"

# One comment by id, with what confirming a decision needs: its issue, author and time.
COMMENT_QUERY = """
query FoundryComment($id: String!) {
  comment(id: $id) { id body createdAt issue { id } user { id name email } }
}
"""

ISSUE_UPDATE_STATE = """
mutation FoundryIssueSetState($id: String!, $stateId: String!) {
  issueUpdate(id: $id, input: { stateId: $stateId }) { success }
}
"""


@dataclass(frozen=True)
class LinearIssue:
    id: str
    identifier: str
    title: str
    description: str
    url: str
    created_at: str
    updated_at: str
    priority: int
    state_id: str
    state_name: str
    state_type: str
    team_id: str
    team_key: str
    labels: tuple[str, ...]

    @classmethod
    def from_graphql(cls, node: dict[str, Any]) -> "LinearIssue":
        return cls(
            id=node["id"],
            identifier=node["identifier"],
            title=node["title"],
            description=node.get("description") or "",
            url=node["url"],
            created_at=node["createdAt"],
            updated_at=node["updatedAt"],
            priority=int(node.get("priority") or 0),
            state_id=node["state"]["id"],
            state_name=node["state"]["name"],
            state_type=node["state"]["type"],
            team_id=node["team"]["id"],
            team_key=node["team"]["key"],
            labels=tuple(label["name"] for label in node["labels"]["nodes"]),
        )


@dataclass(frozen=True)
class LinearComment:
    id: str
    body: str
    created_at: str
    user_id: str | None = None
    user_name: str | None = None
    issue_id: str | None = None
    user_email: str | None = None


@dataclass(frozen=True)
class RateBudget:
    """What Linear's last answer said about the API key's budgets (None: the header was absent)."""

    requests_remaining: int | None = None
    complexity_remaining: int | None = None
    complexity: int | None = None  # what the last query cost
    reset_at: float | None = None  # epoch seconds when the tighter of the two buckets has refilled

    @classmethod
    def from_headers(cls, headers: Any) -> "RateBudget":
        def number(name: str) -> int | None:
            try:
                return int(float(headers.get(name)))
            except (TypeError, ValueError):
                return None

        resets = [r / 1000.0 for r in (number("X-RateLimit-Requests-Reset"), number("X-RateLimit-Complexity-Reset"))
                  if r is not None]
        return cls(number("X-RateLimit-Requests-Remaining"), number("X-RateLimit-Complexity-Remaining"),
                   number("X-Complexity"), max(resets) if resets else None)


@dataclass(frozen=True)
class WorkflowState:
    id: str
    name: str
    type: str


class LinearClient:
    """Synchronous, thread-safe (httpx.Client is) Linear API client."""

    def __init__(
        self,
        api_key: str,
        *,
        url: str = DEFAULT_URL,
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("LinearClient needs an API key")
        self.url = url
        self.retry = retry
        self._sleep = sleep
        self._clock = clock
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            headers={"Authorization": api_key, "Content-Type": "application/json", "User-Agent": "foundry"},
        )
        self._states: dict[str, list[WorkflowState]] = {}
        self._states_lock = threading.Lock()
        self._viewer_id: str | None = None
        self.last_budget = RateBudget()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "LinearClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations -------------------------------------------------------

    def get_issue(self, issue_id: str) -> LinearIssue:
        data = self._graphql("get_issue", issue_id, ISSUE_QUERY, {"id": issue_id})
        if not data.get("issue"):
            raise NotFound("get_issue", issue_id, "no such issue")
        return LinearIssue.from_graphql(data["issue"])

    def viewer_id(self) -> str:
        """Id of the Linear user the API key belongs to (cached): Foundry's own comments have it."""
        if self._viewer_id is None:
            data = self._graphql("viewer", "api key", VIEWER_QUERY, {})
            self._viewer_id = str(data["viewer"]["id"])
        return self._viewer_id

    def list_comments(self, issue_id: str) -> list[LinearComment]:
        comments: list[LinearComment] = []
        after: str | None = None
        while True:
            data = self._graphql("list_comments", issue_id, COMMENTS_QUERY, {"id": issue_id, "after": after})
            if not data.get("issue"):
                raise NotFound("list_comments", issue_id, "no such issue")
            page = data["issue"]["comments"]
            for node in page["nodes"]:
                user = node.get("user") or {}
                comments.append(LinearComment(node["id"], node["body"], node["createdAt"], user.get("id"), user.get("name")))
            if not page["pageInfo"]["hasNextPage"]:
                return comments
            after = page["pageInfo"]["endCursor"]

    def get_comment(self, comment_id: str) -> LinearComment:
        """One comment by id (NotFound when Linear has no such comment)."""
        data = self._graphql("get_comment", comment_id, COMMENT_QUERY, {"id": comment_id})
        node = data.get("comment")
        if not node:
            raise NotFound("get_comment", comment_id, "no such comment")
        user = node.get("user") or {}
        return LinearComment(node["id"], node["body"], node["createdAt"], user.get("id"), user.get("name"),
                             (node.get("issue") or {}).get("id"), user.get("email"))

    def create_comment(self, issue_id: str, body: str) -> LinearComment:
        """Post a comment. Retried only when it certainly was not applied (rate limit,
        connection refused): a 5xx or timeout may have created it, and a blind retry
        would post twice. Callers that need exactly-once use marked_comments.post_once."""
        data = self._graphql(
            "create_comment", issue_id, COMMENT_CREATE, {"issueId": issue_id, "body": body},
            retry_if=lambda e: e.retryable and not e.maybe_applied,
        )
        result = data.get("commentCreate") or {}
        if not result.get("success") or not result.get("comment"):
            raise BadResponse("create_comment", issue_id, "commentCreate did not succeed")
        c = result["comment"]
        return LinearComment(c["id"], c["body"], c["createdAt"])

    def workflow_states(self, team_id: str, *, refresh: bool = False) -> list[WorkflowState]:
        """The team's workflow states, cached per team (they change rarely; `refresh` after a miss)."""
        with self._states_lock:
            cached = self._states.get(team_id)
        if cached is not None and not refresh:
            return cached
        data = self._graphql("workflow_states", f"team {team_id}", STATES_QUERY, {"teamId": team_id})
        states = [WorkflowState(n["id"], n["name"], n["type"]) for n in data["workflowStates"]["nodes"]]
        if not states:
            raise NotFound("workflow_states", f"team {team_id}", "team has no workflow states (wrong team id?)")
        with self._states_lock:
            self._states[team_id] = states
        return states

    def state_id(self, team_id: str, name: str) -> str:
        """Id of the state called `name` (case-insensitive) in the team; refetches once on a miss."""
        for refresh in (False, True):
            for state in self.workflow_states(team_id, refresh=refresh):
                if state.name.casefold() == name.casefold():
                    return state.id
        known = ", ".join(s.name for s in self.workflow_states(team_id))
        raise NotFound("state_id", f"team {team_id}", f"no workflow state named {name!r} (known: {known})")

    def set_issue_state(self, issue_id: str, state_name: str, *, team_id: str | None = None) -> None:
        """Move the issue to the state called `state_name` in its team. Idempotent, so retried on 5xx."""
        if team_id is None:
            team_id = self.get_issue(issue_id).team_id
        state = self.state_id(team_id, state_name)
        data = self._graphql("set_issue_state", issue_id, ISSUE_UPDATE_STATE, {"id": issue_id, "stateId": state})
        if not (data.get("issueUpdate") or {}).get("success"):
            raise BadResponse("set_issue_state", issue_id, "issueUpdate did not succeed")

    def query(self, operation: str, target: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """Run a read-only GraphQL query (retried like every read); its `data`."""
        return self._graphql(operation, target, query, variables)

    # -- transport ------------------------------------------------------------

    def _graphql(
        self, operation: str, target: str, query: str, variables: dict[str, Any],
        *, retry_if: Callable[[ConnectorError], bool] | None = None,
    ) -> dict[str, Any]:
        def once() -> dict[str, Any]:
            response = send(self._http, operation, target, "POST", self.url, json={"query": query, "variables": variables})
            if "X-RateLimit-Requests-Remaining" in response.headers or "X-Complexity" in response.headers:
                self.last_budget = RateBudget.from_headers(response.headers)
            return self._read(operation, target, response)

        kwargs: dict[str, Any] = {"sleep": self._sleep}
        if retry_if is not None:
            kwargs["retry_if"] = retry_if
        return call_with_retry(once, self.retry, **kwargs)

    def _read(self, operation: str, target: str, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            payload = None
        errors = (payload or {}).get("errors") or [] if isinstance(payload, dict) else []
        codes = {str((e.get("extensions") or {}).get("code", "")).upper() for e in errors if isinstance(e, dict)}
        message = "; ".join(str(e.get("message", e)) for e in errors if isinstance(e, dict)) or response.reason_phrase

        if status == 429 or "RATELIMITED" in codes:
            now = self._clock()
            wait = parse_retry_after(response.headers.get("Retry-After"), now)
            if wait is None:
                # Either bucket may be the empty one: wait for the later of the two resets.
                waits = [w for w in (header_epoch_wait(response.headers, name, now, millis=True)
                                     for name in ("X-RateLimit-Requests-Reset", "X-RateLimit-Complexity-Reset"))
                         if w is not None]
                wait = max(waits) if waits else None
            raise RateLimited(operation, target, f"rate limited: {message}", retry_after=wait, status=status)
        if status >= 500:
            raise ServerError(operation, target, message, status=status)
        if status in (401, 403) or "AUTHENTICATION_ERROR" in codes or "FORBIDDEN" in codes:
            raise Unauthorized(operation, target, f"Linear rejected the API key: {message}", status=status)
        if not isinstance(payload, dict):
            raise BadResponse(operation, target, f"response is not JSON: {response.text[:200]!r}", status=status)
        if errors:
            # GraphQL reports errors under HTTP 200; naming "HTTP 200" in the message would mislead.
            shown = status if status != 200 else None
            if any("not found" in str(e.get("message", "")).lower() for e in errors if isinstance(e, dict)):
                raise NotFound(operation, target, message, status=shown)
            raise BadResponse(operation, target, f"GraphQL errors: {message}", status=shown)
        if status >= 400 or not isinstance(payload.get("data"), dict):
            raise BadResponse(operation, target, f"unexpected answer: {response.text[:200]!r}", status=status)
        return payload["data"]
