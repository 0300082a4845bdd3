"""The Linear client against the local Linear: every operation, retries, rate limits, timeouts."""

from __future__ import annotations

import socket
from typing import Iterator

import pytest

from foundry.connectors.errors import (
    ConnectFailed, NotFound, RateLimited, ServerError, Timeout, Unauthorized,
)
from foundry.connectors.linear import LinearClient
from foundry.connectors.retry import RetryPolicy
from foundry.dev.linear_server import LinearServer


@pytest.fixture
def linear() -> Iterator[LinearServer]:
    with LinearServer() as server:
        server.add_team("ACME")
        yield server


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client_for(server: LinearServer, sleeps: Sleeps | None = None, **kwargs) -> LinearClient:
    kwargs.setdefault("retry", RetryPolicy(max_attempts=4, base_delay=0.2, max_delay=1.0))
    return LinearClient(server.api_key, url=server.graphql_url, sleep=sleeps if sleeps is not None else Sleeps(),
                        **kwargs)


def test_get_issue_returns_the_ticket(linear: LinearServer) -> None:
    issue_id = linear.create_issue("ACME", "Add a health endpoint", "GET /healthz returns 200",
                                   labels=["foundry", "backend"], priority=2)
    with client_for(linear) as client:
        issue = client.get_issue(issue_id)
        by_key = client.get_issue("ACME-1")  # Linear also takes the identifier
    assert (issue.id, issue.identifier, issue.title) == (issue_id, "ACME-1", "Add a health endpoint")
    assert issue.description == "GET /healthz returns 200"
    assert (issue.state_name, issue.state_type, issue.team_key, issue.priority) == ("Todo", "unstarted", "ACME", 2)
    assert issue.labels == ("foundry", "backend")
    assert issue.url.startswith("https://linear.app/acme/issue/ACME-1/")
    assert by_key == issue


def test_create_and_list_comments_keep_the_body_verbatim_across_pages(linear: LinearServer) -> None:
    issue_id = linear.create_issue("ACME", "Many comments")
    for i in range(120):  # more than one page of 100
        linear.add_comment(issue_id, f"human {i}")
    body = "Plan ready.\n\n<!-- foundry:run=acme-1-a1;purpose=approval_request -->"
    with client_for(linear) as client:
        posted = client.create_comment(issue_id, body)
        comments = client.list_comments(issue_id)
    assert posted.body == body
    assert len(comments) == 121
    assert [c.body for c in comments[:120]] == [f"human {i}" for i in range(120)]
    assert comments[-1].id == posted.id and comments[-1].body == body
    assert comments[-1].user_name == "Foundry"
    assert linear.faults.calls["issue"] == 2  # two pages


def test_set_issue_state_looks_up_states_once_per_team(linear: LinearServer) -> None:
    issue_id = linear.create_issue("ACME", "Move me")
    with client_for(linear) as client:
        client.set_issue_state(issue_id, "In Progress")
        assert client.get_issue(issue_id).state_name == "In Progress"
        team_id = client.get_issue(issue_id).team_id
        client.set_issue_state(issue_id, "in review", team_id=team_id)  # names match case-insensitively
        assert client.get_issue(issue_id).state_name == "In Review"
        assert [s.name for s in client.workflow_states(team_id)][:3] == ["Backlog", "Todo", "In Progress"]
    assert linear.faults.calls["workflowStates"] == 1  # cached after the first lookup
    assert linear.faults.calls["issueUpdate"] == 2


def test_unknown_state_name_is_a_clear_not_found(linear: LinearServer) -> None:
    issue_id = linear.create_issue("ACME", "Nowhere")
    with client_for(linear) as client, pytest.raises(NotFound) as err:
        client.set_issue_state(issue_id, "Shipped")
    assert "'Shipped'" in str(err.value) and "In Progress" in str(err.value)
    assert linear.faults.calls["workflowStates"] == 2  # one refresh after the miss


def test_missing_issue_and_bad_key_raise_typed_errors(linear: LinearServer) -> None:
    with client_for(linear) as client, pytest.raises(NotFound, match="get_issue no-such-issue failed"):
        client.get_issue("no-such-issue")
    with LinearClient("lin_api_wrong", url=linear.graphql_url) as bad, pytest.raises(Unauthorized) as err:
        bad.get_issue("x")
    assert "get_issue x" in str(err.value)


def test_server_errors_are_retried_with_backoff(linear: LinearServer) -> None:
    issue_id = linear.create_issue("ACME", "Flaky")
    linear.faults.add("issue", "error", count=2)
    sleeps = Sleeps()
    with client_for(linear, sleeps) as client:
        assert client.get_issue(issue_id).title == "Flaky"
    assert linear.faults.calls["issue"] == 3
    assert len(sleeps) == 2 and 0.1 <= sleeps[0] <= 0.2 and 0.2 <= sleeps[1] <= 0.4


def test_persistent_server_errors_give_up_after_max_attempts(linear: LinearServer) -> None:
    issue_id = linear.create_issue("ACME", "Down")
    linear.faults.add("issue", "error", count=10)
    with client_for(linear) as client, pytest.raises(ServerError) as err:
        client.get_issue(issue_id)
    assert linear.faults.calls["issue"] == 4
    assert err.value.status == 500 and f"get_issue {issue_id}" in str(err.value)


@pytest.mark.parametrize("kind,status", [("ratelimit", 429), ("ratelimit_secondary", 400)])
def test_rate_limits_wait_until_the_announced_reset(linear: LinearServer, kind: str, status: int) -> None:
    """HTTP 429, or a GraphQL error with code RATELIMITED: wait for X-RateLimit-Requests-Reset (epoch ms)."""
    issue_id = linear.create_issue("ACME", "Busy")
    linear.faults.add("issue", kind, count=1, seconds=3.0)
    sleeps = Sleeps()
    with client_for(linear, sleeps) as client:
        assert client.get_issue(issue_id).title == "Busy"
    assert linear.faults.calls["issue"] == 2
    assert sleeps == [pytest.approx(3.0, abs=0.5)]


def test_rate_limit_beyond_the_cap_surfaces_to_the_caller(linear: LinearServer) -> None:
    issue_id = linear.create_issue("ACME", "Very busy")
    linear.faults.add("issue", "ratelimit", count=1, seconds=600)
    with client_for(linear, retry=RetryPolicy(max_rate_limit_wait=60)) as client, pytest.raises(RateLimited) as err:
        client.get_issue(issue_id)
    assert err.value.retry_after == pytest.approx(600, abs=2) and err.value.status == 429
    assert linear.faults.calls["issue"] == 1


def test_a_hanging_server_raises_timeout_and_is_retried(linear: LinearServer) -> None:
    issue_id = linear.create_issue("ACME", "Slow")
    linear.faults.add("issue", "hang", count=1, seconds=1.0)
    with client_for(linear, timeout=0.3) as client:
        assert client.get_issue(issue_id).title == "Slow"  # second attempt answers
    assert linear.faults.calls["issue"] == 2
    linear.faults.add("issue", "hang", count=1, seconds=1.0)
    with client_for(linear, timeout=0.3, retry=RetryPolicy(max_attempts=1)) as client, pytest.raises(Timeout) as err:
        client.get_issue(issue_id)
    assert f"get_issue {issue_id}" in str(err.value)


def test_comment_create_is_not_blindly_retried_when_it_may_have_landed(linear: LinearServer) -> None:
    """A 5xx after the write would make a retry post twice; post_once handles that case."""
    issue_id = linear.create_issue("ACME", "Careful")
    linear.faults.add("commentCreate", "apply_then_error", count=1)
    with client_for(linear) as client, pytest.raises(ServerError):
        client.create_comment(issue_id, "hello")
    assert linear.faults.calls["commentCreate"] == 1
    assert len(linear.comments_json(issue_id)) == 1


def test_comment_create_is_retried_when_it_certainly_did_not_land(linear: LinearServer) -> None:
    issue_id = linear.create_issue("ACME", "Rate limited write")
    linear.faults.add("commentCreate", "ratelimit", count=1, seconds=1.0)
    sleeps = Sleeps()
    with client_for(linear, sleeps) as client:
        client.create_comment(issue_id, "hello")
    assert linear.faults.calls["commentCreate"] == 2 and len(sleeps) == 1
    assert [c["body"] for c in linear.comments_json(issue_id)] == ["hello"]


def test_connection_refused_is_retried_then_typed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    sleeps = Sleeps()
    client = LinearClient("k", url=f"http://127.0.0.1:{port}/graphql", sleep=sleeps, retry=RetryPolicy(max_attempts=3))
    with client, pytest.raises(ConnectFailed, match="get_issue ACME-1 failed"):
        client.get_issue("ACME-1")
    assert len(sleeps) == 2


def test_the_server_rejects_fields_linear_does_not_have(linear: LinearServer) -> None:
    """The stand-in validates queries against Linear's schema, so a typo fails here as it would there."""
    import httpx

    response = httpx.post(linear.graphql_url, json={"query": "{ issue(id: \"x\") { idd } }"},
                          headers={"Authorization": linear.api_key})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_the_server_checks_a_query_once_and_refuses_a_bad_one_every_time(linear: LinearServer,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in keeps each valid query parsed (validation was most of its CPU per request
    in the operator benchmark); a query it refused is refused again, not remembered as good."""
    import graphql
    import httpx

    parses: list[str] = []
    real_parse = graphql.parse
    monkeypatch.setattr(graphql, "parse", lambda source, *a, **k: parses.append(source) or real_parse(source, *a, **k))
    auth = {"Authorization": linear.api_key}
    good = {"query": "query { viewer { id } }"}
    for _ in range(3):
        response = httpx.post(linear.graphql_url, json=good, headers=auth)
        assert response.status_code == 200 and response.json()["data"]["viewer"]["id"] == linear.bot
    bad = {"query": "{ issue(id: \"x\") { idd } }"}
    for _ in range(2):
        response = httpx.post(linear.graphql_url, json=bad, headers=auth)
        assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert parses == [good["query"], bad["query"], bad["query"]]


def test_client_rejects_an_empty_api_key() -> None:
    with pytest.raises(ValueError, match="API key"):
        LinearClient("")
