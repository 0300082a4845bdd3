"""The HTTP layer with a lean (event-loop) intake path: same answers, and the threaded backend untouched.

The lean path's real implementation is proven against the servers in
test_bridge_e2e.py (the bridge uses it with PostgreSQL), test_bridge_kubehttp.py
and test_db_claims_pg_lean.py; here an in-memory stand-in pins down the routing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from foundry.bridge.app import Bridge
from foundry.bridge.commands import Claim, Trigger, Unavailable
from foundry.bridge.mapping import Intake, Ticket, TriggerRule
from foundry.bridge.settings import Settings
from tests.support.bridge_kit import encode, linear_comment, linear_headers, linear_issue

SECRET = "lin-secret"
ISSUE = "issue-1"


class ThreadedBackendThatMustNotBeUsed:
    """Every intake-path method fails the test; the rest answers like an empty world."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*_args: Any) -> Any:
            self.calls.append(name)
            if name in ("claim", "create_or_attach_run", "record_delivery"):
                raise AssertionError(f"threaded {name} used although a lean path was given")
            return {"delivery_recorded": False, "active_run": None}.get(name)

        return call


class LeanStandIn:
    def __init__(self) -> None:
        self.recorded: dict[tuple[str, str], str] = {}
        self.runs: set[str] = set()
        self.calls: list[str] = []
        self.fail: set[str] = set()
        self.closed = False

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise Unavailable("database" if name != "kube" else "kubernetes", "test")

    async def claim(self, ticket: Ticket) -> Claim:
        self._step("claim")
        await asyncio.sleep(0.05)  # long enough for concurrent copies to join the first
        return Claim("created", f"run-{ticket.issue_id}", 1, "ns")

    async def create_or_attach_run(self, claim: Claim, intake: Intake, trigger: Trigger) -> str:
        self._step("kube")
        assert claim.name is not None
        if claim.name in self.runs:
            return "attached"
        self.runs.add(claim.name)
        return "created"

    async def record_delivery(self, provider: str, delivery_id: str, outcome: str) -> bool:
        self._step("record")
        if (provider, delivery_id) in self.recorded:
            return False
        self.recorded[(provider, delivery_id)] = outcome
        return True

    async def close(self) -> None:
        self.closed = True


def settings() -> Settings:
    return Settings("ns", (SECRET,), (), 60.0, TriggerRule(), 2, None, None)


def serve(lean: LeanStandIn, backend: Any, test: Callable[[TestClient], Awaitable[None]]) -> None:
    async def main() -> None:
        bridge = Bridge(settings(), backend, lean=lean)
        async with TestClient(TestServer(bridge.application())) as client:
            await test(client)

    asyncio.run(main())


async def post(client: TestClient, payload: dict[str, Any], delivery_id: str, event: str = "Issue") -> tuple[int, Any]:
    body = encode(payload)
    response = await client.post("/webhooks/linear", data=body, headers=linear_headers(body, SECRET, delivery_id, event=event))
    return response.status, await response.json()


def test_intake_storm_replay_and_decision_record_go_through_the_lean_path() -> None:
    lean, backend = LeanStandIn(), ThreadedBackendThatMustNotBeUsed()

    async def test(client: TestClient) -> None:
        storm = await asyncio.gather(*(post(client, linear_issue(ISSUE, "ACME-1"), f"d-{i}") for i in range(20)))
        assert sorted(a["status"] for _, a in storm) == ["attached"] * 19 + ["created"]
        assert {s for s, _ in storm} == {200} and {a["run"] for _, a in storm} == {f"run-{ISSUE}"}
        assert lean.calls.count("claim") == 1  # the copies joined the first one's execution
        assert await post(client, linear_issue(ISSUE, "ACME-1"), "d-0") == (200, {"status": "duplicate", "run": f"run-{ISSUE}"})
        # A decision is applied through the threaded backend, but recorded through the lean path.
        status, answer = await post(client, linear_comment(ISSUE, "/foundry approve"), "c-1", event="Comment")
        assert (status, answer["status"]) == (200, "ignored")

    serve(lean, backend, test)
    assert len(lean.recorded) == 21 and lean.recorded[("linear", "c-1")] == "ignored"
    assert backend.calls == ["delivery_recorded", "active_run"]
    assert lean.closed  # the app's cleanup closes the lean path's pool and session


@pytest.mark.parametrize("failing", ["claim", "kube", "record"])
def test_lean_unavailable_is_503_and_the_retry_succeeds(failing: str) -> None:
    lean = LeanStandIn()
    lean.fail.add(failing)

    async def test(client: TestClient) -> None:
        status, answer = await post(client, linear_issue(ISSUE, "ACME-1"), "d-1")
        assert status == 503 and "unavailable" in answer["error"]
        assert lean.recorded == {}
        lean.fail.clear()
        status, answer = await post(client, linear_issue(ISSUE, "ACME-1"), "d-1")
        assert status == 200 and answer["status"] in ("created", "attached")

    serve(lean, ThreadedBackendThatMustNotBeUsed(), test)
    assert list(lean.recorded) == [("linear", "d-1")]
