"""Two Lease electors against the real API server (client-go's defaults: 15 s / 10 s / 2 s).

A sampler checks, every few milliseconds for the whole test, that at most one
of them says it leads. The holder is cut off from the API server (its Lease
requests fail, as in a network partition; the other keeps its connection): it
stops leading at its renew deadline, before the standby's clock lets it take
over, and the standby has taken over within lease duration + retry period of
the cut. A clean stop releases the Lease and the standby takes it at its next
look, about a second later.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import client

from foundry.operator.election import Elector
from foundry.operator.leadership import NotLeading
from foundry.operator.leaseio import LeaseClient, LeaseUnavailable

pytestmark = [pytest.mark.kube, pytest.mark.slow]

LEASE, DEADLINE, RETRY = 15.0, 10.0, 2.0
# Requests on a machine shared by several test suites: a look can take a few hundred ms.
SLACK = 1.5


class CuttableLeases(LeaseClient):
    """The real Lease client, with a switch that makes every request fail as unreachable."""

    cut = False

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.cut:
            raise LeaseUnavailable(f"{what}: cut off by the test")
        return super()._call(what, fn, *args, **kwargs)


def _elector(control_plane, namespace: str, me: str) -> Elector:
    leases = CuttableLeases(control_plane.api_client(), namespace, "foundry-operator", timeout=(2.0, 4.0))
    return Elector(leases, me, lease_duration=LEASE, renew_deadline=DEADLINE, retry_period=RETRY)


class Sampler:
    """Who says it leads, every 5 ms; fails the test on any sample with two."""

    def __init__(self, electors: list[Elector]) -> None:
        self.electors = electors
        self.both: list[float] = []
        self.changes: list[tuple[float, str | None]] = []  # (when, who leads) each time it changes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last: Any = object()
        while not self._stop.is_set():
            now = time.monotonic()
            leaders = [e.me for e in self.electors if e.leading()]
            if len(leaders) > 1:
                self.both.append(now)
            who = leaders[0] if leaders else None
            if who != last:
                self.changes.append((now, who))
                last = who
            time.sleep(0.005)

    def first_time(self, who: str, after: float) -> float:
        for at, leader in self.changes:
            if at >= after and leader == who:
                return at
        raise AssertionError(f"{who} never led after {after}: {self.changes}")

    def last_time(self, who: str, before: float) -> float:
        """When `who` was last seen leading before `before` (the change away from it)."""
        seen = [at for (at, leader), (nxt, _) in zip(self.changes, self.changes[1:] + [(before, None)])
                if leader == who for at in [nxt]]
        return max(seen)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)


def _wait(predicate: Any, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _lease(kube_client, namespace: str) -> dict[str, Any]:
    return client.CoordinationV1Api(kube_client).read_namespaced_lease("foundry-operator", namespace).to_dict()


def test_one_leader_takeover_after_a_cut_and_a_quick_handover_on_release(control_plane, kube_client, namespace):
    a, b = _elector(control_plane, namespace, "op-a"), _elector(control_plane, namespace, "op-b")
    with Sampler([a, b]) as sampler:
        a.start()
        _wait(a.leading, 10, "op-a to lead")
        b.start()
        time.sleep(3 * RETRY)  # b has looked a few times and is waiting
        assert a.leading() and not b.leading()
        with pytest.raises(NotLeading):
            b.fence()
        spec = _lease(kube_client, namespace)["spec"]
        assert spec["holder_identity"] == "op-a" and spec["lease_duration_seconds"] == 15

        # The holder is cut off: it must stop before b may start, and b starts within 15 + 2 s.
        cut = time.monotonic()
        a.leases.cut = True
        took = _wait(b.leading, LEASE + RETRY + 10, "op-b to take over")
        _wait(lambda: any(at >= cut and who == "op-b" for at, who in sampler.changes), 5,
              "the sampler to see op-b lead")
        stopped = sampler.last_time("op-a", took)
        assert stopped - cut <= DEADLINE + 0.1, "op-a acted past its renew deadline"
        assert sampler.first_time("op-b", cut) > stopped
        takeover = sampler.first_time("op-b", cut) - cut
        assert takeover <= LEASE + RETRY + SLACK, f"takeover took {takeover:.1f}s"
        with pytest.raises(NotLeading):
            a.fence()
        b.fence()
        lease = _lease(kube_client, namespace)["spec"]
        assert lease["holder_identity"] == "op-b" and lease["lease_transitions"] == 1

        # a comes back and waits as a standby; b stops cleanly: a takes over at its next look.
        a.leases.cut = False
        time.sleep(2 * RETRY)
        assert b.leading() and not a.leading()
        released = time.monotonic()
        b.stop()
        assert not b.leading()
        _wait(a.leading, RETRY + 5, "op-a to take the released Lease")
        # The sampler's thread records a change at its next look, a moment after a.leading() turned true.
        _wait(lambda: any(at >= released and who == "op-a" for at, who in sampler.changes), 5,
              "the sampler to see op-a lead")
        handover = sampler.first_time("op-a", released) - released
        assert handover <= RETRY + SLACK, f"handover after a release took {handover:.1f}s"
        a.stop()
    assert not sampler.both, f"two leaders at once at {sampler.both[:3]}"
    assert _lease(kube_client, namespace)["spec"]["holder_identity"] in (None, "")
    print(f"takeover after a cut: {takeover:.2f}s; handover after a release: {handover:.2f}s")


def test_candidates_racing_for_a_new_lease_elect_one(control_plane, namespace):
    """Eight candidates start at once on a missing Lease: the create is refused to all
    but one (409), and the rest wait; one leader throughout."""
    electors = [_elector(control_plane, namespace, f"op-{i}") for i in range(8)]
    with Sampler(electors) as sampler:
        for e in electors:
            e.start()
        _wait(lambda: any(e.leading() for e in electors), 10, "a leader")
        time.sleep(3 * RETRY)
        leaders = [e.me for e in electors if e.leading()]
        for e in electors:
            e.stop(release=False)
    assert len(leaders) == 1, leaders
    assert not sampler.both
