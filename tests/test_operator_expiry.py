"""A plan nobody approves in time expires: the resync timer wakes the run at
its deadline, not at the next hourly look (real kopf, API server, PostgreSQL)."""

from __future__ import annotations

import time

import pytest

from foundry.db import audit, claims
from foundry.db.engine import make_engine
from tests.support.operator_kit import operator_thread, wait_phase
from tests.support.operator_stack import OperatorStack, stack_config

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def test_unapproved_plan_expires_at_its_deadline(control_plane, kube_client, crds, namespace, pg_url):
    engine = make_engine(pg_url)
    config = stack_config()
    config["timeouts"]["approval_seconds"] = 3
    try:
        with OperatorStack.open(control_plane.api_client(), engine, namespace, config) as stack, \
                operator_thread(stack.deps, namespace):
            issue_id, run = stack.ticket()
            wait_phase(kube_client, namespace, run, "WaitingApproval")
            waiting_since = time.monotonic()
            expired = wait_phase(kube_client, namespace, run, "Expired", timeout=20)
            waited = time.monotonic() - waiting_since
            # An approval that arrives now changes nothing: the run is over.
            stack.decide(run, "approve", "alice")
            time.sleep(1.5)
            assert stack.phase(run) == "Expired"
        assert 2.0 <= waited <= 10.0, waited
        assert expired["status"]["reason"] == "ApprovalExpired"
        assert {c["type"]: c["status"] for c in expired["status"]["conditions"]}["Approved"] == "False"
        assert stack.jobs() == []
        row = claims.get_run(engine, namespace, run)
        assert row.phase == "Expired" and row.finished_at is not None  # the issue's slot is free again
        assert [e.payload["to"] for e in audit.audit_events(engine, row.id) if e.kind == "phase"][-1] == "Expired"
    finally:
        engine.dispose()
