"""The Linear stand-in delivers and retries as Linear documents, and the bridge answers it as Linear needs.

Linear counts a delivery as failed on any status but 200 or no answer within
5 s, retries at most 3 times (1 min, 1 h, 6 h later), and stamps each send with
the time it is sent (`webhookTimestamp`), signed again. The schedule runs on a
fast clock (`retry_scale`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from foundry.bridge.app import Bridge
from foundry.bridge.commands import Claim, Trigger, Unavailable
from foundry.bridge.mapping import Intake, Ticket, TriggerRule
from foundry.bridge.settings import Settings
from foundry.dev.github_server import GitHubServer
from foundry.dev.linear_server import LinearServer
from foundry.dev.server_thread import ServerThread
from tests.support.webhook_receiver import WebhookReceiver
from foundry.dev.webhook_sender import RETRY_DELAYS

SECRET = "retry-secret"
SCALE = 0.0001  # 1 min, 1 h, 6 h -> 6 ms, 0.36 s, 2.16 s


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def _linear(url: str, **kwargs: Any) -> LinearServer:
    kwargs.setdefault("retry_scale", SCALE)
    server = LinearServer(webhook_url=url, webhook_secret=SECRET, **kwargs)
    server.start()
    server.add_team("ACME")
    return server


@pytest.mark.parametrize("status", [201, 202, 204, 301, 400, 401, 503])
def test_any_answer_but_200_is_a_failed_delivery_and_retried(hook: WebhookReceiver, status: int) -> None:
    hook.script(status)
    with _linear(hook.url) as linear:
        linear.create_issue("ACME", "Not 200")
        assert linear.wait_webhooks(10)
        [delivery] = linear.deliveries
    assert [(a.status, a.ok) for a in delivery.attempts] == [(status, False), (200, True)]


def test_github_counts_any_2xx_as_delivered(hook: WebhookReceiver) -> None:
    hook.script(202)
    with GitHubServer(webhook_url=hook.url, retry_delays=RETRY_DELAYS, retry_scale=SCALE) as gh:
        gh.add_repo("acme/api")
        gh.ping("acme/api")
        assert gh.wait_webhooks(10)
        assert [(a.status, a.ok) for a in gh.deliveries[0].attempts] == [(202, True)]


def test_at_most_three_retries_each_re_signed_with_a_fresh_timestamp(hook: WebhookReceiver) -> None:
    hook.script(500, 500, 500, 500, 500)
    with _linear(hook.url) as linear:
        linear.create_issue("ACME", "Never acknowledged")
        assert linear.wait_webhooks(15)
        time.sleep(0.2)  # a fifth attempt, were there one, would have arrived by now
        [delivery] = linear.deliveries
    assert len(delivery.attempts) == 4 == len(hook.received) and not delivery.delivered
    stamps = []
    for attempt, received in zip(delivery.attempts, hook.received):
        # Same delivery, same event; each send signed over its own bytes.
        assert received.headers["Linear-Delivery"] == delivery.id
        expected = hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
        assert received.headers["Linear-Signature"] == expected
        payload = json.loads(received.body)
        stamps.append(payload["webhookTimestamp"])
        # Stamped at the send, not at the event.
        assert abs(payload["webhookTimestamp"] / 1000 - attempt.started_at) < 1.0
        # Nothing else about the event changes between sends.
        assert {k: v for k, v in payload.items() if k != "webhookTimestamp"} == {
            k: v for k, v in delivery.payload.items() if k != "webhookTimestamp"
        }
    assert stamps == sorted(stamps) and len(set(stamps)) == 4


@pytest.mark.slow
def test_an_answer_slower_than_5_s_is_a_failed_delivery(hook: WebhookReceiver) -> None:
    hook.script(("hang", 8.0))
    with _linear(hook.url) as linear:  # Linear's own limit, not a test override
        linear.create_issue("ACME", "Slow receiver")
        assert linear.wait_webhooks(15)
        [delivery] = linear.deliveries
    first, second = delivery.attempts
    assert first.status is None and not first.ok and 5.0 <= first.latency < 7.0
    assert second.ok


class _FlakyBackend:
    """The bridge's backend for one intake: the database is down on the first claim, up afterwards."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.claims = 0
        self.recorded: dict[tuple[str, str], str] = {}

    def claim(self, ticket: Ticket) -> Claim:
        with self.lock:
            self.claims += 1
            if self.claims == 1:
                raise Unavailable("database", "first claim refused")
        return Claim("created", f"run-{ticket.issue_id}", 1, "ns")

    def create_or_attach_run(self, claim: Claim, intake: Intake, trigger: Trigger) -> str:
        return "created"

    def record_delivery(self, provider: str, delivery_id: str, outcome: str) -> bool:
        with self.lock:
            fresh = (provider, delivery_id) not in self.recorded
            self.recorded.setdefault((provider, delivery_id), outcome)
        return fresh

    def check_ready(self) -> dict[str, str]:
        return {"database": "ok", "kubernetes": "ok"}


class _BridgeThread(ServerThread):
    def __init__(self, bridge: Bridge) -> None:
        super().__init__()
        self.bridge = bridge

    def build_app(self) -> web.Application:
        return self.bridge.application()


def test_a_retry_later_than_the_bridges_window_is_still_accepted() -> None:
    # The bridge's 60 s window and Linear's 1 min retry, both scaled to a fast
    # clock: a retry carrying the first send's timestamp would be refused 401.
    window, first_retry = 0.3, 0.6
    settings = Settings(namespace="ns", linear_secrets=(SECRET,), github_secrets=(), tolerance_seconds=window,
                        trigger=TriggerRule(), workers=2, database_url=None, kubeconfig=None)
    backend = _FlakyBackend()
    with _BridgeThread(Bridge(settings, backend)) as bridge:  # type: ignore[arg-type]
        with _linear(f"{bridge.url}/webhooks/linear", retry_delays=(60.0,), retry_scale=first_retry / 60) as linear:
            linear.create_issue("ACME", "Retried", labels=["foundry"])
            assert linear.wait_webhooks(10)
            [delivery] = linear.deliveries
    assert [a.status for a in delivery.attempts] == [503, 200] and delivery.delivered
    assert delivery.attempts[1].started_at - delivery.attempts[0].started_at >= first_retry > window
    assert backend.recorded == {("linear", delivery.id): "created"}
