"""The Lease's reads and writes (coordination.k8s.io/v1), and its LeaderElection Events.

Writes are conditional: a create fails if the Lease exists, a replace carries
the resourceVersion it was read at. Either refusal is `LeaseTaken`: someone
else wrote first, read again. Every request has its own short timeout, so a
silent API server costs one retry period, not the renew deadline.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timezone
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from foundry.operator import checkpoints
from foundry.operator.lease_rules import LeaseRecord

log = logging.getLogger(__name__)

COMPONENT = "foundry-operator"


class LeaseTaken(Exception):
    """The Lease changed (or appeared) since it was read: another candidate wrote first."""


class LeaseUnavailable(Exception):
    """The API server did not answer, or refused for a reason other than a conflict."""


def _micro(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


def record_of(spec: dict[str, Any]) -> LeaseRecord:
    return LeaseRecord(
        holder=spec.get("holderIdentity") or None,
        lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=_parse_time(spec.get("acquireTime")),
        renew_time=_parse_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


def spec_of(record: LeaseRecord) -> dict[str, Any]:
    # holderIdentity is written as "" (not left out) on release: a merge or an
    # older reader must see the holder cleared, not the previous one kept.
    return {
        "holderIdentity": record.holder or "",
        "leaseDurationSeconds": record.lease_duration_seconds,
        "acquireTime": _micro(record.acquire_time),
        "renewTime": _micro(record.renew_time),
        "leaseTransitions": record.transitions,
    }


class LeaseClient:
    """One Lease, through an ApiClient of its own (a reconcile burst must not queue a renewal)."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str, *, timeout: tuple[float, float]) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.timeout = timeout
        self.uid: str | None = None
        self._leases = client.CoordinationV1Api(api)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        try:
            checkpoints.reached("before-lease-request")
            answer = fn(*args, _request_timeout=self.timeout, _preload_content=False, **kwargs)
            lease = json.loads(answer.data)
        except ApiException as err:
            if err.status == 404 and what == "read":
                return None
            if err.status == 409 and what != "read":  # a stale resourceVersion, or a Lease that exists
                raise LeaseTaken(f"Lease {self.namespace}/{self.name} changed before the {what}") from err
            raise LeaseUnavailable(f"{what} of Lease {self.namespace}/{self.name}: HTTP {err.status} "
                                   f"{(err.reason or '').strip()}") from err
        except Exception as err:  # noqa: BLE001 - a timeout, a refused connection, a reset: all "no answer"
            raise LeaseUnavailable(f"{what} of Lease {self.namespace}/{self.name}: "
                                   f"{type(err).__name__}: {err}") from err
        self.uid = (lease.get("metadata") or {}).get("uid") or self.uid
        return lease

    def read(self) -> tuple[LeaseRecord | None, str | None]:
        """The record and its resourceVersion; (None, None) if there is no Lease."""
        lease = self._call("read", self._leases.read_namespaced_lease, self.name, self.namespace)
        if lease is None:
            return None, None
        return record_of(lease.get("spec") or {}), lease["metadata"]["resourceVersion"]

    def create(self, record: LeaseRecord) -> str:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "labels": {"app.kubernetes.io/managed-by": "foundry",
                                        "app.kubernetes.io/component": "operator"}},
                "spec": spec_of(record)}
        lease = self._call("create", self._leases.create_namespaced_lease, self.namespace, body)
        assert lease is not None
        return lease["metadata"]["resourceVersion"]

    def replace(self, record: LeaseRecord, resource_version: str) -> str:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": resource_version},
                "spec": spec_of(record)}
        lease = self._call("update", self._leases.replace_namespaced_lease, self.name, self.namespace, body)
        assert lease is not None
        return lease["metadata"]["resourceVersion"]

    def event(self, reason: str, message: str) -> None:
        """A LeaderElection Event on the Lease (what `kubectl describe lease` shows); best effort."""
        now = datetime.now(timezone.utc)
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{self.name}.{uuid.uuid4().hex[:16]}", "namespace": self.namespace},
            "involvedObject": {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "name": self.name,
                               "namespace": self.namespace, "uid": self.uid},
            "reason": reason, "message": message[:1024], "type": "Normal",
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT, "reportingInstance": COMPONENT,
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventTime": _micro(now), "action": "LeaderElection", "count": 1,
        }
        try:
            client.CoreV1Api(self.api).create_namespaced_event(self.namespace, body, _request_timeout=self.timeout)
        except Exception as err:  # noqa: BLE001 - Events are a courtesy; the metrics and the Lease are the record
            log.warning("could not post the %s event on Lease %s/%s: %s", reason, self.namespace, self.name, err)


def holder_of(api: client.ApiClient, namespace: str, name: str) -> LeaseRecord | None:
    """The Lease's record for a reader (`foundry runs show`); None if there is none."""
    record, _ = LeaseClient(api, namespace, name, timeout=(5.0, 10.0)).read()
    return record
