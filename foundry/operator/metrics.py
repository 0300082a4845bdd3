"""Prometheus metrics of the operator.

Each operator instance owns its own registry (tests run several operators in
one process, and the default global registry would refuse the second).
"""

from __future__ import annotations

import threading
from collections import Counter as _Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from foundry.domain.phases import Phase

# The `kind` of foundry_reconcile_errors_total: `retry`, an outside dependency
# (Linear, GitHub, the database, the API server) failed and the reconcile will
# be retried; `permanent`, no retry can fix it (the run ended Blocked, e.g. its
# repository was removed from the configuration); `unexpected`, anything else (a bug).
ERROR_KINDS = ("retry", "permanent", "unexpected")


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs_by_phase = Gauge(
            "foundry_runs", "FoundryRuns seen by this operator, by phase.", ["phase"], registry=self.registry)
        self.transitions = Counter(
            "foundry_run_transitions", "Phase transitions recorded.", ["from_phase", "to_phase"],
            registry=self.registry)
        self.reconcile_errors = Counter(
            "foundry_reconcile_errors", "Reconciles that ended in an error, by kind.", ["kind"],
            registry=self.registry)
        self.reconcile_seconds = Histogram(
            "foundry_reconcile_seconds", "Wall time of one reconcile of one run.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)
        self._lock = threading.Lock()
        self._phase_of: dict[tuple[str, str], str] = {}
        self._tally: _Tally[str] = _Tally()  # phase -> how many runs are in it (of _phase_of)
        for phase in Phase:  # export zeros so dashboards see every phase from the start
            self.runs_by_phase.labels(phase=phase.value).set(0)
        # Likewise every error kind: a series that first appears at 1 has no
        # earlier sample, so rate() over it stays 0 and the alert misses that error.
        for kind in ERROR_KINDS:
            self.reconcile_errors.labels(kind=kind)

    def observe_phase(self, namespace: str, name: str, phase: str | None) -> None:
        """Remember the phase of one run (None: the run is gone) and refresh the gauge.

        Called on every step of every reconcile: the tally is kept as it goes, so a call
        costs the same with ten thousand runs as with ten (a recount each time did not)."""
        with self._lock:
            key = (namespace, name)
            before = self._phase_of.pop(key, None) if phase is None else self._phase_of.get(key)
            if phase is not None:
                self._phase_of[key] = phase
            if before == phase:
                return
            for p, step in ((before, -1), (phase, 1)):
                if p is not None:
                    self._tally[p] += step
                    if not self._tally[p]:
                        del self._tally[p]
            changed = {p: self._tally.get(p, 0) for p in (before, phase) if p is not None}
            # Set under the lock: two calls may not publish their counts in the other order.
            for p, count in changed.items():
                self.runs_by_phase.labels(phase=p).set(count)

    def runs_in(self, phases: "tuple[str, ...]") -> list[tuple[str, str]]:
        """(namespace, name) of the runs this operator last saw in one of `phases`."""
        with self._lock:
            return [key for key, phase in self._phase_of.items() if phase in phases]

    def seen_namespaces(self) -> set[str]:
        """The namespaces of the runs this operator currently knows."""
        with self._lock:
            return {namespace for namespace, _ in self._phase_of}

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
