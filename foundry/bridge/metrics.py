"""Prometheus metrics of the bridge, on a registry of its own (several apps can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from foundry.bridge.mapping import KNOWN_GITHUB_EVENTS, KNOWN_LINEAR_EVENTS

# Latency buckets around the targets: most deliveries answer in a few ms, the
# storm target is 150 ms; beyond a few seconds the sender has given up anyway.
_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
_KNOWN_EVENTS = {"linear": KNOWN_LINEAR_EVENTS, "github": KNOWN_GITHUB_EVENTS}


def event_label(provider: str, event: str | None) -> str:
    """The event as a metric label: names come from unauthenticated input, so unknown ones collapse."""
    if event and event in _KNOWN_EVENTS.get(provider, ()):
        return event
    return "other" if event else "none"


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(
            "foundry_bridge_deliveries",
            "Webhook deliveries answered, by provider, event and outcome.",
            ["provider", "event", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "foundry_bridge_delivery_seconds",
            "Time from receiving a delivery to answering it.",
            ["provider"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "foundry_bridge_in_flight", "Deliveries being processed right now.", registry=self.registry
        )

    def observe(self, provider: str, event: str | None, outcome: str, seconds: float) -> None:
        self.deliveries.labels(provider, event_label(provider, event), outcome).inc()
        self.latency.labels(provider).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
