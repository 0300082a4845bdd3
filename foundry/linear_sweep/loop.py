"""The sweep's timer in the bridge process: a thread that runs a round every period.

A thread of its own, not the bridge's worker pool: a round's Linear and
database calls must never take a slot a webhook is waiting for. The first
round runs at start, so a bridge coming back from an outage catches up at
once. Every replica runs the loop; the lease in the database lets one of them
sweep per round (the others count "skipped").
"""

from __future__ import annotations

import logging
import os
import random
import socket
import uuid
from typing import Any

from foundry.domain.triggers import TriggerRule
from foundry.linear_sweep.metrics import SweepMetrics
from foundry.linear_sweep.sweeper import Round, Sweeper, SweepSettings
from foundry.periodic import Periodic

log = logging.getLogger("foundry.bridge.sweep")  # the bridge process logs it with its own lines

MAX_WAIT = 3600.0  # never sleep longer than this, whatever a rate-limit answer says
JITTER = 0.1  # ±10 % per period, so replicas started together drift apart


def sweep_settings(config: object | None) -> SweepSettings | None:
    """The sweep's settings from a loaded config's `linear` section; None when `sweep_seconds` is 0."""
    linear = getattr(config, "linear", None) if config is not None else None
    if linear is None:
        return SweepSettings()
    interval = getattr(linear, "sweep_seconds", 60)
    if not interval:
        return None
    return SweepSettings(interval=float(interval), overlap=float(getattr(linear, "sweep_overlap_seconds", 30)),
                         lookback=float(getattr(linear, "sweep_lookback_seconds", 24 * 3600)),
                         team=getattr(linear, "team", None))


def replica_id() -> str:
    """Who holds the lease: the pod (host) name and the process, unique per start."""
    return f"{socket.gethostname()[:200]}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class SweepLoop:
    """The sweep's own thread (foundry.periodic): a round at start, then one a period (jittered),
    longer when Linear asked to wait."""

    def __init__(self, sweeper: Sweeper, interval: float) -> None:
        self.sweeper = sweeper
        self.interval = interval
        self._thread = Periodic("linear-sweep", sweeper.run_once, self._delay, log)

    def _delay(self, last: Round | None) -> float:
        delay = self.interval * (1 + random.uniform(-JITTER, JITTER))
        if last is not None and last.wait:
            delay = max(delay, min(last.wait, MAX_WAIT))
        return delay

    def start(self) -> "SweepLoop":
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        close = getattr(self.sweeper.linear, "close", None)
        if self._thread.stop(timeout) and close is not None:
            close()


def start_sweep(settings: Any, backend: Any, registry: Any) -> SweepLoop | None:
    """The bridge's sweep loop, started; None (and a log line saying why) when it is off.

    `settings` is the bridge's Settings (its Linear key and URL, trigger and sweep
    settings), `backend` its RealBackend, `registry` the bridge's metrics registry.
    """
    sweep: SweepSettings | None = settings.sweep
    if sweep is None:
        log.info("the Linear sweep is off (linear.sweep_seconds is 0)")
        return None
    if not settings.linear_api_key:
        log.warning("the Linear sweep is off: FOUNDRY_LINEAR_API_KEY is not set, so a webhook Linear gave up on "
                    "is never acted on")
        return None
    from foundry.connectors.linear import LinearClient
    from foundry.connectors.retry import RetryPolicy

    # Rate limits are not slept out inside the client: the round ends and the loop waits.
    client = LinearClient(settings.linear_api_key, url=settings.linear_url, timeout=10.0,
                          retry=RetryPolicy(max_attempts=3, max_rate_limit_wait=0.0))
    rule: TriggerRule = settings.trigger
    sweeper = Sweeper(client, backend, backend.engine, rule, sweep, SweepMetrics(registry), holder=replica_id())
    log.info("Linear sweep every %.0f s", sweep.interval)
    return SweepLoop(sweeper, sweep.interval).start()
