"""The HTTP layer in-process: order of checks, answers, 503s, replay, coalescing, metrics and logs.

The backend here is a recording stand-in so each HTTP rule can be pinned down
exactly; the same behaviour against the real API server and PostgreSQL, with
bridges as real processes, is proven in test_bridge_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from foundry.bridge.app import Bridge
from foundry.bridge.commands import Claim, Trigger, Unavailable
from foundry.bridge.logs import LOGGER_NAME, JsonFormatter
from foundry.bridge.mapping import Decision, Intake, Ticket, TriggerRule
from foundry.bridge.settings import Settings
from tests.support.bridge_kit import encode, github_headers, github_pull_request, linear_comment, linear_headers, linear_issue

SECRET = "lin-secret"
GH_SECRET = "gh-secret"
ISSUE = "issue-1"


class RecordingBackend:
    """Keeps deliveries and runs in memory; `fail` makes the named step raise Unavailable."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.recorded: dict[tuple[str, str], str] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.approvals: set[tuple[str, str, str]] = set()
        self.hints: dict[str, str] = {}
        self.calls: list[str] = []
        self.fail: set[str] = set()
        self.claim_delay = 0.0

    def _step(self, name: str) -> None:
        with self.lock:
            self.calls.append(name)
        if name in self.fail:
            raise Unavailable("database" if name != "kube" else "kubernetes", "test")

    def delivery_recorded(self, provider: str, delivery_id: str) -> bool:
        self._step("recorded?")
        return (provider, delivery_id) in self.recorded

    def record_delivery(self, provider: str, delivery_id: str, outcome: str) -> bool:
        self._step("record")
        with self.lock:
            if (provider, delivery_id) in self.recorded:
                return False
            self.recorded[(provider, delivery_id)] = outcome
            return True

    def claim(self, ticket: Ticket) -> Claim:
        self._step("claim")
        time.sleep(self.claim_delay)
        return Claim("created", f"run-{ticket.issue_id}", 1, "ns")

    def create_or_attach_run(self, claim: Claim, intake: Intake, trigger: Trigger) -> str:
        self._step("kube")
        with self.lock:
            if claim.name in self.runs:
                return "attached"
            self.runs[claim.name] = {"delivery": trigger.delivery_id}  # type: ignore[index]
            return "created"

    def active_run(self, issue_id: str) -> tuple[str, str] | None:
        self._step("active")
        name = f"run-{issue_id}"
        return ("ns", name) if name in self.runs else None

    def active_run_by_key(self, issue_key: str) -> tuple[str, str] | None:
        return None

    def run_plan_hash(self, run: tuple[str, str]) -> str | None:
        self._step("kube")
        return None

    def create_approval(self, run: tuple[str, str], decision: Decision, plan_hash: str | None = None) -> bool:
        self._step("kube")
        key = (run[1], decision.decision, decision.approver)
        with self.lock:
            new = key not in self.approvals
            self.approvals.add(key)
        return new

    def hint_run(self, run: Any, value: str) -> bool:
        self._step("kube")
        name = run if isinstance(run, str) else run[1]
        if name not in self.runs:
            return False
        self.hints[name] = value
        return True

    def check_ready(self) -> dict[str, str]:
        return {"database": "down" if "record" in self.fail else "ok", "kubernetes": "ok"}


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        namespace="ns",
        linear_secrets=(SECRET,),
        github_secrets=(GH_SECRET,),
        tolerance_seconds=60.0,
        trigger=TriggerRule(),
        workers=4,
        database_url=None,
        kubeconfig=None,
    )
    values.update(overrides)
    return Settings(**values)


def serve(backend: RecordingBackend, test: Callable[[TestClient, Bridge], Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        bridge = Bridge(_settings(), backend, **kwargs)
        async with TestClient(TestServer(bridge.application())) as client:
            await test(client, bridge)

    asyncio.run(main())


def _linear(payload: dict[str, Any], delivery_id: str = "d-1", **header_overrides: str) -> tuple[bytes, dict[str, str]]:
    body = encode(payload)
    headers = linear_headers(body, SECRET, delivery_id)
    headers.update(header_overrides)
    return body, headers


async def _post(client: TestClient, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any], Any]:
    response = await client.post(path, data=body, headers=headers)
    return response.status, await response.json(), response.headers


# ---------------------------------------------------------------- order of checks


@pytest.mark.parametrize(
    "case, status",
    [
        ("huge body, wrong type, bad json, bad signature", 413),
        ("wrong type, bad json, bad signature", 415),
        ("bad json, bad signature", 401),
        ("wrong shape, bad signature", 401),
        ("bad json", 400),
        ("wrong shape", 400),
        ("bad signature", 401),
        ("stale timestamp", 401),
        ("future timestamp", 401),
    ],
)
def test_checks_run_in_contract_order(case: str, status: int) -> None:
    backend = RecordingBackend()
    payload = linear_issue(ISSUE, "ACME-1")
    if "stale" in case:
        payload["webhookTimestamp"] -= 61_000
    if "future" in case:
        payload["webhookTimestamp"] += 61_000
    body = encode(payload)
    if "huge" in case:
        body = b"x" * (5 * 1024 * 1024 + 1)
    elif "bad json" in case:
        body = body[: len(body) // 2]
    elif "wrong shape" in case:
        body = encode({"type": "Issue", "data": {}})
    headers = linear_headers(body, SECRET, "d-1")
    if "bad signature" in case:
        headers["Linear-Signature"] = "0" * 64
    if "wrong type" in case:
        headers["Content-Type"] = "text/plain"

    async def test(client: TestClient, _bridge: Bridge) -> None:
        got, answer, _ = await _post(client, "/webhooks/linear", body, headers)
        assert got == status, answer
        assert "error" in answer and answer["error"]

    serve(backend, test)
    assert backend.calls == []  # nothing touched the database or the API server


def test_chunked_body_over_limit_is_413_without_content_length() -> None:
    backend = RecordingBackend()

    async def chunks():
        for _ in range(6):
            yield b" " * (1024 * 1024)

    async def test(client: TestClient, _bridge: Bridge) -> None:
        response = await client.post(
            "/webhooks/linear", data=chunks(), headers={"Content-Type": "application/json", "Linear-Delivery": "d"}
        )
        assert response.status == 413

    serve(backend, test)


# ---------------------------------------------------------------- answers


def test_intake_then_replay_is_duplicate_and_new_copy_attaches() -> None:
    backend = RecordingBackend()

    async def test(client: TestClient, _bridge: Bridge) -> None:
        body, headers = _linear(linear_issue(ISSUE, "ACME-1"), "d-1")
        assert (await _post(client, "/webhooks/linear", body, headers))[:2] == (
            200,
            {"status": "created", "run": f"run-{ISSUE}"},
        )
        # An intake replay is recognised at the record (it re-attached, harmlessly) and names the run.
        assert (await _post(client, "/webhooks/linear", body, headers))[:2] == (
            200,
            {"status": "duplicate", "run": f"run-{ISSUE}"},
        )
        body, headers = _linear(linear_issue(ISSUE, "ACME-1"), "d-2")
        assert (await _post(client, "/webhooks/linear", body, headers))[:2] == (
            200,
            {"status": "attached", "run": f"run-{ISSUE}"},
        )

    serve(backend, test)
    assert backend.recorded == {("linear", "d-1"): "created", ("linear", "d-2"): "attached"}


def test_untriggered_issue_is_ignored_without_touching_backends() -> None:
    backend = RecordingBackend()

    async def test(client: TestClient, _bridge: Bridge) -> None:
        body, headers = _linear(linear_issue(ISSUE, "ACME-1", labels=("bug",)))
        status, answer, _ = await _post(client, "/webhooks/linear", body, headers)
        assert (status, answer["status"], answer["run"]) == (200, "ignored", None)
        assert "trigger" in answer["reason"]

    serve(backend, test)
    assert backend.calls == []


@pytest.mark.parametrize("failing", ["claim", "kube", "record"])
def test_unavailable_dependency_is_503_with_retry_after_and_nothing_recorded(failing: str) -> None:
    backend = RecordingBackend()
    backend.fail.add(failing)

    async def test(client: TestClient, _bridge: Bridge) -> None:
        body, headers = _linear(linear_issue(ISSUE, "ACME-1"))
        status, answer, response_headers = await _post(client, "/webhooks/linear", body, headers)
        assert status == 503 and response_headers["Retry-After"].isdigit()
        assert "unavailable" in answer["error"] and "test" not in answer["error"]  # no internals
        backend.fail.clear()
        status, answer, _ = await _post(client, "/webhooks/linear", body, headers)  # the sender's retry
        assert status == 200 and answer["status"] in ("created", "attached")

    serve(backend, test)
    assert list(backend.recorded) == [("linear", "d-1")]


@pytest.mark.parametrize("stuck", ["claim", "record"])
def test_a_dependency_that_never_answers_gets_503_by_the_deadline(stuck: str) -> None:
    backend = RecordingBackend()
    release = threading.Event()
    step = backend._step

    def hang_at(name: str) -> None:
        step(name)
        if name == stuck:
            release.wait(30)  # a call without a timeout of its own, on a server that never answers

    backend._step = hang_at  # type: ignore[method-assign]

    async def test(client: TestClient, _bridge: Bridge) -> None:
        body, headers = _linear(linear_issue(ISSUE, "ACME-1"))
        started = time.monotonic()
        status, answer, response_headers = await _post(client, "/webhooks/linear", body, headers)
        took = time.monotonic() - started
        release.set()
        assert (status, answer) == (503, {"error": "a dependency did not answer in time, retry later"})
        assert response_headers["Retry-After"].isdigit() and 0.5 <= took < 1.5, took

    serve(backend, test, deadline_seconds=0.5)


def test_decision_replay_is_answered_from_the_record_before_anything_is_applied() -> None:
    backend = RecordingBackend()
    backend.runs[f"run-{ISSUE}"] = {}

    async def test(client: TestClient, _bridge: Bridge) -> None:
        body, headers = _linear(linear_comment(ISSUE, "/foundry stop"), "c-1")
        assert (await _post(client, "/webhooks/linear", body, headers))[0] == 200
        applied = backend.calls.count("kube")
        assert (await _post(client, "/webhooks/linear", body, headers))[:2] == (200, {"status": "duplicate", "run": None})
        assert backend.calls.count("kube") == applied  # the replay applied nothing
        backend.fail.add("recorded?")
        status, _, response_headers = await _post(client, "/webhooks/linear", body, headers)
        assert status == 503 and "Retry-After" in response_headers

    serve(backend, test)


def test_unexpected_exception_is_500_without_internals_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    backend = RecordingBackend()

    def explode(ticket: Ticket) -> Claim:
        raise KeyError("secret internals")

    backend.claim = explode  # type: ignore[method-assign]

    async def test(client: TestClient, _bridge: Bridge) -> None:
        body, headers = _linear(linear_issue(ISSUE, "ACME-1"), "d-boom")
        status, answer, _ = await _post(client, "/webhooks/linear", body, headers)
        assert (status, answer) == (500, {"error": "internal error"})

    with caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
        serve(backend, test)
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failures and failures[0].fields["delivery_id"] == "d-boom" and failures[0].exc_info  # type: ignore[attr-defined]
    assert backend.recorded == {}


def test_concurrent_copies_share_one_claim_and_only_one_reports_created() -> None:
    backend = RecordingBackend()
    backend.claim_delay = 0.2  # keep the first claim in flight while the others arrive

    async def test(client: TestClient, _bridge: Bridge) -> None:
        posts = []
        for i in range(16):
            body, headers = _linear(linear_issue(ISSUE, "ACME-1"), f"d-{i}")
            posts.append(_post(client, "/webhooks/linear", body, headers))
        answers = await asyncio.gather(*posts)
        statuses = sorted(answer["status"] for _, answer, _ in answers)
        assert statuses == ["attached"] * 15 + ["created"]

    serve(backend, test)
    assert backend.calls.count("claim") == 1
    assert len(backend.recorded) == 16


def test_approval_comment_applies_to_active_run_and_without_one_is_ignored() -> None:
    backend = RecordingBackend()

    async def test(client: TestClient, _bridge: Bridge) -> None:
        body, headers = _linear(linear_comment(ISSUE, "/foundry approve"), "c-1")
        status, answer, _ = await _post(client, "/webhooks/linear", body, headers)
        assert (status, answer["status"], answer["reason"]) == (200, "ignored", "the issue has no active run")
        backend.runs[f"run-{ISSUE}"] = {}
        for delivery in ("c-2", "c-3"):  # the same approval twice: one object
            body, headers = _linear(linear_comment(ISSUE, "/foundry approve"), delivery)
            status, answer, _ = await _post(client, "/webhooks/linear", body, headers)
            assert (status, answer) == (200, {"status": "applied", "run": f"run-{ISSUE}"})

    serve(backend, test)
    assert backend.approvals == {(f"run-{ISSUE}", "approve", "alice@example.com")}


def test_a_command_comment_without_its_id_is_400_and_applies_nothing() -> None:
    backend = RecordingBackend()
    backend.runs[f"run-{ISSUE}"] = {}

    async def test(client: TestClient, _bridge: Bridge) -> None:
        payload = linear_comment(ISSUE, "/foundry approve")
        del payload["data"]["id"]
        body, headers = _linear(payload, "c-noid")
        status, answer, _ = await _post(client, "/webhooks/linear", body, headers)
        assert status == 400 and "data.id" in answer["error"]

    serve(backend, test)
    assert backend.approvals == set()


def test_github_ping_hint_and_signature() -> None:
    backend = RecordingBackend()
    backend.runs["lin-abc-1"] = {}

    async def test(client: TestClient, _bridge: Bridge) -> None:
        body = encode({"zen": "hi", "hook_id": 1})
        status, answer, _ = await _post(client, "/webhooks/github", body, github_headers(body, GH_SECRET, "g-0", "ping"))
        assert (status, answer["status"]) == (200, "pong")
        body = encode(github_pull_request("foundry/lin-abc-1", "Fix"))
        headers = github_headers(body, GH_SECRET, "g-1", "pull_request")
        assert (await _post(client, "/webhooks/github", body, headers))[:2] == (
            200,
            {"status": "applied", "run": "lin-abc-1"},
        )
        headers = github_headers(body, "wrong", "g-2", "pull_request")
        assert (await _post(client, "/webhooks/github", body, headers))[0] == 401
        body = encode(github_pull_request("foundry/lin-gone-1", "Fix"))
        headers = github_headers(body, GH_SECRET, "g-3", "pull_request")
        status, answer, _ = await _post(client, "/webhooks/github", body, headers)
        assert (status, answer["status"], answer["run"]) == (200, "ignored", None)

    serve(backend, test)
    assert backend.hints == {"lin-abc-1": "pull_request/g-1"}


def test_health_readiness_and_metrics() -> None:
    backend = RecordingBackend()

    async def test(client: TestClient, _bridge: Bridge) -> None:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 200
        body, headers = _linear(linear_issue(ISSUE, "ACME-1"))
        await _post(client, "/webhooks/linear", body, headers)
        await _post(client, "/webhooks/linear", body, headers)
        await _post(client, "/webhooks/linear", b"{", linear_headers(b"{", SECRET, "d-bad"))
        backend.fail.add("record")
        ready = await client.get("/readyz")
        assert ready.status == 503 and (await ready.json())["checks"]["database"] == "down"
        text = await (await client.get("/metrics")).text()
        assert 'foundry_bridge_deliveries_total{event="Issue",outcome="created",provider="linear"} 1.0' in text
        assert 'foundry_bridge_deliveries_total{event="Issue",outcome="duplicate",provider="linear"} 1.0' in text
        assert 'foundry_bridge_deliveries_total{event="none",outcome="bad_request",provider="linear"} 1.0' in text
        assert 'foundry_bridge_delivery_seconds_count{provider="linear"} 3.0' in text
        assert "foundry_bridge_in_flight 0.0" in text

    serve(backend, test)


def test_one_json_log_line_per_delivery(caplog: pytest.LogCaptureFixture) -> None:
    backend = RecordingBackend()

    async def test(client: TestClient, _bridge: Bridge) -> None:
        body, headers = _linear(linear_issue(ISSUE, "ACME-1"), "d-log")
        await _post(client, "/webhooks/linear", body, headers)

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        serve(backend, test)
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.getMessage() == "delivery"]
    assert len(lines) == 1
    line = lines[0]
    assert {k: line[k] for k in ("provider", "event", "delivery_id", "outcome", "http_status", "run")} == {
        "provider": "linear",
        "event": "Issue",
        "delivery_id": "d-log",
        "outcome": "created",
        "http_status": 200,
        "run": f"run-{ISSUE}",
    }
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
