"""kopf handlers for FoundryRun: thin, they only call the reconciler.

- create/resume/update: a new run, an operator restart, or an annotation bump
  (the bridge's `foundry.dev/pr-hint`) → reconcile now. kopf retries
  TemporaryError with backoff and keeps progress in annotations, so an outage
  delays a transition but never drops it.
- a daemon per active run re-reads the sources on a timer (lost webhooks,
  approval expiry, agent timeouts).
- delete: the finalizer cancels the agent and closes the DB row.

Each runs its blocking work on deps.pool (foundry.operator.pool), sized by
`operator.workers`.
"""

from __future__ import annotations

import time
from typing import Any

import kopf

from foundry.domain.phases import ACTIVE_PHASE_NAMES
from foundry.operator.errors import CannotReconcile, RetryLater, retry_wait
from foundry.operator.kubeio import GROUP, RUNS, VERSION


def _deps(memo: Any):
    return memo.deps


def _is_active(status: dict[str, Any], **_: Any) -> bool:
    phase = (status or {}).get("phase")
    return not phase or phase in ACTIVE_PHASE_NAMES


async def _call(memo: Any, namespace: str, name: str) -> None:
    from foundry.operator.reconcile.loop import reconcile_run

    deps = _deps(memo)
    try:
        await deps.pool.run(reconcile_run, deps, namespace, name)
    except RetryLater as err:
        raise kopf.TemporaryError(str(err), delay=retry_wait(err.delay, err)) from err
    except CannotReconcile as err:
        raise kopf.PermanentError(str(err)) from err


@kopf.on.resume(GROUP, VERSION, RUNS)
@kopf.on.create(GROUP, VERSION, RUNS)
@kopf.on.update(GROUP, VERSION, RUNS)
async def reconcile(namespace: str, name: str, memo: Any, **_: Any) -> None:
    await _call(memo, namespace, name)


@kopf.daemon(GROUP, VERSION, RUNS, when=_is_active, cancellation_timeout=5.0)
async def resync(stopped: Any, namespace: str, name: str, memo: Any, logger: Any, body: Any,
                 **_: Any) -> None:
    from foundry.operator.reconcile.loop import reconcile_run
    from foundry.operator.reconcile.timing import next_wake

    deps = _deps(memo)
    not_before = 0.0  # a wait a service asked for (Retry-After) outlasts the resync period
    while not stopped:
        run = await deps.pool.run(_read, deps, namespace, name)
        if run is None:
            return
        wait = max(next_wake(run, deps.config, deps.clock()), not_before)
        await _sleep_unless_moved(stopped, body, {_phase(body), _phase(run)}, wait,
                                  float(deps.config.timeouts.resync_seconds))
        if stopped:
            return
        not_before = 0.0
        try:
            await deps.pool.run(reconcile_run, deps, namespace, name)
        except RetryLater as err:
            not_before = err.retry_after or 0.0
            logger.info("resync of %s postponed: %s", name, err)
        except CannotReconcile as err:
            logger.warning("resync of %s stopped: %s", name, err)
            return
        except Exception as err:  # noqa: BLE001 - a daemon that dies stops resyncing this run
            deps.metrics.reconcile_errors.labels(kind="unexpected").inc()
            logger.exception("resync of %s failed: %s", name, err)


def _phase(run: Any) -> str | None:
    return (run.get("status") or {}).get("phase")


async def _sleep_unless_moved(stopped: Any, body: Any, phases: set[str | None], seconds: float,
                              step: float) -> None:
    """Sleep `seconds`, but end early once the run is in none of `phases` (the one
    just read, and the one kopf's copy shows, which may lag behind by an event).

    A run idle for long (WaitingApproval sleeps until its expiry) is moved on
    by other paths (an approval event, a restart); once it is in a phase that
    is polled (AgentRunning waits on GitHub), the resync must poll it, not
    finish the long sleep first. kopf keeps a daemon's `body` up to date with
    each watch event, so looking costs no API call."""
    deadline = time.monotonic() + seconds
    while not stopped:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await stopped.wait(min(left, step))
        if _phase(body) not in phases:
            return


def _read(deps: Any, namespace: str, name: str) -> dict[str, Any] | None:
    from foundry.operator.kubeio import get_run

    try:
        return get_run(deps.api, namespace, name)
    except RetryLater:
        return {"metadata": {"name": name, "namespace": namespace}}


@kopf.on.delete(GROUP, VERSION, RUNS)
async def finalize(body: Any, memo: Any, **_: Any) -> None:
    from foundry.operator.reconcile.finalize import finalize_run

    deps = _deps(memo)
    try:
        await deps.pool.run(finalize_run, deps, dict(body))
    except RetryLater as err:
        raise kopf.TemporaryError(str(err), delay=retry_wait(err.delay, err)) from err
