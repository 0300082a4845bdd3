"""Webhook delivery shared by both stand-ins: retry schedule, timeouts, redeliver, duplicate."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Iterator

import pytest

from foundry.dev.linear_server import LinearServer
from foundry.dev.github_server import GitHubServer
from tests.support.webhook_receiver import WebhookReceiver

SCALE = 0.0001  # 1 min, 1 h, 6 h -> 6 ms, 0.36 s, 2.16 s


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def linear_with(hook: WebhookReceiver, **kwargs) -> LinearServer:
    kwargs.setdefault("retry_scale", SCALE)
    server = LinearServer(webhook_url=f"{hook.url}/linear", webhook_secret="lin-secret", **kwargs)
    server.start()
    server.add_team("ACME")
    return server


def test_failed_deliveries_follow_the_schedule_then_stop(hook: WebhookReceiver) -> None:
    hook.script(500, 502, 503, 500)  # every attempt fails
    with linear_with(hook) as linear:
        linear.create_issue("ACME", "Never acknowledged")
        assert linear.wait_webhooks(15)
        [delivery] = linear.deliveries
    assert [a.status for a in delivery.attempts] == [500, 502, 503, 500]
    assert not delivery.delivered and delivery.finished
    times = [r.at for r in hook.received]
    gaps = [b - a for a, b in zip(times, times[1:])]
    expected = [60 * SCALE, 3600 * SCALE, 6 * 3600 * SCALE]
    for gap, want in zip(gaps, expected):
        assert want <= gap < want + 0.25, (gaps, expected)
    # The same delivery each time (each retry re-signed with a fresh timestamp: test_standins_linear_retries.py).
    assert len({r.headers["Linear-Delivery"] for r in hook.received}) == 1


def test_retry_stops_at_the_first_success_and_records_latency(hook: WebhookReceiver) -> None:
    hook.script(500)
    with linear_with(hook) as linear:
        linear.create_issue("ACME", "Second time lucky")
        assert linear.wait_webhooks(10)
        [delivery] = linear.deliveries
    assert [a.status for a in delivery.attempts] == [500, 200] and delivery.delivered
    assert all(0 <= a.latency < 1 for a in delivery.attempts)
    assert len(hook.received) == 2


def test_no_answer_within_the_timeout_counts_as_failure(hook: WebhookReceiver) -> None:
    hook.script(("hang", 1.0))
    with linear_with(hook, webhook_timeout=0.2) as linear:
        linear.create_issue("ACME", "Slow receiver")
        assert linear.wait_webhooks(10)
        [delivery] = linear.deliveries
    first, second = delivery.attempts
    assert first.status is None and "no answer" in (first.error or "") and 0.2 <= first.latency < 0.6
    assert second.status == 200


def test_redeliver_keeps_id_body_and_signature_duplicate_gets_a_new_id(hook: WebhookReceiver) -> None:
    with linear_with(hook) as linear:
        linear.create_issue("ACME", "Replay me")
        assert linear.wait_webhooks(10)
        original = linear.deliveries[0]
        again = linear.redeliver(original.id)
        copy = linear.duplicate(original.id)
        assert linear.wait_webhooks(10)
    assert again == original.id and copy != original.id
    first, redelivered, duplicated = hook.received
    assert redelivered.body == first.body == duplicated.body
    assert redelivered.headers["Linear-Delivery"] == first.headers["Linear-Delivery"] == original.id
    assert redelivered.headers["Linear-Signature"] == first.headers["Linear-Signature"]
    assert duplicated.headers["Linear-Delivery"] == copy
    expected = hmac.new(b"lin-secret", duplicated.body, hashlib.sha256).hexdigest()
    assert duplicated.headers["Linear-Signature"] == expected


def test_github_redeliver_and_duplicate(hook: WebhookReceiver) -> None:
    with GitHubServer(webhook_url=hook.url, webhook_secret="gh-secret", retry_scale=SCALE) as gh:
        gh.add_repo("acme/api")
        ping = gh.ping("acme/api")
        assert gh.redeliver(ping) == ping
        dup = gh.duplicate(ping)
        assert gh.wait_webhooks(10)
    first, again, copy = hook.received
    assert first.headers["X-GitHub-Delivery"] == again.headers["X-GitHub-Delivery"] == ping
    assert copy.headers["X-GitHub-Delivery"] == dup != ping
    assert first.body == again.body == copy.body
    assert first.headers["X-Hub-Signature-256"] == again.headers["X-Hub-Signature-256"]


def test_redeliver_of_an_unknown_id_is_a_clear_error() -> None:
    with LinearServer() as linear, pytest.raises(KeyError, match="no delivery"):
        linear.redeliver("nope")


def test_without_a_target_deliveries_are_recorded_not_sent() -> None:
    with LinearServer() as linear:
        linear.add_team("ACME")
        linear.create_issue("ACME", "Quiet")
        [delivery] = linear.deliveries
    assert delivery.attempts == [] and delivery.payload["type"] == "Issue"


def test_unreachable_target_is_retried_and_recorded() -> None:
    with WebhookReceiver() as gone:
        url = gone.url
    with LinearServer(webhook_url=url, retry_scale=SCALE, retry_delays=(60.0,)) as linear:
        linear.add_team("ACME")
        linear.create_issue("ACME", "Nobody home")
        assert linear.wait_webhooks(10)
        [delivery] = linear.deliveries
    assert len(delivery.attempts) == 2
    assert all(a.status is None and "Connect" in (a.error or "") for a in delivery.attempts)


def test_control_api_over_http_drives_the_github_stand_in(hook: WebhookReceiver) -> None:
    import httpx

    with GitHubServer(webhook_url=hook.url) as gh:
        gh.add_repo("acme/api")
        control = f"{gh.url}/_control"
        sha = httpx.post(f"{control}/commit", json={"repo": "acme/api", "branch": "b", "files": {"x": "1"}}).json()
        number = httpx.post(f"{control}/open_pr", json={"repo": "acme/api", "head": "b", "title": "T"}).json()
        assert httpx.post(f"{control}/set_check", json={"repo": "acme/api", "sha": sha["result"],
                                                          "conclusion": "success"}).status_code == 200
        bad = httpx.post(f"{control}/set_check", json={"repo": "acme/api", "sha": sha["result"], "conclusion": "meh"})
        unknown = httpx.post(f"{control}/drop_database", json={})
        assert gh.wait_webhooks(10)
        assert gh.pull_json("acme/api", number["result"])["head"]["sha"] == sha["result"]
    assert bad.status_code == 400 and "conclusion" in bad.json()["error"]
    assert unknown.status_code == 404
    events = [(r.headers["X-GitHub-Event"], json.loads(r.body).get("action")) for r in hook.received]
    assert events == [("pull_request", "opened"), ("check_run", "completed"), ("check_suite", "completed")]


def test_github_does_not_retry_by_default_but_can_be_told_to(hook: WebhookReceiver) -> None:
    from foundry.dev.webhook_sender import RETRY_DELAYS

    hook.script(500, 500)
    with GitHubServer(webhook_url=hook.url) as gh:
        gh.add_repo("acme/api")
        gh.ping("acme/api")
        assert gh.wait_webhooks(10)
        assert [a.status for a in gh.deliveries[0].attempts] == [500]
    with GitHubServer(webhook_url=hook.url, retry_delays=RETRY_DELAYS, retry_scale=SCALE) as gh:
        gh.add_repo("acme/api")
        gh.ping("acme/api")
        assert gh.wait_webhooks(10)
        assert [a.status for a in gh.deliveries[0].attempts] == [500, 200]


def test_check_run_lifecycle_events(hook: WebhookReceiver) -> None:
    with GitHubServer(webhook_url=hook.url) as gh:
        gh.add_repo("acme/api")
        sha = gh.commit("acme/api", "b", {"x": "1"})
        gh.set_check("acme/api", sha, None, name="build", status="in_progress")
        gh.set_check("acme/api", sha, None, name="test", status="queued")
        gh.set_check("acme/api", sha, "success", name="build")
        gh.set_check("acme/api", sha, "timed_out", name="test")
        assert gh.wait_webhooks(10)
        with pytest.raises(ValueError, match="conclusion"):
            gh.set_check("acme/api", sha, "green")
    events = [(r.headers["X-GitHub-Event"], json.loads(r.body)["action"]) for r in hook.received]
    # The suite completes only when its last run does, with the worst conclusion.
    assert events == [("check_run", "created"), ("check_run", "created"), ("check_run", "completed"),
                      ("check_run", "completed"), ("check_suite", "completed")]
    assert json.loads(hook.received[-1].body)["check_suite"]["conclusion"] == "timed_out"
