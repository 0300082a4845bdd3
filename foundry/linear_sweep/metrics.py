"""The sweep's Prometheus metrics, on the registry of the process that runs it (the bridge's)."""

from __future__ import annotations

import threading
import time
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SweepMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._covered_until: float | None = None
        self._started = time.time()
        self.rounds = Counter(
            "foundry_linear_sweep_rounds",
            "Sweep rounds by outcome: swept, skipped (another replica holds the lease), "
            "rate_limited, unavailable (database or API server down), failed, lost_lease.",
            ["outcome"], registry=registry)
        self.commands = Counter(
            "foundry_linear_sweep_commands",
            "Commands the sweep fed, by command (intake, decision) and outcome (created, attached, applied, ignored, "
            "refused, bad_payload).",
            ["command", "outcome"], registry=registry)
        self.requests = Counter(
            "foundry_linear_sweep_requests", "GraphQL requests the sweep sent to Linear.", registry=registry)
        self.duration = Histogram(
            "foundry_linear_sweep_seconds", "How long a complete sweep round took.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=registry)
        lag = Gauge(
            "foundry_linear_sweep_lag_seconds",
            "Seconds since the start of the last complete sweep (by any replica): every Linear change older than "
            "this has been acted on. Grows past the sweep period only when sweeps fail.",
            registry=registry)
        lag.set_function(self.lag)

    def covered(self, until: datetime | None) -> None:
        with self._lock:
            self._covered_until = until.timestamp() if until is not None else None

    def lag(self) -> float:
        with self._lock:
            since = self._covered_until if self._covered_until is not None else self._started
        return max(0.0, time.time() - since)
