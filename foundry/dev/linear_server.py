"""A local Linear: the GraphQL subset Foundry uses, and signed webhooks like Linear's.

The schema below is a subset of Linear's public schema (same type, field and
argument names), executed by graphql-core, so a query the real API would
reject for an unknown field is rejected here too.

    with LinearServer(webhook_url=bridge_url, webhook_secret="s", retry_scale=0.001) as linear:
        team = linear.add_team("ACME")
        issue = linear.create_issue("ACME", "Add a health endpoint", "...")
        client = LinearClient(linear.api_key, url=linear.graphql_url)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import graphql
from aiohttp import web

from foundry.dev.faults import Faults
from foundry.dev.linear_filters import FilterError, match_comment, match_issue
from foundry.dev.linear_ratelimit import RateLimits, query_complexity
from foundry.dev.server_thread import ServerThread, control_routes
from foundry.dev.webhook_sender import (
    RETRY_DELAYS,
    Delivery,
    WebhookControls,
    WebhookSender,
    only_200,
    with_fresh_timestamp,
)

SCHEMA_SDL = """
scalar DateTime

type Query {
  issue(id: String!): Issue!
  team(id: String!): Team!
  workflowStates(filter: WorkflowStateFilter, first: Int, after: String): WorkflowStateConnection!
  viewer: User!
  issues(filter: IssueFilter, first: Int, after: String, orderBy: PaginationOrderBy, includeArchived: Boolean): IssueConnection!
  comments(filter: CommentFilter, first: Int, after: String, orderBy: PaginationOrderBy, includeArchived: Boolean): CommentConnection!
  comment(hash: String, id: String): Comment!
}

type Mutation {
  commentCreate(input: CommentCreateInput!): CommentPayload!
  issueUpdate(id: String!, input: IssueUpdateInput!): IssuePayload!
}

input CommentCreateInput { id: String, issueId: String, body: String, parentId: String }
input IssueUpdateInput { stateId: String, title: String, description: String, priority: Int }
input WorkflowStateFilter { team: TeamFilter, name: StringComparator, type: StringComparator }
input TeamFilter { id: IDComparator, key: StringComparator }
input IDComparator { eq: ID, in: [ID!] }
input StringComparator {
  eq: String, eqIgnoreCase: String, in: [String!], nin: [String!], startsWith: String, containsIgnoreCase: String
}
enum PaginationOrderBy { createdAt updatedAt }
scalar DateTimeOrDuration
input DateComparator { eq: DateTimeOrDuration, gt: DateTimeOrDuration, gte: DateTimeOrDuration, lt: DateTimeOrDuration, lte: DateTimeOrDuration }
input IssueLabelFilter { name: StringComparator }
input IssueLabelCollectionFilter { name: StringComparator, some: IssueLabelFilter, every: IssueLabelFilter }
input IssueFilter {
  id: IDComparator, createdAt: DateComparator, updatedAt: DateComparator
  labels: IssueLabelCollectionFilter, state: WorkflowStateFilter, team: TeamFilter
  and: [IssueFilter!], or: [IssueFilter!]
}
input NullableIssueFilter { id: IDComparator, and: [NullableIssueFilter!], or: [NullableIssueFilter!] }
input CommentFilter {
  createdAt: DateComparator, updatedAt: DateComparator, body: StringComparator, issue: NullableIssueFilter
  and: [CommentFilter!], or: [CommentFilter!]
}

type PageInfo { hasNextPage: Boolean!, hasPreviousPage: Boolean!, startCursor: String, endCursor: String }

type User { id: ID!, name: String!, displayName: String!, email: String! }
type Team {
  id: ID!, key: String!, name: String!
  states(first: Int, after: String): WorkflowStateConnection!
}
type WorkflowState { id: ID!, name: String!, type: String!, position: Float!, team: Team! }
type WorkflowStateConnection { nodes: [WorkflowState!]!, pageInfo: PageInfo! }
type IssueLabel { id: ID!, name: String! }
type IssueLabelConnection { nodes: [IssueLabel!]!, pageInfo: PageInfo! }
type Issue {
  id: ID!, identifier: String!, number: Float!, title: String!, description: String, url: String!
  createdAt: DateTime!, updatedAt: DateTime!, priority: Float!
  state: WorkflowState!, team: Team!
  labels(first: Int, after: String): IssueLabelConnection!
  comments(first: Int, after: String): CommentConnection!
  history(first: Int, after: String): IssueHistoryConnection!
}
type IssueConnection { nodes: [Issue!]!, pageInfo: PageInfo! }
type IssueHistory {
  id: ID!, createdAt: DateTime!, updatedAt: DateTime!, actor: User, actorId: String
  fromStateId: String, toStateId: String, fromTitle: String, toTitle: String, updatedDescription: Boolean
  addedLabelIds: [String!], removedLabelIds: [String!], fromPriority: Float, toPriority: Float
}
type IssueHistoryConnection { nodes: [IssueHistory!]!, pageInfo: PageInfo! }
type Comment { id: ID!, body: String!, createdAt: DateTime!, updatedAt: DateTime!, user: User, issue: Issue! }
type CommentConnection { nodes: [Comment!]!, pageInfo: PageInfo! }
type CommentPayload { success: Boolean!, lastSyncId: Float!, comment: Comment! }
type IssuePayload { success: Boolean!, lastSyncId: Float!, issue: Issue }
"""

DEFAULT_STATES = (
    ("Backlog", "backlog"),
    ("Todo", "unstarted"),
    ("In Progress", "started"),
    ("In Review", "started"),
    ("Done", "completed"),
    ("Canceled", "canceled"),
)

CONTROLS = frozenset({"add_team", "add_user", "create_issue", "update_issue", "add_comment",
                      "redeliver", "duplicate", "issue_json", "comments_json"})


# Distinct valid query strings kept parsed; a client's handful fits many times over.
DOCUMENT_CACHE = 256


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "issue"


@dataclass
class User:
    id: str
    name: str
    email: str


@dataclass
class State:
    id: str
    name: str
    type: str
    position: float
    team_id: str


@dataclass
class Team:
    id: str
    key: str
    name: str
    states: list[State] = field(default_factory=list)
    next_number: int = 1


@dataclass
class Issue:
    id: str
    number: int
    team_id: str
    title: str
    description: str
    priority: int
    state_id: str
    label_ids: list[str]
    created_at: str
    updated_at: str
    history: list["HistoryEntry"] = field(default_factory=list)


@dataclass
class HistoryEntry:
    """One change to an issue, as Linear's `IssueHistory` records it (what moved, from what, to what)."""

    id: str
    created_at: str
    actor_id: str
    from_state_id: str | None = None
    to_state_id: str | None = None
    from_title: str | None = None
    to_title: str | None = None
    updated_description: bool = False
    added_label_ids: list[str] | None = None
    removed_label_ids: list[str] | None = None
    from_priority: int | None = None
    to_priority: int | None = None


@dataclass
class Comment:
    id: str
    issue_id: str
    body: str
    user_id: str
    created_at: str
    updated_at: str


class _GraphQLError(Exception):
    def __init__(self, message: str, code: str, user_message: str) -> None:
        super().__init__(message)
        self.extensions = {"code": code, "type": code.lower().replace("_", " "), "userPresentableMessage": user_message}


class LinearServer(ServerThread, WebhookControls):
    def __init__(
        self,
        *,
        api_key: str = "lin_api_foundry_test",
        webhook_url: str | None = None,
        webhook_secret: str = "linear-webhook-secret",
        retry_scale: float = 1.0,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        webhook_timeout: float = 5.0,
        org_key: str = "acme",
        page_size_cap: int = 250,
        rate_limits: RateLimits | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.organization_id = str(uuid.uuid4())
        self.webhook_id = str(uuid.uuid4())
        self.org_key = org_key
        self.page_size_cap = page_size_cap
        self.faults = Faults()
        # Linear's request and complexity budgets (None: unlimited, for tests about something else).
        self.rate_limits = rate_limits
        self._webhook_url = webhook_url
        self._webhook_opts = dict(retry_delays=retry_delays, retry_scale=retry_scale, timeout=webhook_timeout)
        self.webhooks: WebhookSender | None = None
        self._lock = threading.RLock()
        self.users: dict[str, User] = {}
        self.teams: dict[str, Team] = {}
        self.issues: dict[str, Issue] = {}
        self.comments: list[Comment] = []
        self.labels: dict[str, str] = {}  # id -> name
        self.bot = self.add_user("Foundry", "foundry@example.com")  # whom the API key belongs to
        self._schema = graphql.build_schema(SCHEMA_SDL)
        self._documents: dict[str, graphql.DocumentNode] = {}  # valid queries, parsed (_checked)
        self._sync_id = 0

    # -- lifecycle ----------------------------------------------------------

    def build_app(self) -> web.Application:
        assert self.loop is not None
        # Linear counts only a 200 as delivered, and its retries (1 min, 1 h, 6 h
        # later) carry the time they are sent (the decision record on Linear retries, docs/decisions/).
        self.webhooks = WebhookSender(self.loop, self._webhook_headers, url=self._webhook_url, accepts=only_200,
                                      resend=self._resigned, **self._webhook_opts)  # type: ignore[arg-type]
        app = web.Application()
        app.add_routes([web.post("/graphql", self._handle_graphql), *control_routes(self, CONTROLS)])
        return app

    async def on_stop(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.aclose()

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    def set_webhook_url(self, url: str | None) -> None:
        self._webhook_url = url
        if self.webhooks is not None:
            self.webhooks.url = url

    # -- control: state a test or the demo sets up ----------------------------

    def add_user(self, name: str, email: str) -> str:
        with self._lock:
            user = User(str(uuid.uuid4()), name, email)
            self.users[user.id] = user
            return user.id

    def add_team(self, key: str, name: str | None = None) -> str:
        if not re.fullmatch(r"[A-Z][A-Z0-9]{0,6}", key):
            raise ValueError(f"team key {key!r} must be 1-7 upper-case letters/digits")
        with self._lock:
            if any(t.key == key for t in self.teams.values()):
                raise ValueError(f"team {key!r} already exists")
            team = Team(str(uuid.uuid4()), key, name or key.title())
            team.states = [State(str(uuid.uuid4()), n, t, float(i), team.id) for i, (n, t) in enumerate(DEFAULT_STATES)]
            self.teams[team.id] = team
            return team.id

    def create_issue(self, team_key: str, title: str, description: str = "", *, labels: list[str] | None = None,
                     priority: int = 0, state: str = "Todo", actor_id: str | None = None) -> str:
        """Create an issue (as a human in Linear's UI would) and send the `Issue` `create` webhook."""
        with self._lock:
            team = self._team_by_key(team_key)
            label_ids = [self._label_id(name) for name in labels or []]
            stamp = now_iso()
            issue = Issue(str(uuid.uuid4()), team.next_number, team.id, title, description, priority,
                          self._state_by_name(team, state).id, label_ids, stamp, stamp)
            team.next_number += 1
            self.issues[issue.id] = issue
            data = self._issue_data(issue)
        self._emit("Issue", "create", data, actor_id or self._first_human(), None)
        return issue.id

    def update_issue(self, issue_id: str, *, actor_id: str | None = None, title: str | None = None,
                     description: str | None = None, labels: list[str] | None = None,
                     priority: int | None = None, state: str | None = None) -> None:
        """Change an issue and send the `Issue` `update` webhook with `updatedFrom`."""
        with self._lock:
            issue = self._issue(issue_id)
            team = self.teams[issue.team_id]
            changes: dict[str, Any] = {}
            if title is not None:
                changes["title"] = title
            if description is not None:
                changes["description"] = description
            if priority is not None:
                changes["priority"] = priority
            if labels is not None:
                changes["label_ids"] = [self._label_id(n) for n in labels]
            if state is not None:
                changes["state_id"] = self._state_by_name(team, state).id
        self._apply_update(issue_id, changes, actor_id or self._first_human())

    def add_comment(self, issue_id: str, body: str, *, user_id: str | None = None) -> str:
        """A human comments (e.g. "/foundry approve"); sends the `Comment` `create` webhook."""
        return self._create_comment(issue_id, body, user_id or self._first_human())

    def issue_json(self, issue_id: str) -> dict[str, Any]:
        with self._lock:
            return self._issue_data(self._issue(issue_id))

    def comments_json(self, issue_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [self._comment_data(c) for c in self.comments if c.issue_id == issue_id]

    # -- model helpers (call with the lock held) ------------------------------

    def _first_human(self) -> str:
        with self._lock:
            for user in self.users.values():
                if user.id != self.bot:
                    return user.id
        return self.add_user("Ada Lovelace", "ada@example.com")

    def _team_by_key(self, key: str) -> Team:
        for team in self.teams.values():
            if team.key == key:
                return team
        raise KeyError(f"no team with key {key!r}")

    def _state_by_name(self, team: Team, name: str) -> State:
        for state in team.states:
            if state.name.casefold() == name.casefold():
                return state
        raise ValueError(f"team {team.key} has no state {name!r}")

    def _label_id(self, name: str) -> str:
        for label_id, label in self.labels.items():
            if label == name:
                return label_id
        label_id = str(uuid.uuid4())
        self.labels[label_id] = name
        return label_id

    def _issue(self, issue_id: str) -> Issue:
        issue = self.issues.get(issue_id)
        if issue is None:  # Linear also accepts the identifier ("ACME-12") as the id
            for candidate in self.issues.values():
                if self._identifier(candidate) == issue_id:
                    return candidate
            raise KeyError(f"no issue {issue_id!r}")
        return issue

    def _identifier(self, issue: Issue) -> str:
        return f"{self.teams[issue.team_id].key}-{issue.number}"

    def _issue_url(self, issue: Issue) -> str:
        return f"https://linear.app/{self.org_key}/issue/{self._identifier(issue)}/{_slug(issue.title)}"

    def _state(self, issue: Issue) -> State:
        return next(s for s in self.teams[issue.team_id].states if s.id == issue.state_id)

    def _issue_data(self, issue: Issue) -> dict[str, Any]:
        """The `data` of an Issue webhook (field names as Linear sends them)."""
        team = self.teams[issue.team_id]
        state = self._state(issue)
        return {
            "id": issue.id,
            "createdAt": issue.created_at,
            "updatedAt": issue.updated_at,
            "number": issue.number,
            "title": issue.title,
            "description": issue.description,
            "priority": issue.priority,
            "identifier": self._identifier(issue),
            "url": self._issue_url(issue),
            "teamId": team.id,
            "stateId": state.id,
            "labelIds": list(issue.label_ids),
            "state": {"id": state.id, "name": state.name, "type": state.type, "color": "#e2e2e2"},
            "team": {"id": team.id, "key": team.key, "name": team.name},
            "labels": [{"id": i, "name": self.labels[i], "color": "#5e6ad2"} for i in issue.label_ids],
        }

    def _comment_data(self, comment: Comment) -> dict[str, Any]:
        issue = self.issues[comment.issue_id]
        user = self.users[comment.user_id]
        return {
            "id": comment.id,
            "createdAt": comment.created_at,
            "updatedAt": comment.updated_at,
            "body": comment.body,
            "issueId": issue.id,
            "userId": user.id,
            "issue": {"id": issue.id, "identifier": self._identifier(issue), "title": issue.title,
                      "teamId": issue.team_id, "url": self._issue_url(issue)},
            "user": {"id": user.id, "name": user.name, "email": user.email},
        }

    def _create_comment(self, issue_id: str, body: str, user_id: str) -> str:
        with self._lock:
            issue = self._issue(issue_id)
            if user_id not in self.users:
                raise KeyError(f"no user {user_id!r}")
            stamp = now_iso()
            # The body is stored verbatim: Foundry's hidden markers must survive.
            comment = Comment(str(uuid.uuid4()), issue.id, body, user_id, stamp, stamp)
            self.comments.append(comment)
            data = self._comment_data(comment)
        self._emit("Comment", "create", data, user_id, None)
        return comment.id

    def _apply_update(self, issue_id: str, changes: dict[str, Any], actor_id: str) -> None:
        names = {"title": "title", "description": "description", "priority": "priority",
                 "label_ids": "labelIds", "state_id": "stateId"}
        with self._lock:
            issue = self._issue(issue_id)
            before = {names[k]: getattr(issue, k) for k, v in changes.items() if getattr(issue, k) != v}
            if not before:
                return  # Linear sends no webhook for an update that changes nothing
            before["updatedAt"] = issue.updated_at
            entry = _history_entry(issue, changes, actor_id)
            for key, value in changes.items():
                setattr(issue, key, value)
            issue.updated_at = entry.created_at = now_iso()
            issue.history.append(entry)
            data = self._issue_data(issue)
        self._emit("Issue", "update", data, actor_id, before)

    def _emit(self, kind: str, action: str, data: dict[str, Any], actor_id: str, updated_from: dict[str, Any] | None) -> None:
        if self.webhooks is None:
            return
        with self._lock:
            actor = self.users[actor_id]
        payload: dict[str, Any] = {
            "action": action,
            "actor": {"id": actor.id, "name": actor.name, "email": actor.email, "type": "user"},
            "createdAt": data.get("updatedAt") or now_iso(),
            "data": data,
            "url": data.get("url") or data["issue"]["url"],
            "type": kind,
            "organizationId": self.organization_id,
            "webhookTimestamp": int(time.time() * 1000),
            "webhookId": self.webhook_id,
        }
        if updated_from is not None:
            payload["updatedFrom"] = updated_from
        self.webhooks.send(kind, payload)

    def _resigned(self, delivery: Delivery, _attempt: int) -> tuple[bytes, dict[str, str]]:
        """A retry of `delivery`: the same id and event, a fresh webhookTimestamp, signed again."""
        body = with_fresh_timestamp(delivery.body, int(time.time() * 1000))
        return body, self._webhook_headers(delivery.event, delivery.id, body)

    def _webhook_headers(self, event: str, delivery_id: str, body: bytes) -> dict[str, str]:
        return {
            "Content-Type": "application/json; charset=utf-8",
            "Linear-Delivery": delivery_id,
            "Linear-Event": event,
            "Linear-Signature": hmac.new(self.webhook_secret.encode(), body, hashlib.sha256).hexdigest(),
            "User-Agent": "Linear-Webhook",
        }

    # -- GraphQL ----------------------------------------------------------------

    async def _handle_graphql(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "") not in (self.api_key, f"Bearer {self.api_key}"):
            return _errors(400, "Authentication required, not authenticated", "AUTHENTICATION_ERROR",
                           "You need to authenticate to access this operation.")
        try:
            payload = await request.json()
            query = payload["query"]
            variables = payload.get("variables") or {}
            if not isinstance(query, str) or not isinstance(variables, dict):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return _errors(400, "Body must be JSON with a query string", "BAD_USER_INPUT", "Invalid request.")
        checked = self._checked(query)
        if isinstance(checked, web.Response):
            return checked
        document = checked
        operation = _root_field(document, payload.get("operationName"))
        fault = self.faults.take(operation)
        if fault is not None:
            if fault.kind == "hang":
                await asyncio.sleep(fault.seconds or 30)
            elif fault.kind == "error":
                return web.json_response({"errors": [{"message": "Internal server error"}]}, status=500)
            elif fault.kind in ("ratelimit", "ratelimit_secondary"):
                return self._rate_limited(fault.seconds, http_429=fault.kind == "ratelimit")
        budget: dict[str, str] = {}
        if self.rate_limits is not None:
            verdict = self.rate_limits.admit(query_complexity(document, variables, payload.get("operationName")))
            budget = verdict.headers
            if not verdict.allowed:
                response = _errors(400, "Rate limit exceeded", "RATELIMITED", "Too many requests. Please try again later.",
                                   status_code=429)
                response.headers.update(budget)
                return response
        result = graphql.execute_sync(self._schema, document, root_value=_Root(self), variable_values=variables,
                                      operation_name=payload.get("operationName"))
        if fault is not None and fault.kind == "apply_then_error":
            return web.json_response({"errors": [{"message": "Internal server error"}]}, status=500)
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [_format_error(e) for e in result.errors]
        return web.json_response(body, status=200, headers=budget)

    def _checked(self, query: str) -> graphql.DocumentNode | web.Response:
        """The query parsed and validated, or the error answer. A client sends the same few
        query strings over and over, and graphql-core's validation cost more CPU than the rest
        of a request: the verdict is kept per query string (a document is never changed by
        executing it)."""
        document = self._documents.get(query)
        if document is not None:
            return document
        try:
            document = graphql.parse(query)
        except graphql.GraphQLError as err:
            return _errors(400, err.message, "GRAPHQL_PARSE_FAILED", "Invalid query.")
        problems = graphql.validate(self._schema, document)
        if problems:
            return _errors(400, "; ".join(p.message for p in problems), "GRAPHQL_VALIDATION_FAILED", "Invalid query.")
        if len(self._documents) >= DOCUMENT_CACHE:
            self._documents.clear()
        self._documents[query] = document
        return document

    def _rate_limited(self, seconds: float, *, http_429: bool) -> web.Response:
        """Linear's rate-limit answer: code RATELIMITED and the bucket's reset as epoch milliseconds."""
        reset_ms = int((time.time() + seconds) * 1000)
        response = _errors(429 if http_429 else 400, "Rate limit exceeded", "RATELIMITED",
                           "Too many requests. Please try again later.")
        response.headers.update({"X-RateLimit-Requests-Limit": "1500", "X-RateLimit-Requests-Remaining": "0",
                                 "X-RateLimit-Requests-Reset": str(reset_ms)})
        return response

    def _next_sync_id(self) -> float:
        with self._lock:
            self._sync_id += 1
            return float(self._sync_id)


def _history_entry(issue: Issue, changes: dict[str, Any], actor_id: str) -> HistoryEntry:
    """The IssueHistory entry for applying `changes` to `issue` (call before applying them)."""
    entry = HistoryEntry(str(uuid.uuid4()), "", actor_id)
    if "state_id" in changes and changes["state_id"] != issue.state_id:
        entry.from_state_id, entry.to_state_id = issue.state_id, changes["state_id"]
    if "title" in changes and changes["title"] != issue.title:
        entry.from_title, entry.to_title = issue.title, changes["title"]
    entry.updated_description = "description" in changes and changes["description"] != issue.description
    if "label_ids" in changes:
        entry.added_label_ids = [i for i in changes["label_ids"] if i not in issue.label_ids] or None
        entry.removed_label_ids = [i for i in issue.label_ids if i not in changes["label_ids"]] or None
    if "priority" in changes and changes["priority"] != issue.priority:
        entry.from_priority, entry.to_priority = issue.priority, changes["priority"]
    return entry


def _errors(status: int, message: str, code: str, user_message: str, *, status_code: int | None = None) -> web.Response:
    extensions: dict[str, Any] = {"code": code, "type": code.lower().replace("_", " "), "userPresentableMessage": user_message}
    if status_code is not None:
        extensions["statusCode"] = status_code  # Linear's rate-limit answer is HTTP 400 saying 429 here
    body = {"errors": [{"message": message, "extensions": extensions}]}
    return web.json_response(body, status=status)


def _format_error(error: graphql.GraphQLError) -> dict[str, Any]:
    formatted = dict(error.formatted)
    original = error.original_error
    if isinstance(original, _GraphQLError):
        formatted["extensions"] = original.extensions
    elif original is not None:
        formatted["extensions"] = {"code": "INTERNAL_SERVER_ERROR", "type": "internal error",
                                   "userPresentableMessage": "Something went wrong."}
    return formatted


def _root_field(document: graphql.DocumentNode, operation_name: str | None) -> str:
    for definition in document.definitions:
        if isinstance(definition, graphql.OperationDefinitionNode):
            if operation_name and (definition.name is None or definition.name.value != operation_name):
                continue
            for selection in definition.selection_set.selections:
                if isinstance(selection, graphql.FieldNode):
                    return selection.name.value
    return "unknown"


def _not_found(entity: str) -> _GraphQLError:
    return _GraphQLError(f"Entity not found: {entity}", "INVALID_INPUT", f"Could not find referenced {entity}.")


def _page(items: list[Any], first: int | None, after: str | None, cap: int) -> dict[str, Any]:
    """Relay-style page; the cursor is the index of the last item returned."""
    start = int(after) + 1 if after else 0
    size = min(first or 50, cap)
    chunk = items[start:start + size]
    end = start + len(chunk) - 1
    return {
        "nodes": chunk,
        "pageInfo": {"hasNextPage": start + size < len(items), "hasPreviousPage": start > 0,
                     "startCursor": str(start) if chunk else None, "endCursor": str(end) if chunk else None},
    }


class _Root:
    """GraphQL resolvers: graphql-core calls root attributes with (info, **args)."""

    def __init__(self, server: LinearServer) -> None:
        self.s = server

    # Views are plain dicts; nested fields that take arguments are callables.
    def _team_view(self, team: Team) -> dict[str, Any]:
        s = self.s
        view: dict[str, Any] = {"id": team.id, "key": team.key, "name": team.name}
        view["states"] = lambda info, first=None, after=None: _page(
            [self._state_view(st, view) for st in team.states], first, after, s.page_size_cap)
        return view

    def _state_view(self, state: State, team_view: dict[str, Any] | None = None) -> dict[str, Any]:
        team = self.s.teams[state.team_id]
        return {"id": state.id, "name": state.name, "type": state.type, "position": state.position,
                "team": team_view or (lambda info: self._team_view(team))}

    def _user_view(self, user: User) -> dict[str, Any]:
        return {"id": user.id, "name": user.name, "displayName": user.name.split(" ")[0].lower(), "email": user.email}

    def _issue_view(self, issue: Issue) -> dict[str, Any]:
        s = self.s
        team = s.teams[issue.team_id]
        return {
            "id": issue.id, "identifier": s._identifier(issue), "number": float(issue.number),
            "title": issue.title, "description": issue.description, "url": s._issue_url(issue),
            "createdAt": issue.created_at, "updatedAt": issue.updated_at, "priority": float(issue.priority),
            "state": self._state_view(s._state(issue)), "team": self._team_view(team),
            "labels": lambda info, first=None, after=None: _page(
                [{"id": i, "name": s.labels[i]} for i in issue.label_ids], first, after, s.page_size_cap),
            "comments": lambda info, first=None, after=None: _page(
                [self._comment_view(c) for c in s.comments if c.issue_id == issue.id], first, after, s.page_size_cap),
            # Newest first, as Linear lists an issue's history.
            "history": lambda info, first=None, after=None: _page(
                [self._history_view(h) for h in reversed(issue.history)], first, after, s.page_size_cap),
        }

    def _history_view(self, entry: HistoryEntry) -> dict[str, Any]:
        s = self.s
        return {"id": entry.id, "createdAt": entry.created_at, "updatedAt": entry.created_at,
                "actor": self._user_view(s.users[entry.actor_id]), "actorId": entry.actor_id,
                "fromStateId": entry.from_state_id, "toStateId": entry.to_state_id,
                "fromTitle": entry.from_title, "toTitle": entry.to_title,
                "updatedDescription": entry.updated_description, "addedLabelIds": entry.added_label_ids,
                "removedLabelIds": entry.removed_label_ids,
                "fromPriority": None if entry.from_priority is None else float(entry.from_priority),
                "toPriority": None if entry.to_priority is None else float(entry.to_priority)}

    def _issue_facts(self, issue: Issue) -> dict[str, Any]:
        s = self.s
        state, team = s._state(issue), s.teams[issue.team_id]
        return {"id": issue.id, "createdAt": issue.created_at, "updatedAt": issue.updated_at,
                "labels": [s.labels[i] for i in issue.label_ids], "state": {"name": state.name, "type": state.type},
                "team": {"id": team.id, "key": team.key}}

    def _comment_view(self, comment: Comment) -> dict[str, Any]:
        s = self.s
        return {"id": comment.id, "body": comment.body, "createdAt": comment.created_at,
                "updatedAt": comment.updated_at, "user": self._user_view(s.users[comment.user_id]),
                "issue": lambda info: self._issue_view(s.issues[comment.issue_id])}

    # -- Query --
    def issue(self, info: Any, id: str) -> dict[str, Any]:
        with self.s._lock:
            try:
                return self._issue_view(self.s._issue(id))
            except KeyError:
                raise _not_found("Issue") from None

    def team(self, info: Any, id: str) -> dict[str, Any]:
        with self.s._lock:
            team = self.s.teams.get(id)
            if team is None:
                raise _not_found("Team")
            return self._team_view(team)

    def workflowStates(self, info: Any, filter: dict[str, Any] | None = None, first: int | None = None,
                       after: str | None = None) -> dict[str, Any]:
        with self.s._lock:
            states = [st for team in self.s.teams.values() for st in team.states]
            team_filter = (filter or {}).get("team") or {}
            if "id" in team_filter:
                ids = team_filter["id"]
                wanted = set(ids.get("in") or []) | ({ids["eq"]} if ids.get("eq") else set())
                states = [st for st in states if st.team_id in wanted]
            if "key" in team_filter and team_filter["key"].get("eq"):
                states = [st for st in states if self.s.teams[st.team_id].key == team_filter["key"]["eq"]]
            name = (filter or {}).get("name") or {}
            if name.get("eq"):
                states = [st for st in states if st.name == name["eq"]]
            if name.get("eqIgnoreCase"):
                states = [st for st in states if st.name.casefold() == name["eqIgnoreCase"].casefold()]
            return _page([self._state_view(st) for st in states], first, after, self.s.page_size_cap)

    def viewer(self, info: Any) -> dict[str, Any]:
        return self._user_view(self.s.users[self.s.bot])

    def issues(self, info: Any, filter: dict[str, Any] | None = None, first: int | None = None,
               after: str | None = None, orderBy: str | None = None, includeArchived: bool | None = None,
               ) -> dict[str, Any]:
        with self.s._lock:
            try:
                found = [i for i in self.s.issues.values() if match_issue(filter, self._issue_facts(i))]
            except FilterError as err:
                raise _GraphQLError(str(err), "INVALID_INPUT", "Invalid filter.") from None
            # Newest first by the ordering field (createdAt unless told otherwise).
            key = "updated_at" if orderBy == "updatedAt" else "created_at"
            found.sort(key=lambda i: (getattr(i, key), i.id), reverse=True)
            return _page([self._issue_view(i) for i in found], first, after, self.s.page_size_cap)

    def comments(self, info: Any, filter: dict[str, Any] | None = None, first: int | None = None,
                 after: str | None = None, orderBy: str | None = None, includeArchived: bool | None = None,
                 ) -> dict[str, Any]:
        with self.s._lock:
            def facts(c: Comment) -> dict[str, Any]:
                return {"createdAt": c.created_at, "updatedAt": c.updated_at, "body": c.body,
                        "issue": {"id": c.issue_id}}
            try:
                found = [c for c in self.s.comments if match_comment(filter, facts(c))]
            except FilterError as err:
                raise _GraphQLError(str(err), "INVALID_INPUT", "Invalid filter.") from None
            key = "updated_at" if orderBy == "updatedAt" else "created_at"
            found.sort(key=lambda c: (getattr(c, key), c.id), reverse=True)
            return _page([self._comment_view(c) for c in found], first, after, self.s.page_size_cap)

    def comment(self, info: Any, id: str | None = None, hash: str | None = None) -> dict[str, Any]:
        with self.s._lock:
            found = next((c for c in self.s.comments if c.id == id), None) if id else None
            if found is None:
                raise _not_found("Comment")
            return self._comment_view(found)

    # -- Mutation --
    def commentCreate(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:
        issue_id, body = input.get("issueId"), input.get("body")
        if not issue_id or body is None:
            raise _GraphQLError("issueId and body are required", "INVALID_INPUT", "Comment needs an issue and a body.")
        try:
            comment_id = self.s._create_comment(issue_id, body, self.s.bot)
        except KeyError:
            raise _not_found("Issue") from None
        with self.s._lock:
            comment = next(c for c in self.s.comments if c.id == comment_id)
            return {"success": True, "lastSyncId": self.s._next_sync_id(), "comment": self._comment_view(comment)}

    def issueUpdate(self, info: Any, id: str, input: dict[str, Any]) -> dict[str, Any]:
        with self.s._lock:
            try:
                issue = self.s._issue(id)
            except KeyError:
                raise _not_found("Issue") from None
            changes: dict[str, Any] = {}
            if input.get("stateId") is not None:
                if not any(st.id == input["stateId"] for st in self.s.teams[issue.team_id].states):
                    raise _not_found("WorkflowState")
                changes["state_id"] = input["stateId"]
            for key in ("title", "description", "priority"):
                if input.get(key) is not None:
                    changes[key] = input[key]
        self.s._apply_update(issue.id, changes, self.s.bot)
        with self.s._lock:
            return {"success": True, "lastSyncId": self.s._next_sync_id(), "issue": self._issue_view(issue)}
