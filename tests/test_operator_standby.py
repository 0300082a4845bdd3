"""Only the leader reconciles; a standby keeps its watch and cache warm (real kopf watches,
the work queue, the real API server and PostgreSQL; the Linear and GitHub stand-ins).

The leadership here is a switch the test flips (the Lease elector has its own
tests): while off, the operator hears every event and acts on none; switched
on, it takes over every active run it already knows at once, without waiting
for a listing, and loses none of what happened while it stood by.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from foundry.operator.controller import controller_for
from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.operator_stack import OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


class Switch:
    """A Leadership the test flips. Its fence never refuses: what is under test is that a
    standby's workers take nothing from the queue (the fences have the elector's tests)."""

    def __init__(self) -> None:
        self.on = False

    def leading(self) -> bool:
        return self.on

    async def wait_leading(self) -> None:
        while not self.on:
            await asyncio.sleep(0.05)

    def fence(self) -> None:
        return None


def test_a_standby_watches_without_acting_and_takes_over_what_it_knows(kube_client, crds, namespace, engine):
    with OperatorStack.open(kube_client, engine, namespace) as stack:
        switch = Switch()
        stack.deps.leadership = switch
        with operator_thread(stack.deps, namespace):
            controller = controller_for(stack.deps)
            issue_id, run = stack.ticket()
            wait_for(lambda: (namespace, run) in controller.seen, timeout=10, what="the run in the standby's cache")
            time.sleep(2)  # a leader would have planned it within a second
            body = stack.run(run)
            assert (body.get("status") or {}).get("phase") is None
            assert stack.untouched(run)  # not even a finalizer or a Paused condition written
            assert controller.reconciles == 0 and stack.comment_purposes(issue_id) == []

            switch.on = True
            started = time.monotonic()
            wait_phase(kube_client, namespace, run, "WaitingApproval", timeout=15)
            took = time.monotonic() - started
            assert controller.takeovers == [1]  # the run it knew, due at once: no listing waited for
            assert took < 10, f"the takeover took {took:.1f}s"

            # Standing by again: an approval meanwhile is heard, not acted on, and not lost.
            switch.on = False
            time.sleep(1)  # the workers notice within the leadership poll
            stack.decide(run, "approve", "alice")
            time.sleep(2)
            assert stack.phase(run) == "WaitingApproval" and stack.jobs(run) == []
            switch.on = True
            wait_phase(kube_client, namespace, run, "AgentRunning", timeout=15)
            assert controller.takeovers == [1, 1]
            assert stack.jobs(run) == [f"{run}-a1"]
    assert stack.comment_purposes(issue_id) == ["approval_request"]
