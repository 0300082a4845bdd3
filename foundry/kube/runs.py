"""FoundryRun objects: the manifest for a ticket snapshot, and create-or-attach.

build_run_manifest is pure; create_or_attach is the thin I/O step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Hashable

from kubernetes import client

from foundry.domain.naming import RUN_FINALIZER, label_value, run_name
from foundry.domain.triggers import TRIGGER_SOURCES, Trigger
from foundry.kube import attach
from foundry.kube.attach import AttachResult
from foundry.kube.crds import GROUP, VERSION

KIND = "FoundryRun"
PLURAL = "foundryruns"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_TRACKER = "foundry.dev/tracker"
LABEL_ISSUE_ID = "foundry.dev/issue-id"
LABEL_ISSUE_KEY = "foundry.dev/issue-key"
LABEL_ATTEMPT = "foundry.dev/attempt"

_ISSUE_KEY = re.compile(r"^[A-Z][A-Z0-9]*-[0-9]+$")


@dataclass(frozen=True)
class TicketSnapshot:
    """A ticket as the tracker described it; tracker + issue_id is its stable identity."""

    tracker: str
    issue_id: str
    issue_key: str
    title: str | None = None
    description: str | None = None
    url: str | None = None
    labels: tuple[str, ...] = ()
    state: str | None = None
    team_key: str | None = None
    updated_at: datetime | str | None = None
    priority: int | None = None


def rfc3339(value: datetime | str) -> str:
    """An RFC 3339 UTC timestamp; strings are passed through for the server to validate."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no timezone; pass an aware datetime (UTC)")
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def run_labels(tracker: str, issue_id: str, issue_key: str, attempt: int) -> dict[str, str]:
    """Labels that let `kubectl get fr -l ...` find runs by issue; values are label-safe."""
    return {
        LABEL_TRACKER: label_value(tracker),
        LABEL_ISSUE_ID: label_value(issue_id),
        LABEL_ISSUE_KEY: label_value(issue_key),
        LABEL_ATTEMPT: str(attempt),
    }


def _drop_empty(mapping: dict[str, Any]) -> dict[str, Any]:
    # Absent beats null: the schema types every field, and null is not a string.
    return {k: v for k, v in mapping.items() if v is not None and v != [] and v != {}}


def build_run_manifest(
    ticket: TicketSnapshot,
    attempt: int,
    trigger: Trigger | None = None,
    *,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The FoundryRun for `attempt` at `ticket`, named by run_name(tracker, issue_id, attempt).

    Raises ValueError (naming.InvalidNameInput for identity problems) for input
    the API server would refuse, so callers get the reason before a round trip.
    """
    name = run_name(ticket.tracker, ticket.issue_id, attempt)
    if not isinstance(ticket.issue_key, str) or not _ISSUE_KEY.match(ticket.issue_key):
        raise ValueError(f"issue_key must look like ACME-42 (team key, dash, number), got {ticket.issue_key!r}")
    if trigger is not None and trigger.source not in TRIGGER_SOURCES:
        raise ValueError(f"trigger.source must be one of {TRIGGER_SOURCES}, got {trigger.source!r}")

    ticket_spec = _drop_empty(
        {
            "title": ticket.title,
            "description": ticket.description,
            "url": ticket.url,
            "labels": list(ticket.labels),
            "state": ticket.state,
            "teamKey": ticket.team_key,
            "updatedAt": rfc3339(ticket.updated_at) if ticket.updated_at is not None else None,
            "priority": ticket.priority,
        }
    )
    spec: dict[str, Any] = {
        "tracker": ticket.tracker,
        "issueId": ticket.issue_id,
        "issueKey": ticket.issue_key,
        "attempt": attempt,
    }
    if ticket_spec:
        spec["ticket"] = ticket_spec
    if trigger is not None:
        spec["trigger"] = _drop_empty(
            {
                "source": trigger.source,
                "deliveryId": trigger.delivery_id,
                "actor": trigger.actor,
                "receivedAt": rfc3339(trigger.received_at) if trigger.received_at is not None else None,
            }
        )
    metadata: dict[str, Any] = {
        "name": name,
        "labels": run_labels(ticket.tracker, ticket.issue_id, ticket.issue_key, attempt),
        # Made with the operator's finalizer, so the operator's first act on a new run is its
        # reconcile, not a metadata PATCH (one API write, one etcd write and one watch event fewer
        # per intake). A run made by hand without it still gets it from the operator.
        "finalizers": [RUN_FINALIZER],
    }
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def run_identity(obj: dict[str, Any]) -> Hashable:
    """What makes two FoundryRuns the same run: tracker, issue id, attempt (never the key)."""
    spec = obj.get("spec") or {}
    return (spec.get("tracker"), spec.get("issueId"), spec.get("attempt"))


def describe_run(identity: Hashable) -> str:
    tracker, issue_id, attempt = identity  # type: ignore[misc]
    return f"{tracker} issue {issue_id!r} attempt {attempt}"


def create_or_attach(
    api_client: client.ApiClient, namespace: str, manifest: dict[str, Any]
) -> AttachResult:
    """Create the FoundryRun or attach to the one already there for the same issue and attempt.

    Raises IdentityConflict if the name is taken by a run for another issue or
    attempt, ObjectRejected/AccessDenied/KubeRequestError for API refusals.
    """
    return attach.create_or_attach(
        api_client, namespace, manifest, plural=PLURAL, identity=run_identity, describe=describe_run
    )
