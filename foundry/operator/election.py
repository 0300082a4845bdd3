"""The Lease elector: this process leads while it holds the operator's Lease.

A thread (not the kopf event loop, which a burst of work may keep busy) runs
client-go's loop over foundry.operator.lease_rules: read the Lease, decide,
write conditionally, wait a retry period. It implements the Leadership
protocol (foundry.operator.leadership): `leading()` is computed from the clock
on every call, so it turns false the moment the renew deadline passes without
a successful renewal, even if the thread is stuck in a request; `fence()`
raises NotLeading from then on.

`stop()` stops acting first and then releases the Lease (no holder), so a
standby takes over at its next look instead of waiting the lease out.

The partition tests cut the elector off at the `before-lease-request`
checkpoint (foundry.operator.checkpoints), in foundry.operator.leaseio.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from foundry.operator.leadership import NotLeading
from foundry.operator.lease_rules import (Decision, Move, Observation, decide, next_look, next_record, released,
                                          still_leading)
from foundry.operator.leaseio import LeaseClient, LeaseTaken, LeaseUnavailable

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def identity() -> str:
    """Who this process is in the Lease: the pod's name (the chart sets POD_NAME from the
    downward API), else host and a random suffix, so two processes on one host differ."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def own_namespace(setting: str | None, watched: list[str]) -> str:
    """Where the Lease lives: the setting, else the operator's own namespace (POD_NAMESPACE,
    the ServiceAccount's), else the one namespace it watches."""
    if setting:
        return setting
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    if len(watched) == 1:
        return watched[0]
    raise ValueError("operator.leader_election.namespace: cannot tell which namespace the Lease belongs in "
                     "(no POD_NAMESPACE, no ServiceAccount, and not exactly one watched namespace); set it")


class ElectionMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.leader = Gauge("foundry_operator_leader", "1 while this operator process holds the Lease and may "
                            "act, 0 on a standby.", registry=registry)
        self.transitions = Counter("foundry_operator_leader_transitions", "This process started (to=leading) or "
                                   "stopped (to=standby) leading.", ["to"], registry=registry)
        for to in ("leading", "standby"):
            self.transitions.labels(to=to)


def _wall() -> datetime:
    return datetime.now(timezone.utc)


class Elector:
    def __init__(self, leases: LeaseClient, me: str, *, lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0, metrics: ElectionMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], datetime] = _wall) -> None:
        if not lease_duration > renew_deadline > retry_period:
            raise ValueError("need lease duration > renew deadline > retry period")
        self.leases = leases
        self.me = me
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.metrics = metrics or ElectionMetrics(None)
        self._clock = clock
        self._wall = wall
        self._observed = Observation(None, clock())
        self._read_once = False
        self._last_read_ok: float | None = None
        self._renewed_at: float | None = None  # monotonic send time of the last successful acquire/renew
        self._acting = False  # what the metrics and Events last said
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # ------------------------------------------------------------ the Leadership protocol

    def leading(self) -> bool:
        return still_leading(self._renewed_at, self._clock(), self.renew_deadline)

    async def wait_leading(self) -> None:
        if self.leading():
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters.append((loop, future))
        try:
            if not self.leading():  # it may have turned between the check and the registration
                await future
        finally:
            with self._lock:
                self._waiters = [(lp, f) for lp, f in self._waiters if f is not future]

    def fence(self) -> None:
        if not self.leading():
            raise NotLeading(f"{self.me} does not hold Lease {self.leases.namespace}/{self.leases.name}")

    # ------------------------------------------------------------ what readiness and `runs show` say

    def holder(self) -> str | None:
        """The holder this process last saw in the Lease."""
        record = self._observed.record
        return record.holder if record is not None else None

    def healthy(self) -> bool:
        """Able to lead or take over: the Lease was read within the renew deadline."""
        return self._last_read_ok is not None and self._clock() - self._last_read_ok < self.renew_deadline

    # ------------------------------------------------------------ the loop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="foundry-lease", daemon=True)
        self._thread.start()

    def stop(self, *, release: bool = True, timeout: float = 10.0) -> None:
        """Stop the loop; stop acting; then, if the Lease still names this process, release it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._renewed_at = None  # from here on fence() refuses, before anyone else can take over
        self._note_standby("shutting down")
        if release:
            self._release()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self.round()
            except Exception:  # noqa: BLE001 - a bug in one round must not end the elector
                log.exception("leader election round failed")
                delay = self.retry_period
            self._stop.wait(delay)

    def round(self) -> float:
        """One look at the Lease, and a write if the rules say so; seconds until the next one."""
        now = self._clock()
        try:
            record, version = self.leases.read()
        except LeaseUnavailable as err:
            self._missed(str(err))
            return self.retry_period
        now = self._clock()
        self._last_read_ok = now
        self._observed = self._observed.after_read(record, now)
        self._read_once = True
        decision: Decision = decide(self._observed, self.me, now)
        if decision.move is Move.WAIT:
            if self._renewed_at is not None:
                self._renewed_at = None
                self._note_standby(f"the Lease is held by {record.holder if record else None}")
            return next_look(decision, self._clock(), self.retry_period)
        new = next_record(record, decision.move, self.me, self.lease_duration, self._wall())
        sent = self._clock()
        try:
            if decision.move is Move.CREATE:
                self.leases.create(new)
            else:
                assert version is not None
                self.leases.replace(new, version)
        except LeaseTaken as err:
            # Someone else wrote the record since it was read. For a leader that can
            # only be a candidate that judged its lease over: stop acting at once.
            log.info("%s: %s", self.me, err)
            if self._renewed_at is not None:
                self._renewed_at = None
                self._note_standby("another candidate wrote the Lease")
            return self.retry_period
        except LeaseUnavailable as err:
            self._missed(str(err))
            return self.retry_period
        # My own write: the clock of a standby that reads it starts later than `sent`.
        self._observed = Observation(new, sent)
        self._renewed_at = sent
        self._note_leading(decision.move)
        return self.retry_period

    def _missed(self, why: str) -> None:
        """A look or a write that failed: once the renew deadline is past, this process is a standby."""
        if self._acting and not self.leading():
            self._renewed_at = None
            self._note_standby(f"no renewal for {self.renew_deadline:g}s ({why})")
        elif self._acting:
            log.warning("%s: renewing Lease %s/%s failed (%s); leading for %.1fs more at most", self.me,
                        self.leases.namespace, self.leases.name, why,
                        self.renew_deadline - (self._clock() - (self._renewed_at or 0)))

    def _note_leading(self, move: Move) -> None:
        if self._acting:
            return
        self._acting = True
        self.metrics.leader.set(1)
        self.metrics.transitions.labels(to="leading").inc()
        how = {Move.CREATE: "created", Move.ACQUIRE: "acquired", Move.RENEW: "renewed"}[move]
        log.info("%s became leader (%s Lease %s/%s)", self.me, how, self.leases.namespace, self.leases.name)
        self._post_event(f"{self.me} became leader")
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    def _note_standby(self, why: str) -> None:
        if not self._acting:
            return
        self._acting = False
        self.metrics.leader.set(0)
        self.metrics.transitions.labels(to="standby").inc()
        log.warning("%s stopped leading: %s", self.me, why)
        self._post_event(f"{self.me} stopped leading: {why}")

    def _post_event(self, message: str) -> None:
        # Off the loop: an Event to an API server that is not answering must not delay a renewal.
        threading.Thread(target=self.leases.event, args=("LeaderElection", message), daemon=True,
                         name="foundry-lease-event").start()

    def _release(self) -> None:
        try:
            record, version = self.leases.read()
            if record is None or record.holder != self.me or version is None:
                return
            self.leases.replace(released(record, self._wall()), version)
        except (LeaseTaken, LeaseUnavailable) as err:
            # Not fatal: the standby takes over once the lease runs out instead.
            log.warning("%s could not release Lease %s/%s: %s", self.me, self.leases.namespace, self.leases.name,
                        err)
            return
        log.info("%s released Lease %s/%s", self.me, self.leases.namespace, self.leases.name)
        self.leases.event("LeaderElection", f"{self.me} released the Lease")


def _resolve(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


def elector_for(api: Any, settings: Any, watched: list[str], *, metrics: ElectionMetrics | None = None,
                me: str | None = None) -> Elector:
    """An Elector for operator.leader_election (foundry.config.LeaderElection), on an ApiClient
    of its own that shares `api`'s configuration (its server and credentials)."""
    from kubernetes import client

    own = client.ApiClient(api.configuration)
    retry = settings.retry_period_seconds
    leases = LeaseClient(own, own_namespace(settings.namespace, watched), settings.lease_name,
                         timeout=(min(retry, 5.0), min(2 * retry, settings.renew_deadline_seconds / 2)))
    return Elector(leases, me or identity(), lease_duration=settings.lease_duration_seconds,
                   renew_deadline=settings.renew_deadline_seconds, retry_period=retry, metrics=metrics)


def _metrics_of(deps: Any) -> ElectionMetrics:
    """The election's metrics in the operator's registry, made once per Deps (a test may start
    an operator twice on one Deps, and a registry refuses a name twice)."""
    existing = getattr(deps.metrics, "election", None)
    if existing is None:
        existing = ElectionMetrics(deps.metrics.registry)
        deps.metrics.election = existing
    return existing


def start(memo: Any) -> None:
    """At the operator's startup: with operator.leader_election.enabled (and not `standalone` in
    the memo), hold the Lease before acting: the elector becomes `deps.leadership` and its thread
    starts. Also /readyz on `readiness_port` (memo or FOUNDRY_READINESS_PORT), if given."""
    from foundry.operator.readiness import ReadinessServer, verdict

    deps = memo.deps
    settings = getattr(getattr(deps.config, "operator", None), "leader_election", None)
    metrics = _metrics_of(deps)
    elector: Elector | None = None
    if settings is not None and settings.enabled and not memo.get("standalone"):
        elector = elector_for(deps.api, settings, list(memo.get("namespaces") or []), metrics=metrics)
        deps.leadership = elector
        log.info("leader election on: %s waits for Lease %s/%s", elector.me, elector.leases.namespace,
                 elector.leases.name)
        elector.start()
    else:
        metrics.leader.set(1)  # alone: this process is the one that acts
    memo.elector = elector
    port = memo.get("readiness_port") or os.environ.get("FOUNDRY_READINESS_PORT")
    if port:
        memo.readiness = ReadinessServer(int(port), lambda: verdict(elector)).start()


def stop(memo: Any) -> None:
    """At cleanup, after the work has stopped and before the clients close: release the Lease."""
    elector = memo.get("elector")
    if elector is not None:
        elector.stop(release=True)
    server = memo.get("readiness")
    if server is not None:
        server.stop()
