"""One JSON line per delivery, so a log pipeline can count and trace deliveries without parsing prose."""

from __future__ import annotations

import logging
import sys
from typing import Any

from foundry.jsonlog import JsonFormatter

LOGGER_NAME = "foundry.bridge"


def configure(level: str = "INFO") -> logging.Logger:
    """JSON lines on stderr for the bridge's logger (called by the CLI, not on import)."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logger


def delivery_fields(
    provider: str,
    event: str | None,
    delivery_id: str | None,
    outcome: str,
    http_status: int,
    run: str | None,
    latency_seconds: float,
    reason: str | None,
    detail: str | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "provider": provider,
        "event": (event or "")[:100] or None,
        "delivery_id": (delivery_id or "")[:200] or None,
        "outcome": outcome,
        "http_status": http_status,
        "run": run,
        "latency_ms": round(latency_seconds * 1000, 2),
    }
    if reason:
        fields["reason"] = reason[:300]
    if detail:
        fields["detail"] = detail[:300]
    return fields
