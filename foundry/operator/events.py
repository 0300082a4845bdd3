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


def post_event(api: client.ApiClient, run: dict[str, Any], reason: str, message: str,
               *, type_: str = "Normal") -> None:
    meta = run["metadata"]
    now = datetime.now(timezone.utc)
    body = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=f"{meta['name']}.{uuid.uuid4().hex[:16]}", namespace=meta["namespace"]),
        involved_object=client.V1ObjectReference(
            api_version=run.get("apiVersion", API_VERSION), kind=run.get("kind", "FoundryRun"),
            name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid"),
            resource_version=meta.get("resourceVersion")),
        reason=reason,
        message=message[:1024],
        type=type_,
        source=client.V1EventSource(component=COMPONENT),
        reporting_component=COMPONENT,
        reporting_instance=COMPONENT,
        first_timestamp=now,
        last_timestamp=now,
        event_time=now,
        action="Reconcile",
        count=1,
    )
    try:
        client.CoreV1Api(api).create_namespaced_event(meta["namespace"], body)
    except Exception as err:  # noqa: BLE001 - see the module docstring
        log.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], err)
