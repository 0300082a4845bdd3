"""Calling the reconciler from event-style triggers (Job and approval events),
which kopf does not retry: retry here, with backoff, so an outage during the
event does not strand the run until the next resync."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from foundry.operator.errors import RetryLater

if TYPE_CHECKING:
    from foundry.operator.deps import Deps

log = logging.getLogger(__name__)

BACKOFFS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


async def reconcile_soon(deps: "Deps", namespace: str, name: str, why: str) -> None:
    from foundry.operator.reconcile.loop import reconcile_run

    for delay in (*BACKOFFS, None):
        try:
            await asyncio.to_thread(reconcile_run, deps, namespace, name)
            return
        except RetryLater as err:
            if delay is None:
                log.warning("giving up on %s/%s after %s (%s); the resync will retry", namespace, name, why, err)
                return
            log.info("retrying %s/%s in %.0fs after %s: %s", namespace, name, delay, why, err)
            await asyncio.sleep(min(delay, err.delay) if err.delay else delay)
