"""The real Backend: PostgreSQL/SQLite through foundry.db, Kubernetes through foundry.kube.

This is the only bridge module that imports the database and Kubernetes
layers. It turns their failures into the two answers the HTTP layer knows:
Unavailable (503, retry later, nothing recorded) and Refused (a 4xx that a
retry would not change).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import urllib3
from kubernetes import client
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from foundry.bridge.commands import Refused, RunRef, Unavailable
from foundry.bridge.deadlines import (
    KUBE_CONNECT_SECONDS,
    KUBE_REQUEST_SECONDS,
    SQL_CONNECT_SECONDS,
    SQL_STATEMENT_SECONDS,
)
from foundry.bridge.mapping import TRACKER, Decision, Intake, Ticket
from foundry.db import claims, deliveries
from foundry.db.engine import make_engine, session_factory
from foundry.db.models import Run
from foundry.db.timeutil import utcnow
from foundry.domain.attempts import Claim
from foundry.domain.naming import run_name
from foundry.domain.phases import ACTIVE_PHASE_NAMES
from foundry.domain.plan_stamp import current_hash
from foundry.domain.ticket_refresh import ticket_patch
from foundry.domain.triggers import Trigger
from foundry.kube import approvals, runs
from foundry.kube.attach import Answer
from foundry.kube.client import api_client
from foundry.kube.crds import GROUP, VERSION
from foundry.kube.errors import AccessDenied, IdentityConflict, KubeRequestError, ObjectRejected, translate

# (connect, read) for every call through the official client that does not set its own.
KUBE_TIMEOUT = (KUBE_CONNECT_SECONDS, KUBE_REQUEST_SECONDS)
# Fail fast to a 503 rather than retrying inside a request the sender is
# waiting on; one retry covers a pooled connection the server closed.
KUBE_RETRIES = urllib3.Retry(total=1, read=0, redirect=0, status=0)


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    try:
        yield
    except (OperationalError, InterfaceError, PoolTimeout) as exc:
        raise Unavailable("database", type(exc).__name__) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise Unavailable("database", "connection lost") from exc
        raise
    except claims.ClaimContention as exc:
        raise Unavailable("database", "claim contention") from exc


@contextlib.contextmanager
def kubernetes_errors() -> Iterator[None]:
    try:
        yield
    except ObjectRejected as exc:
        raise Refused(400, f"the API server refused the object: {exc.message[:300]}") from exc
    except AccessDenied as exc:
        # The bridge's RBAC is wrong: an operator must fix it; the sender should retry later.
        raise Unavailable("kubernetes", f"access denied ({exc.status})") from exc
    except IdentityConflict as exc:
        raise Refused(409, "an object of another issue holds the run's name") from exc
    except KubeRequestError as exc:
        if exc.status == 0 or exc.status >= 500 or exc.status in (404, 429):
            # 404 here is create-or-attach's "deleted before we could read it": a retry settles it.
            raise Unavailable("kubernetes", f"{exc.reason or 'error'} ({exc.status})") from exc
        raise Refused(502, f"the API server answered {exc.status} {exc.reason}") from exc
    except client.ApiException as exc:  # calls made here directly, not through foundry.kube
        status = int(exc.status or 0)
        if status in (0, 429) or status >= 500:
            raise Unavailable("kubernetes", f"HTTP {status}") from exc
        if status in (401, 403):
            raise Unavailable("kubernetes", f"access denied ({status})") from exc
        raise Refused(502, f"the API server answered {translate(exc, 'request').message[:200]}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:  # timeouts included
        raise Unavailable("kubernetes", type(exc).__name__) from exc


def claim_request(ticket: Ticket, namespace: str) -> claims.ClaimRequest:
    """What the bridge asks of a claim for `ticket` (the threaded and the lean path alike)."""
    return claims.ClaimRequest(
        tracker=TRACKER,
        issue_id=ticket.issue_id,
        issue_key=ticket.issue_key,
        namespace=namespace,
        ticket_updated_at=ticket.updated_at,
        name_for=lambda attempt: run_name(TRACKER, ticket.issue_id, attempt),
    )


def run_manifest(claim: Claim, intake: Intake, trigger: Trigger) -> dict[str, Any] | None:
    """The FoundryRun the claim names, or None when the claimed run is not ours to create."""
    assert claim.name is not None and claim.attempt is not None and claim.namespace is not None
    ticket = intake.ticket
    if claim.name != run_name(TRACKER, ticket.issue_id, claim.attempt):
        # The active run was made by hand under another name and the operator
        # recorded it: it exists, and creating ours would make a second one.
        return None
    return runs.build_run_manifest(
        runs.TicketSnapshot(
            tracker=TRACKER,
            issue_id=ticket.issue_id,
            issue_key=ticket.issue_key,
            title=ticket.title,
            description=ticket.description or None,
            url=ticket.url or None,
            labels=ticket.labels,
            state=ticket.state,
            team_key=ticket.team_key,
            updated_at=ticket.updated_at,
            priority=ticket.priority,
        ),
        claim.attempt,
        replace(trigger, actor=intake.actor),
        namespace=claim.namespace,
    )


def ticket_update_outcome(answer: Answer, where: str) -> str:
    """What the merge patch of a run's spec.ticket (foundry.domain.ticket_refresh) came to, for both paths.

    "updated", or "attached" when the run was deleted meanwhile (nothing left
    to update). A 409 means the run changed since it was judged (the
    patch carries its resourceVersion): 503, and the sender's retry judges the
    new version. Call inside kubernetes_errors()."""
    if 200 <= answer.status < 300:
        return "updated"
    if answer.status == 404:
        return "attached"
    if answer.status == 409:
        raise Unavailable("kubernetes", f"{where} changed while its ticket was being updated")
    if answer.status == 0:
        raise Unavailable("kubernetes", str(answer.body)[:200])
    raise translate(client.ApiException(status=answer.status, reason=answer.reason, body=answer.body),
                    f"updating the ticket of {where}")


@dataclass
class RealBackend:
    engine: Engine
    api_client: client.ApiClient
    namespace: str

    @classmethod
    def from_settings(cls, database_url: str | None, kubeconfig: str | None, namespace: str, workers: int) -> "RealBackend":
        engine = make_engine(
            database_url,
            pool_size=workers,
            connect_timeout=SQL_CONNECT_SECONDS,
            statement_timeout=SQL_STATEMENT_SECONDS,
            # Threads and connections are as many, so a wait means a connection is stuck.
            pool_timeout=SQL_STATEMENT_SECONDS,
        )
        # foundry.kube's helpers (create-or-attach of runs and approvals) pass no
        # `_request_timeout`: the client gives every call KUBE_TIMEOUT. One HTTP
        # connection per worker thread, so the pool never serialises requests.
        api = api_client(kubeconfig, timeouts=KUBE_TIMEOUT, retries=KUBE_RETRIES, pool_size=workers)
        return cls(engine, api, namespace)

    def close(self) -> None:
        self.engine.dispose()
        self.api_client.close()

    # ------------------------------------------------------------ deliveries

    def delivery_recorded(self, provider: str, delivery_id: str) -> bool:
        with database_errors():
            return deliveries.is_recorded(self.engine, provider, delivery_id)

    def record_delivery(self, provider: str, delivery_id: str, outcome: str) -> bool:
        # Its own short transaction, after the command succeeded: holding one open
        # across the Kubernetes call would pin a connection per in-flight delivery.
        with database_errors(), session_factory(self.engine)() as session, session.begin():
            return deliveries.record_delivery(
                session, provider=provider, delivery_id=delivery_id, received_at=utcnow(), outcome=outcome
            )

    # ------------------------------------------------------------ runs

    def claim(self, ticket: Ticket) -> Claim:
        with database_errors():
            return claims.claim_run_orm(self.engine, claim_request(ticket, self.namespace))

    def create_or_attach_run(self, claim: Claim, intake: Intake, trigger: Trigger) -> str:
        manifest = run_manifest(claim, intake, trigger)
        if manifest is None:
            return "attached"
        namespace = manifest["metadata"]["namespace"]
        with kubernetes_errors():
            result = runs.create_or_attach(self.api_client, namespace, manifest)
            if result.created:
                return "created"
            patch = ticket_patch(result.object, manifest["spec"].get("ticket") or {})
            if patch is None:
                return "attached"
            return ticket_update_outcome(self._merge_patch(namespace, result.name, patch), f"run {result.name}")

    def _merge_patch(self, namespace: str, name: str, body: dict[str, Any]) -> Answer:
        try:
            obj = client.CustomObjectsApi(self.api_client).patch_namespaced_custom_object(
                GROUP, VERSION, namespace, runs.PLURAL, name, body, _request_timeout=KUBE_TIMEOUT)
        except client.ApiException as exc:
            return Answer(int(exc.status or 0), exc.reason, exc.body)
        return Answer(200, None, obj)

    def active_run(self, issue_id: str) -> RunRef | None:
        with database_errors():
            record = claims.active_run(self.engine, TRACKER, issue_id)
        return (record.namespace, record.name) if record else None

    def active_run_by_key(self, issue_key: str) -> RunRef | None:
        # Issue keys are not identities (they move with teams), but an active run
        # under a key is what a PR titled "ACME-42 ..." means.
        with database_errors(), session_factory(self.engine)() as session:
            row = session.execute(
                select(Run.namespace, Run.name)
                .where(Run.tracker == TRACKER, Run.issue_key == issue_key, Run.phase.in_(ACTIVE_PHASE_NAMES))
                .order_by(Run.created_at.desc())
                .limit(1)
            ).first()
        return (row[0], row[1]) if row else None

    # ------------------------------------------------------------ approvals and hints

    def run_plan_hash(self, run: RunRef) -> str | None:
        namespace, name = run
        with kubernetes_errors():
            try:
                obj = client.CustomObjectsApi(self.api_client).get_namespaced_custom_object(
                    GROUP, VERSION, namespace, runs.PLURAL, name, _request_timeout=KUBE_TIMEOUT)
            except client.ApiException as exc:
                if exc.status == 404:
                    return None  # the approval then names no plan; the operator ignores it for a missing run
                raise
        return current_hash(obj)

    def create_approval(self, run: RunRef, decision: Decision, plan_hash: str | None = None) -> bool:
        namespace, name = run
        manifest = approvals.build_approval_manifest(
            name, decision.decision, decision.approver, "linear", decision.comment or None, namespace=namespace,
            comment_id=decision.comment_id, plan_hash=plan_hash,
        )
        with kubernetes_errors():
            return approvals.create_or_attach_approval(self.api_client, namespace, manifest).created

    def hint_run(self, run: RunRef | str, value: str) -> bool:
        namespace, name = run if isinstance(run, tuple) else (self.namespace, run)
        api = client.CustomObjectsApi(self.api_client)
        body = {"metadata": {"annotations": {"foundry.dev/pr-hint": value}}}
        with kubernetes_errors():
            try:
                api.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, runs.PLURAL, name, body, _request_timeout=KUBE_TIMEOUT
                )
            except client.ApiException as exc:
                if exc.status == 404:
                    return False
                raise
        return True

    # ------------------------------------------------------------ readiness

    def check_ready(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # readiness reports any failure; it never raises
            checks["database"] = type(exc).__name__
        try:
            client.CustomObjectsApi(self.api_client).list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, runs.PLURAL, limit=1, _request_timeout=KUBE_TIMEOUT
            )
            checks["kubernetes"] = "ok"
        except client.ApiException as exc:
            checks["kubernetes"] = f"HTTP {exc.status}"
        except Exception as exc:
            checks["kubernetes"] = type(exc).__name__
        return checks
