"""kopf handlers for FoundryRun: thin, they only call the reconciler.

- create/resume/update: a new run, an operator restart, or an annotation bump
  (the bridge's `foundry.dev/pr-hint`) → reconcile now. kopf retries
  TemporaryError with backoff and keeps progress in annotations, so an outage
  delays a transition but never drops it.
- a daemon per active run re-reads the sources on a timer (lost webhooks,
  approval expiry, agent timeouts).
- delete: the finalizer cancels the agent and closes the DB row.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from foundry.domain.phases import ACTIVE_PHASE_NAMES
from foundry.operator.errors import CannotReconcile, RetryLater
from foundry.operator.kubeio import GROUP, RUNS, VERSION


def _deps(memo: Any):
    return memo.deps


def _is_active(status: dict[str, Any], **_: Any) -> bool:
    phase = (status or {}).get("phase")
    return not phase or phase in ACTIVE_PHASE_NAMES


def _call(memo: Any, namespace: str, name: str) -> None:
    from foundry.operator.reconcile.loop import reconcile_run

    try:
        reconcile_run(_deps(memo), namespace, name)
    except RetryLater as err:
        raise kopf.TemporaryError(str(err), delay=err.delay) from err
    except CannotReconcile as err:
        raise kopf.PermanentError(str(err)) from err


@kopf.on.resume(GROUP, VERSION, RUNS)
@kopf.on.create(GROUP, VERSION, RUNS)
@kopf.on.update(GROUP, VERSION, RUNS)
def reconcile(namespace: str, name: str, memo: Any, **_: Any) -> None:
    _call(memo, namespace, name)


@kopf.daemon(GROUP, VERSION, RUNS, when=_is_active, cancellation_timeout=5.0)
async def resync(stopped: Any, namespace: str, name: str, memo: Any, logger: Any, **_: Any) -> None:
    from foundry.operator.reconcile.loop import reconcile_run
    from foundry.operator.reconcile.timing import next_wake

    deps = _deps(memo)
    while not stopped:
        run = await asyncio.to_thread(_read, deps, namespace, name)
        if run is None:
            return
        await stopped.wait(next_wake(run, deps.config, deps.clock()))
        if stopped:
            return
        try:
            await asyncio.to_thread(reconcile_run, deps, namespace, name)
        except RetryLater as err:
            logger.info("resync of %s postponed: %s", name, err)
        except Exception as err:  # noqa: BLE001 - a daemon that dies stops resyncing this run
            deps.metrics.reconcile_errors.labels(kind="unexpected").inc()
            logger.exception("resync of %s failed: %s", name, err)


def _read(deps: Any, namespace: str, name: str) -> dict[str, Any] | None:
    from foundry.operator.kubeio import get_run

    try:
        return get_run(deps.api, namespace, name)
    except RetryLater:
        return {"metadata": {"name": name, "namespace": namespace}}


@kopf.on.delete(GROUP, VERSION, RUNS)
def finalize(body: Any, memo: Any, **_: Any) -> None:
    from foundry.operator.reconcile.finalize import finalize_run

    try:
        finalize_run(_deps(memo), dict(body))
    except RetryLater as err:
        raise kopf.TemporaryError(str(err), delay=err.delay) from err
