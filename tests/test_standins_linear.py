"""The local Linear's webhooks: Linear's headers, body fields and signature scheme."""

from __future__ import annotations

import hmac
import json
import time
import uuid
from typing import Iterator

import pytest

from foundry.connectors.linear import LinearClient
from foundry.dev.linear_server import LinearServer
from tests.support.webhook_receiver import Received, WebhookReceiver

SECRET = "whsec-linear-test"
ENVELOPE = {"action", "type", "data", "actor", "createdAt", "organizationId", "url", "webhookId", "webhookTimestamp"}


def linear_signature_ok(secret: str, raw_body: bytes, header: str) -> bool:
    """Linear's documented scheme, written independently: hex HMAC-SHA256 of the raw body."""
    digest = hmac.new(secret.encode("utf-8"), msg=raw_body, digestmod="sha256").hexdigest()
    return hmac.compare_digest(digest, header)


@pytest.fixture
def env() -> Iterator[tuple[LinearServer, WebhookReceiver]]:
    with WebhookReceiver() as hook, LinearServer(webhook_url=f"{hook.url}/hooks/linear", webhook_secret=SECRET,
                                                  retry_scale=0.0001) as linear:
        linear.add_team("ACME")
        yield linear, hook


def received(linear: LinearServer, hook: WebhookReceiver, count: int) -> list[Received]:
    assert linear.wait_webhooks(10) and hook.wait_for(count)
    return hook.received


def test_issue_create_webhook_matches_linears_format(env: tuple[LinearServer, WebhookReceiver]) -> None:
    linear, hook = env
    alice = linear.add_user("Alice Example", "alice@example.com")
    before_ms = int(time.time() * 1000)
    issue_id = linear.create_issue("ACME", "Add /healthz", "Return 200", labels=["foundry"], priority=3,
                                   actor_id=alice)
    [msg] = received(linear, hook, 1)
    headers = msg.headers
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["Linear-Event"] == "Issue"
    uuid.UUID(headers["Linear-Delivery"])
    assert linear_signature_ok(SECRET, msg.body, headers["Linear-Signature"])
    assert not linear_signature_ok("other-secret", msg.body, headers["Linear-Signature"])

    body = json.loads(msg.body)
    assert ENVELOPE <= set(body) and "updatedFrom" not in body
    assert (body["action"], body["type"], body["organizationId"]) == ("create", "Issue", linear.organization_id)
    assert before_ms <= body["webhookTimestamp"] <= int(time.time() * 1000)
    assert body["actor"] == {"id": alice, "name": "Alice Example", "email": "alice@example.com", "type": "user"}
    data = body["data"]
    for key in ("id", "identifier", "title", "description", "url", "updatedAt", "createdAt", "priority", "state",
                "team", "teamId", "labelIds", "labels", "number"):
        assert key in data, key
    assert (data["id"], data["identifier"], data["number"], data["priority"]) == (issue_id, "ACME-1", 1, 3)
    assert data["state"]["name"] == "Todo" and data["state"]["type"] == "unstarted"
    assert data["team"]["key"] == "ACME" and data["teamId"] == data["team"]["id"]
    assert [label["name"] for label in data["labels"]] == ["foundry"] and data["labelIds"] == [data["labels"][0]["id"]]
    assert body["url"] == data["url"]


def test_issue_update_carries_updated_from(env: tuple[LinearServer, WebhookReceiver]) -> None:
    linear, hook = env
    issue_id = linear.create_issue("ACME", "Thin")
    created = json.loads(received(linear, hook, 1)[0].body)
    linear.update_issue(issue_id, description="Now with acceptance criteria", state="In Progress")
    linear.update_issue(issue_id, description="Now with acceptance criteria")  # no change: no webhook
    update = json.loads(received(linear, hook, 2)[1].body)
    assert len(linear.deliveries) == 2
    assert update["action"] == "update"
    assert update["updatedFrom"]["description"] == "" and update["updatedFrom"]["stateId"] == created["data"]["state"]["id"]
    assert update["updatedFrom"]["updatedAt"] == created["data"]["updatedAt"]
    assert update["data"]["updatedAt"] >= created["data"]["updatedAt"]
    assert update["data"]["state"]["name"] == "In Progress"


def test_comment_webhook_from_a_human_and_from_the_api(env: tuple[LinearServer, WebhookReceiver]) -> None:
    linear, hook = env
    bob = linear.add_user("Bob Approver", "bob@example.com")
    issue_id = linear.create_issue("ACME", "Approve me")
    linear.add_comment(issue_id, "/foundry approve", user_id=bob)
    with LinearClient(linear.api_key, url=linear.graphql_url) as client:
        client.create_comment(issue_id, "Plan\n\n<!-- foundry:run=acme-1-a1;purpose=approval_request -->")
    messages = received(linear, hook, 3)
    human, api = (json.loads(m.body) for m in messages[1:])
    assert [m.headers["Linear-Event"] for m in messages] == ["Issue", "Comment", "Comment"]
    assert all(linear_signature_ok(SECRET, m.body, m.headers["Linear-Signature"]) for m in messages)
    data = human["data"]
    for key in ("id", "body", "issueId", "issue", "userId", "user", "createdAt", "updatedAt"):
        assert key in data, key
    assert (human["action"], human["type"], data["body"], data["userId"]) == ("create", "Comment", "/foundry approve", bob)
    assert data["issue"]["id"] == issue_id and data["issue"]["identifier"] == "ACME-1"
    assert data["user"] == {"id": bob, "name": "Bob Approver", "email": "bob@example.com"}
    assert human["actor"]["id"] == bob
    # Changes made through the API send webhooks too; the actor is the API key's user.
    assert api["actor"]["id"] == linear.bot and api["data"]["body"].endswith("purpose=approval_request -->")


def test_state_change_through_the_api_sends_an_issue_update(env: tuple[LinearServer, WebhookReceiver]) -> None:
    linear, hook = env
    issue_id = linear.create_issue("ACME", "Move")
    with LinearClient(linear.api_key, url=linear.graphql_url) as client:
        client.set_issue_state(issue_id, "Done")
    update = json.loads(received(linear, hook, 2)[1].body)
    assert update["action"] == "update" and update["data"]["state"]["type"] == "completed"
    assert update["actor"]["id"] == linear.bot and "stateId" in update["updatedFrom"]


def test_bad_control_input_is_a_clear_error() -> None:
    with LinearServer() as linear:
        linear.add_team("ACME")
        with pytest.raises(ValueError, match="team key"):
            linear.add_team("acme")
        with pytest.raises(KeyError, match="no team"):
            linear.create_issue("NOPE", "x")
        with pytest.raises(ValueError, match="no state"):
            linear.create_issue("ACME", "x", state="Limbo")


def test_signature_is_over_the_exact_bytes_sent() -> None:
    """A re-serialised body (different whitespace) must not verify: receivers must use raw bytes."""
    with WebhookReceiver() as hook, LinearServer(webhook_url=hook.url, webhook_secret=SECRET) as linear:
        linear.add_team("ACME")
        linear.create_issue("ACME", "Bytes")
        [msg] = received(linear, hook, 1)
    reserialised = json.dumps(json.loads(msg.body), indent=2).encode()
    assert linear_signature_ok(SECRET, msg.body, msg.headers["Linear-Signature"])
    assert not linear_signature_ok(SECRET, reserialised, msg.headers["Linear-Signature"])
