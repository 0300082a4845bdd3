"""One JSON line per delivery, so a log pipeline can count and trace deliveries without parsing prose."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER_NAME = "foundry.bridge"


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time, level, message and whatever was passed in `extra={"fields": ...}`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


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
