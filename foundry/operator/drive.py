"""Calling the reconciler from event-style triggers (Job and approval events),
which kopf does not retry: retry here, with backoff, so an outage during the
event does not strand the run until the next resync."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from foundry.operator.errors import CannotReconcile, RetryLater, retry_wait

if TYPE_CHECKING:
    from foundry.operator.deps import Deps

log = logging.getLogger(__name__)

BACKOFFS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


async def reconcile_soon(deps: "Deps", namespace: str, name: str, why: str) -> None:
    from foundry.operator.reconcile.loop import reconcile_run

    for delay in (*BACKOFFS, None):
        try:
            await deps.pool.run(reconcile_run, deps, namespace, name)
            return
        except RetryLater as err:
            if delay is None:
                log.warning("giving up on %s/%s after %s (%s); the resync will retry", namespace, name, why, err)
                return
            wait = retry_wait(delay, err)
            log.info("retrying %s/%s in %.0fs after %s: %s", namespace, name, wait, why, err)
            await asyncio.sleep(wait)
        except CannotReconcile as err:
            # Already recorded on the run (it ended Blocked); nothing a retry could change.
            log.warning("%s/%s cannot be reconciled (%s): %s", namespace, name, why, err)
            return
