"""The webhook provider: HMAC-signed POSTs to a real local HTTP receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from foundry.agents import AgentError, AgentUnavailable, make_provider
from foundry.agents.webhook import WebhookProvider, build_request, sign, verify
from foundry.config import parse_config
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "s3cret-for-tests"
RUN = {"metadata": {"name": "lin-abc-1", "namespace": "ns", "uid": "u"}}
INPUT = {"repo": "acme/web", "branch": "foundry/lin-abc-1", "plan": {"goal": "g"}}


def cfg(url):
    return parse_config(yaml.safe_load(f"agent: {{provider: webhook, webhook_url: '{url}', "
                                       "webhook_secret_env: AGENT_SECRET}\ntimeouts: {agent_seconds: 600}"))


@pytest.fixture
def hook():
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def test_signature_is_hmac_sha256_of_the_exact_body():
    body, headers = build_request(RUN, 3, INPUT, SECRET)
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Foundry-Signature-256"] == expected == sign(body, SECRET)
    assert headers["X-Foundry-Delivery"] == "lin-abc-1-a3"
    assert verify(body, SECRET, expected)
    assert not verify(body + b" ", SECRET, expected)
    assert not verify(body, "other", expected) and not verify(body, SECRET, None)


def test_dispatch_posts_signed_input(hook):
    provider = WebhookProvider(cfg(hook.url + "/agent"), env={"AGENT_SECRET": SECRET})
    rec = provider.dispatch(RUN, 1, INPUT)
    assert rec["name"] == "lin-abc-1-a1" and rec["state"] == "running" and rec["startedAt"]
    (got,) = hook.received
    assert got.headers["X-Foundry-Signature-256"] == sign(got.body, SECRET)
    payload = json.loads(got.body)
    assert payload["input"] == INPUT and payload["attempt"] == 1 and payload["event"] == "dispatch"
    provider.close()


def test_recorded_attempt_is_not_sent_again(hook):
    provider = WebhookProvider(cfg(hook.url), env={"AGENT_SECRET": SECRET})
    rec = provider.dispatch(RUN, 1, INPUT)
    run = {**RUN, "status": {"agent": {"jobs": [rec]}}}
    assert provider.dispatch(run, 1, INPUT) == rec
    assert len(hook.received) == 1
    provider.close()


def test_resend_after_ambiguous_failure_carries_the_same_delivery_id(hook):
    hook.script(503)
    provider = WebhookProvider(cfg(hook.url), env={"AGENT_SECRET": SECRET})
    with pytest.raises(AgentUnavailable, match="503"):
        provider.dispatch(RUN, 1, INPUT)
    provider.dispatch(RUN, 1, INPUT)
    assert [r.headers["X-Foundry-Delivery"] for r in hook.received] == ["lin-abc-1-a1", "lin-abc-1-a1"]
    assert hook.received[0].body == hook.received[1].body  # same bytes: the receiver can dedup
    provider.close()


def test_refusal_is_an_agent_error(hook):
    hook.script(401)
    provider = WebhookProvider(cfg(hook.url), env={"AGENT_SECRET": SECRET})
    with pytest.raises(AgentError, match="refused with 401"):
        provider.dispatch(RUN, 1, INPUT)
    provider.close()


def test_unreachable_is_unavailable():
    provider = WebhookProvider(cfg("http://127.0.0.1:9"), env={"AGENT_SECRET": SECRET})
    with pytest.raises(AgentUnavailable):
        provider.dispatch(RUN, 1, INPUT)
    assert isinstance(AgentUnavailable("x"), ConnectionError)  # the operator's retry path catches ConnectionError
    provider.close()


def test_missing_secret_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("FOUNDRY_AGENT_WEBHOOK_SECRET", raising=False)
    c = parse_config(yaml.safe_load("agent: {provider: webhook, webhook_url: 'http://127.0.0.1:9'}"))
    provider = make_provider(c)
    with pytest.raises(AgentError, match="FOUNDRY_AGENT_WEBHOOK_SECRET is not set"):
        provider.dispatch(RUN, 1, INPUT)


def test_state_times_out_after_agent_seconds():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    clock = {"now": now}
    provider = WebhookProvider(cfg("http://127.0.0.1:9"), env={"AGENT_SECRET": SECRET}, clock=lambda: clock["now"])
    assert provider.state(RUN, 1) == {"state": "missing"}
    run = {**RUN, "status": {"agent": {"jobs": [{"name": "lin-abc-1-a1", "attempt": 1, "startedAt": "2026-01-01T12:00:00Z"}]}}}
    assert provider.state(run, 1)["state"] == "running"
    clock["now"] = now + timedelta(seconds=600)
    st = provider.state(run, 1)
    assert (st["state"], st["reason"]) == ("failed", "DeadlineExceeded")


def test_cancel_sends_a_signed_cancel_event(hook):
    provider = WebhookProvider(cfg(hook.url), env={"AGENT_SECRET": SECRET})
    provider.cancel(RUN, 2)
    (got,) = hook.received
    assert got.headers["X-Foundry-Event"] == "cancel" and verify(got.body, SECRET, got.headers["X-Foundry-Signature-256"])
    provider.close()
