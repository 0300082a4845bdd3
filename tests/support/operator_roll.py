"""Watching the operator's Lease while its Deployment rolls (tests/test_chart_story_node.py).

A thread samples the Lease and the operator pods every SAMPLE seconds and keeps, per pod, when it
began terminating, and, per holder, when it acquired the Lease. A handover's gap runs from the old
holder's pod beginning to terminate to the new holder's acquireTime: the time no operator acted.

The times are wall-clock seconds: the Lease's acquireTime is written by the acquiring pod, on the node,
which is this machine, so its clock is the test's. A pod's start of termination is the earlier of
when a sample first saw its deletionTimestamp and that timestamp minus the grace period (the API
server stamps deletion + grace, to the second, rounded down): a gap is never measured short.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from kubernetes import client

SAMPLE = 0.2  # seconds


@dataclass(frozen=True)
class Handover:
    old: str
    new: str
    terminating_at: float | None  # None: the old holder's pod was never seen terminating
    acquired_at: float

    @property
    def gap(self) -> float | None:
        return None if self.terminating_at is None else self.acquired_at - self.terminating_at


@dataclass
class RollSamples:
    """What the sampler saw: each holder in turn with its acquireTime, and each pod's start of termination."""

    holders: list[tuple[str, float]] = field(default_factory=list)  # (holder, acquired at), in order
    terminating: dict[str, float] = field(default_factory=dict)  # pod → began terminating at
    pods: set[str] = field(default_factory=set)  # every operator pod seen
    logs: dict[str, list[str]] = field(default_factory=dict)  # a terminating holder's log to its end

    def see_holder(self, holder: str | None, acquired_at: float | None) -> None:
        if not holder or acquired_at is None:
            return  # released: the next holder's acquireTime says when the gap ended
        if not self.holders or self.holders[-1][0] != holder:
            self.holders.append((holder, acquired_at))

    def see_terminating(self, pod: str, at: float) -> None:
        self.terminating[pod] = min(at, self.terminating.get(pod, at))

    def handovers(self) -> list[Handover]:
        return [Handover(old, new, self.terminating.get(old), acquired)
                for (old, _), (new, acquired) in zip(self.holders, self.holders[1:])]


def _epoch(t: datetime | None) -> float | None:
    return None if t is None else t.timestamp()


class RollWatch:
    """Samples `lease` in `namespace` and the pods `selector` names until stopped."""

    def __init__(self, api: client.ApiClient, namespace: str, lease: str, selector: str) -> None:
        self.core = client.CoreV1Api(api)
        self.leases = client.CoordinationV1Api(api)
        self.namespace, self.lease, self.selector = namespace, lease, selector
        self.samples = RollSamples()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="roll-watch", daemon=True)
        self._following: set[str] = set()

    def __enter__(self) -> "RollWatch":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE):
            try:
                self.sample()
            except Exception as err:  # noqa: BLE001 - an API hiccup costs one sample, not the watch
                self.errors.append(f"{type(err).__name__}: {err}")

    def sample(self) -> None:
        spec = self.leases.read_namespaced_lease(self.lease, self.namespace).spec
        self.samples.see_holder(spec.holder_identity, _epoch(spec.acquire_time))
        now = time.time()
        for pod in self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items:
            name = pod.metadata.name
            self.samples.pods.add(name)
            deleted = pod.metadata.deletion_timestamp
            if deleted is None:
                continue
            grace = pod.metadata.deletion_grace_period_seconds or 0
            self.samples.see_terminating(name, min(now, deleted.timestamp() - grace))
            if name == spec.holder_identity and name not in self._following:
                self._following.add(name)
                threading.Thread(target=self._follow, args=(name,), daemon=True).start()

    def _follow(self, pod: str) -> None:
        """The terminating holder's log to its end: what its shutdown did, and when (best effort)."""
        lines = self.samples.logs.setdefault(pod, [])
        try:
            stream = self.core.read_namespaced_pod_log(pod, self.namespace, container="operator", follow=True,
                                                       since_seconds=60, _preload_content=False)
            for raw in stream.stream():
                lines.extend(raw.decode(errors="replace").splitlines())
        except Exception as err:  # noqa: BLE001 - the pod may be gone already
            lines.append(f"(log ended: {type(err).__name__}: {err})")

    def wait(self, check: Callable[[RollSamples], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check(self.samples):
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up after {timeout:g}s waiting for {what}: {self.samples.holders}, "
                                     f"terminating {sorted(self.samples.terminating)}; errors {self.errors[-3:]}")
            time.sleep(SAMPLE)
