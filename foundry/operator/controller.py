"""The operator's run controller: watch events in, one work queue, N workers out.

The watches only watch: foundry.operator.watch_runs (a plain list and watch on a thread) and
kopf's watch_approvals/watch_jobs hand every event here and write nothing themselves. This
module keeps, per run, the little the queue's decisions need (foundry.operator.runview.Seen),
and one WorkQueue (foundry.operator.queue) holds what is due when: events make a run due now, a
finished reconcile makes it due at its next wake (reconcile/timing.next_wake),
an error holds it back until its retry time. `operator.workers` workers drain
the queue, on deps.pool's threads, and only while `deps.leadership.leading()`:
a standby keeps its watches and this cache warm and does nothing else, and on
becoming leader it makes every active run it knows due at once (the takeover,
without a cold list).

Foundry manages its finalizer itself: added before the first reconcile of an
active run, finalize_run and removal once the run is being deleted. The name
is the one kopf used to manage, so runs made by an earlier operator keep it.

The pause switch (the `foundry.dev/paused=true` label, or the operator-wide
flag) makes a worker write a Paused condition instead of reconciling; taking
the label off is an event like any other, so the run resumes at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import Gauge, Histogram
from urllib3.exceptions import HTTPError as Urllib3Error

from foundry.operator import runview
from foundry.operator.errors import CannotReconcile, RetryLater, retry_wait
from foundry.operator.kubeio import GROUP, MERGE_PATCH, RUNS, VERSION, Conflict, get_run, patch_run_status
from foundry.operator.leadership import NotLeading
from foundry.operator.queue import WorkQueue, backoff
from foundry.operator.runview import Seen
from foundry.operator.sharding import Shard

if TYPE_CHECKING:
    from foundry.operator.deps import Deps

log = logging.getLogger(__name__)

Key = tuple[str, str]

# Seconds between looks at leadership while leading (to notice a loss and re-arm the takeover).
LEADERSHIP_POLL = 0.5
# The longest a failing run waits between tries (a longer Retry-After still wins).
MAX_RETRY = 30.0
MAX_ERROR_BACKOFF = 60.0


class QueueMetrics:
    def __init__(self, registry: Any) -> None:
        self.depth = Gauge("foundry_operator_queue_depth", "Runs in the work queue: due now or at a later wake.",
                           registry=registry)
        self.lag = Histogram(
            "foundry_operator_resync_lag_seconds", "How late a worker picked a run up after it became due "
            "(its next wake, a retry, or an event).",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=registry)
        self.cached = Gauge("foundry_operator_runs_cached", "FoundryRuns of this operator's shard in its "
                            "watch cache (a standby's too).", registry=registry)


def _metrics_of(deps: "Deps") -> QueueMetrics:
    """The queue's metrics in the operator's registry, made once per Deps (a test may start an
    operator twice on one Deps, and a registry refuses a name twice)."""
    existing = getattr(deps.metrics, "queue", None)
    if existing is None:
        existing = QueueMetrics(deps.metrics.registry)
        deps.metrics.queue = existing
    return existing


# The controller of each running operator, by its Deps (tests run several operators in one process).
_RUNNING: dict[int, "RunController"] = {}


def controller_for(deps: "Deps") -> "RunController | None":
    """The controller that drives runs with `deps`, while its operator runs."""
    return _RUNNING.get(id(deps))


class RunController:
    def __init__(self, deps: "Deps", *, workers: int | None = None, shard: Shard = Shard(),
                 paused_all: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.deps = deps
        self.workers = workers or deps.pool.workers
        self.shard = shard
        self.paused_all = paused_all
        self.clock = clock
        self.queue = WorkQueue()
        self.seen: dict[Key, Seen] = {}
        self.metrics = _metrics_of(deps)
        self._changed: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self.reconciles = 0  # finished reconciles (tests and the benchmark read it)
        self.takeovers: list[int] = []  # runs made due at each start of leading

    # ------------------------------------------------------------ events in (on the event loop)

    def owns(self, name: str) -> bool:
        return self.shard.owns(name)

    def run_event(self, type_: str | None, body: Mapping[str, Any]) -> None:
        """A FoundryRun watch event (type None: a listing). A new run's object is kept for its
        first reconcile to start from (runview.keep_if_new)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace"), meta.get("name"))
        if not self.owns(key[1]):
            return
        if type_ == "DELETED":
            self.seen.pop(key, None)
            self.queue.forget(key)
            self.deps.metrics.observe_phase(key[0], key[1], None)
            self._refresh_gauges()
            return
        before = self.seen.get(key)
        now = runview.seen(body, before.settled_rv if before else -1)
        runview.keep_if_new(now, body)
        self.seen[key] = now
        if runview.worth_reconciling(before, now, working=self.queue.is_working(key), paused_all=self.paused_all):
            self.add(key, why=f"{type_ or 'listed'} event")
        self._refresh_gauges()

    def from_watch(self, loop: asyncio.AbstractEventLoop) -> tuple[Callable[..., None], Callable[..., None]]:
        """(deliver, forget) for a watch on another thread (foundry.operator.watch_runs): each hands
        its call to the event loop, in order, where every other change to the cache is made."""

        def deliver(type_: str | None, obj: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(self.run_event, type_, obj)

        def forget(namespace: str | None, listed: set[Key]) -> None:
            loop.call_soon_threadsafe(self._forget_unlisted, namespace, listed)

        return deliver, forget

    def _forget_unlisted(self, namespace: str | None, listed: set[Key]) -> None:
        """A fresh listing lacks these cached runs: they were deleted while the watch was away."""
        for key in [k for k in self.seen if (namespace is None or k[0] == namespace) and k not in listed]:
            self.run_event("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})

    def nudge(self, namespace: str, name: str, why: str) -> None:
        """Something about this run changed elsewhere (an approval, a finished Job): reconcile it now."""
        if self.owns(name):
            self.add((namespace, name), why=why)

    def add(self, key: Key, *, why: str = "", at: float | None = None) -> None:
        self.queue.add(key, self.clock() if at is None else at)
        log.debug("queued %s/%s (%s)", key[0], key[1], why)
        if self._changed is not None:
            self._changed.set()

    def take_over(self) -> int:
        """Make every active (or deleting) run of the cache due now; returns how many."""
        keys = [k for k, s in self.seen.items() if s.active or s.deleting]
        now = self.clock()
        for key in keys:
            self.queue.add(key, now)
        if self._changed is not None:
            self._changed.set()
        return len(keys)

    # ------------------------------------------------------------ running

    async def start(self) -> None:
        _RUNNING[id(self.deps)] = self
        self._changed = asyncio.Event()
        self._tasks = [asyncio.create_task(self._leadership(), name="foundry-leadership")]
        self._tasks += [asyncio.create_task(self._worker(i), name=f"foundry-worker-{i}")
                        for i in range(self.workers)]

    async def stop(self) -> None:
        self._stopping = True
        if _RUNNING.get(id(self.deps)) is self:
            del _RUNNING[id(self.deps)]
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _leadership(self) -> None:
        leadership = self.deps.leadership
        while True:
            await leadership.wait_leading()
            count = self.take_over()
            self.takeovers.append(count)
            log.info("leading%s: %d known run(s) due now", f" ({self.shard.label})" if self.shard.label else "",
                     count)
            while leadership.leading():
                await asyncio.sleep(LEADERSHIP_POLL)
            log.warning("no longer leading: reconciling stops")

    async def _take(self) -> Key:
        assert self._changed is not None
        while True:
            await self.deps.leadership.wait_leading()
            now = self.clock()
            due = self.queue.next_due()
            key = self.queue.pop(now) if due is not None and due <= now else None
            if key is not None:
                self.metrics.lag.observe(max(0.0, now - due))
                return key
            self._changed.clear()
            timeout = None if due is None else max(0.0, due - now)
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _worker(self, number: int) -> None:
        while True:
            key = await self._take()
            try:
                next_in = await self.deps.pool.run(self.process, key)
            except asyncio.CancelledError:
                self.queue.done(key, self.clock())
                raise
            except NotLeading:
                self.queue.done(key, self.clock())  # the next leader (maybe this process again) picks it up
                continue
            except RetryLater as err:
                failures = self.queue.failures(key) + 1
                step = min(err.delay * 2 ** (failures - 1), max(err.delay, MAX_RETRY))
                wait = retry_wait(step, err)
                self.queue.failed(key, self.clock() + wait)
                log.info("%s/%s: retrying in %.0fs: %s", key[0], key[1], wait, err)
                continue
            except CannotReconcile as err:
                # Already recorded on the run (it ended Blocked); a retry could not change it.
                log.warning("%s/%s cannot be reconciled: %s", key[0], key[1], err)
                self.queue.done(key, None)
                continue
            except Exception as err:  # noqa: BLE001 - a bug in one run must not stop the worker
                failures = self.queue.failures(key) + 1
                wait = backoff(failures, cap=MAX_ERROR_BACKOFF)
                self.queue.failed(key, self.clock() + wait)
                log.exception("%s/%s: reconcile failed (retry in %.0fs): %s", key[0], key[1], wait, err)
                continue
            else:
                self.queue.done(key, None if next_in is None else self.clock() + next_in)
            finally:
                self._poke()  # a finished key may be due again sooner than any waiter thinks
                self._refresh_gauges()

    def idle(self, namespace: str, name: str, *, seen_rv: str | None = None) -> bool:
        """Nothing is due now or in flight for this run (and, with `seen_rv`, the watch has
        brought at least that version of it): what tests wait for instead of sleeping."""
        key = (namespace, name)
        known = self.seen.get(key)
        if seen_rv is not None and (known is None or runview.rv_number(known.rv) < runview.rv_number(seen_rv)):
            return False
        due = self.queue.due_at(key)
        return not self.queue.is_working(key) and (due is None or due > self.clock())

    def _poke(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _refresh_gauges(self) -> None:
        self.metrics.depth.set(self.queue.waiting())
        self.metrics.cached.set(len(self.seen))

    # ------------------------------------------------------------ one key (on a pool thread)

    def process(self, key: Key) -> float | None:
        """Act on one run; returns seconds until its next wake (None: no wake, e.g. it ended or is gone)."""
        from foundry.operator.reconcile.loop import reconcile
        from foundry.operator.reconcile.timing import next_wake

        namespace, name = key
        deps = self.deps
        deps.leadership.fence()
        known = self.seen.get(key)
        if known is None:  # asked for by an approval or a Job before the watch listed the run
            body = get_run(deps.api, namespace, name)
            if body is None:
                return None
            known = runview.seen(body)
        paused = self.paused_all or known.paused_label
        if paused and (known.active or known.deleting):
            self._mark_paused(key, known)
            return None
        if known.deleting:
            self._finalize(key)
            return None
        if not known.active:
            return None
        if known.paused_condition:
            self._mark_resumed(key)
        # What to start from: the new run as the watch brought it, or the answer to the finalizer
        # write, else the reconcile reads the run.
        start: dict[str, Any] | None = runview.new_run_body(known)  # type: ignore[assignment]
        if not known.finalized:
            ok, start = self._add_finalizer(key)
            if not ok:
                return None
        # The run as the reconcile last read or wrote it schedules the next wake: anything
        # written after that is someone else's, comes as an event past settled_rv, and is
        # reconciled then (no read after the reconcile needed).
        phase, body = reconcile(deps, namespace, name, start)
        self.reconciles += 1
        if phase is None or phase.is_terminal or body is None:
            return None
        current = self.seen.get(key)
        if current is not None:
            current.settled_rv = runview.rv_number(body["metadata"].get("resourceVersion", ""))
        if body["metadata"].get("deletionTimestamp"):
            return 0.0
        return next_wake(body, deps.config, deps.clock())

    def _fresh(self, key: Key) -> dict[str, Any] | None:
        return get_run(self.deps.api, key[0], key[1])

    def _add_finalizer(self, key: Key) -> tuple[bool, dict[str, Any] | None]:
        """Put Foundry's finalizer on the run before anything is done for it (False: the run is gone
        or is being deleted, and nothing more is to be done now), with the run as last read or
        written (the reconcile starts from it).

        A run the watch last showed with no finalizer at all (one made by hand: the bridge makes
        runs with it) gets the list
        [ours] on that event's resourceVersion, without a GET first: if anything changed
        since, the write is a 409 and the run is read, as for any other."""
        known = self.seen.get(key)
        if known is not None and known.no_finalizers and known.rv and not known.deleting:
            self.deps.leadership.fence()
            seen = {"metadata": {"namespace": key[0], "name": key[1], "resourceVersion": known.rv}}
            try:
                return True, self._patch_meta(seen, {"finalizers": [runview.FINALIZER]})
            except Conflict:
                pass
        for _ in range(3):
            body = self._fresh(key)
            if body is None:
                return False, None
            meta = body["metadata"]
            if meta.get("deletionTimestamp"):
                return False, None
            finalizers = list(meta.get("finalizers") or [])
            if runview.FINALIZER in finalizers:
                return True, body
            self.deps.leadership.fence()
            try:
                return True, self._patch_meta(body, {"finalizers": [*finalizers, runview.FINALIZER]})
            except Conflict:
                continue
        raise RetryLater(f"FoundryRun {key[0]}/{key[1]} kept changing while its finalizer was added", delay=1.0)

    def _finalize(self, key: Key) -> None:
        from foundry.operator.reconcile.finalize import finalize_run

        for _ in range(3):
            body = self._fresh(key)
            if body is None:
                return
            meta = body["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if runview.FINALIZER not in finalizers:
                return
            self.deps.leadership.fence()
            finalize_run(self.deps, body)
            self.deps.leadership.fence()
            try:
                self._patch_meta(body, {"finalizers": [f for f in finalizers if f != runview.FINALIZER]})
                return
            except Conflict:
                continue
        raise RetryLater(f"FoundryRun {key[0]}/{key[1]} kept changing while its finalizer was removed", delay=1.0)

    def _mark_paused(self, key: Key, known: Seen) -> None:
        if known.paused_condition:
            return
        if known.paused_label:
            reason, message = runview.REASON_LABEL, (f"the {runview.PAUSED_LABEL}=true label is set: the operator "
                                                     "leaves this run alone until it is removed")
        else:
            reason, message = runview.REASON_OPERATOR, ("the operator runs paused: it leaves every run alone "
                                                        "until it is started without the pause")
        self._write_paused(key, True, reason, message)

    def _mark_resumed(self, key: Key) -> None:
        self._write_paused(key, False, runview.REASON_RESUMED, "the pause was lifted; the operator acts again")

    def _write_paused(self, key: Key, paused: bool, reason: str, message: str) -> None:
        from foundry.operator.status import Condition, merge_conditions

        for _ in range(3):
            body = self._fresh(key)
            if body is None:
                return
            status = body.get("status") or {}
            if runview.paused_condition(status) == paused and any(
                    c.get("type") == runview.PAUSED for c in status.get("conditions") or []):
                return
            conditions = merge_conditions(status.get("conditions"), [Condition(runview.PAUSED, paused, reason,
                                                                               message)],
                                          datetime.now(timezone.utc))
            self.deps.leadership.fence()
            try:
                patch_run_status(self.deps.api, body, {"conditions": conditions})
                log.info("%s/%s: %s (%s)", key[0], key[1], "paused" if paused else "resumed", reason)
                return
            except Conflict:
                continue
        raise RetryLater(f"FoundryRun {key[0]}/{key[1]} kept changing while its Paused condition was written",
                         delay=1.0)

    def _patch_meta(self, body: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any] | None:
        """A merge patch of the run's metadata, only if the run is unchanged since `body` was read;
        returns the run as written (None: it was gone)."""
        m = body["metadata"]
        patch = {"metadata": {**meta, "resourceVersion": m["resourceVersion"]}}
        try:
            return client.CustomObjectsApi(self.deps.api).patch_namespaced_custom_object(
                GROUP, VERSION, m["namespace"], RUNS, m["name"], patch, _content_type=MERGE_PATCH)
        except ApiException as err:
            if err.status == 409:
                raise Conflict(f"FoundryRun {m['namespace']}/{m['name']} changed since read") from err
            if err.status == 404:
                return None
            if err.status in (429, 500, 502, 503, 504) or not err.status:
                raise RetryLater(f"patching FoundryRun {m['namespace']}/{m['name']}: HTTP {err.status}") from err
            raise
        except Urllib3Error as err:
            raise RetryLater(f"patching FoundryRun {m['namespace']}/{m['name']}: {err}") from err
