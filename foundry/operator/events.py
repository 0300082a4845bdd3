"""Kubernetes Events for a FoundryRun (what `kubectl describe fr` shows).

Events are a courtesy to humans: a failure to post one is logged and never
blocks a transition (the DB audit trail is the durable record).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from typing import Any

from kubernetes import client

from foundry.kube.runs import API_VERSION

log = logging.getLogger(__name__)

COMPONENT = "foundry-operator"
EVENTS_PATH = "/api/v1/namespaces/{namespace}/events"


# The API server's limit, in bytes (Go's len): a 1,024-character message with an arrow in it is refused.
MESSAGE_BYTES = 1024


def _clip(message: str) -> str:
    return message.encode("utf-8")[:MESSAGE_BYTES].decode("utf-8", "ignore")


def event_body(run: dict[str, Any], reason: str, message: str, type_: str, now: datetime) -> dict[str, Any]:
    """The core/v1 Event for `run`, as the API server takes it."""
    meta = run["metadata"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": run.get("apiVersion", API_VERSION), "kind": run.get("kind", "FoundryRun"),
                           "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid"),
                           "resourceVersion": meta.get("resourceVersion")},
        "reason": reason, "message": _clip(message), "type": type_,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT, "reportingInstance": COMPONENT,
        "firstTimestamp": now, "lastTimestamp": now, "eventTime": now,
        "action": "Reconcile", "count": 1,
    }


def post_event(api: client.ApiClient, run: dict[str, Any], reason: str, message: str,
               *, type_: str = "Normal") -> None:
    meta = run["metadata"]
    body = event_body(run, reason, message, type_, datetime.now(timezone.utc))
    try:
        # A plain request through the client (its auth, its fenced and bounded rest client), not
        # CoreV1Api.create_namespaced_event: that one validated its arguments, built the Event
        # models and parsed the answer back into them, two Events per intake at about a
        # millisecond of operator CPU each for an answer nobody reads.
        request = api.param_serialize("POST", EVENTS_PATH, path_params={"namespace": meta["namespace"]},
                                      header_params={"Accept": "application/json",
                                                     "Content-Type": "application/json"},
                                      body=body, auth_settings=["BearerToken"])
        response = api.call_api(*request)
        response.read()
        if not 200 <= response.status < 300:
            raise client.ApiException(status=response.status, reason=response.reason,
                                      body=response.data.decode("utf-8", "replace")[:500])
    except Exception as err:  # noqa: BLE001 - see the module docstring
        log.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], err)
