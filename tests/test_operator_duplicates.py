"""A FoundryRun made by hand for an issue that already has an active run ends
as Duplicate and dispatches nothing (real API server, real PostgreSQL, real kopf)."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timezone

import pytest
from kubernetes import client

from foundry.db import audit, claims
from foundry.db.engine import create_schema, make_engine
from foundry.domain.naming import run_name
from foundry.kube.runs import TicketSnapshot, Trigger, build_run_manifest, create_or_attach
from foundry.operator.deps import Deps
from foundry.operator.kubeio import GROUP, RUNS, VERSION
from tests.support.operator_kit import operator_thread, wait_for, wait_phase

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def engine(pg_url):
    eng = make_engine(pg_url)
    create_schema(eng)
    yield eng
    eng.dispose()


def _ticket(issue_id: str) -> TicketSnapshot:
    return TicketSnapshot(tracker="linear", issue_id=issue_id, issue_key="ACME-7", title="Add a health endpoint",
                          description="Thin", updated_at=datetime(2025, 1, 2, tzinfo=timezone.utc))


# The Deps here have only what the claim needs (no config, Linear or GitHub): the winner's
# later steps and the resync timer fail on the missing parts, by design of this test.
@pytest.mark.allow_operator_errors(r"'NoneType' object has no attribute")
def test_hand_made_run_for_an_active_issue_is_duplicate(control_plane, kube_client, crds, namespace, engine):
    issue_id = f"issue-{uuid.uuid4().hex[:8]}"
    ticket = _ticket(issue_id)
    # The bridge's way in: claim in the DB, then create the named FoundryRun.
    claim = claims.claim_run(engine, tracker="linear", issue_id=issue_id, issue_key="ACME-7", namespace=namespace,
                             ticket_updated_at=ticket.updated_at, name_for=lambda n: run_name("linear", issue_id, n))
    assert claim.status == "created"
    first = build_run_manifest(ticket, claim.attempt, Trigger(source="webhook", delivery_id="d1"), namespace=namespace)
    create_or_attach(kube_client, namespace, first)
    # A human's way in: any name, same issue.
    forged = copy.deepcopy(first)
    forged["metadata"]["name"] = f"by-hand-{uuid.uuid4().hex[:6]}"
    forged["spec"]["trigger"] = {"source": "manual", "actor": "mallory"}
    objects = client.CustomObjectsApi(kube_client)
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, forged)

    deps = Deps(api=control_plane.api_client(), engine=engine, linear=None, github=None, config=None, agents=None)
    with operator_thread(deps, namespace):
        dup = wait_phase(kube_client, namespace, forged["metadata"]["name"], "Duplicate")
        # The winner is untouched by the duplicate: it left Pending on its own claim.
        wait_for(lambda: (objects.get_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, claim.name)
                          .get("status") or {}).get("phase") not in (None, "Pending"), what="winner claimed")

    assert claim.name in dup["status"]["message"]
    cond = {c["type"]: c for c in dup["status"]["conditions"]}
    assert cond["Duplicate"]["status"] == "True" and cond["Duplicate"]["reason"] == "ActiveRunExists"
    # Nothing dispatched, and only the winner holds a row.
    assert client.BatchV1Api(kube_client).list_namespaced_job(namespace).items == []
    assert claims.get_run(engine, namespace, forged["metadata"]["name"]) is None
    winner = claims.get_run(engine, namespace, claim.name)
    kinds = [e.kind for e in audit.audit_events(engine, winner.id)]
    assert kinds.count("duplicate-refused") == 1
    assert audit.verify_audit_chain(engine, winner.id)
    reasons = {e.reason for e in client.CoreV1Api(kube_client).list_namespaced_event(namespace).items
               if e.involved_object.name == forged["metadata"]["name"]}
    assert "ActiveRunExists" in reasons
