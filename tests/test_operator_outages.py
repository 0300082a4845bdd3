"""Outside failures delay a transition, never lose or repeat it: Linear failing
while a comment is posted, PostgreSQL down while an approval arrives (real kopf,
API server and PostgreSQL; the local Linear and GitHub servers)."""

from __future__ import annotations

import time

import pytest

from foundry.db import audit, claims
from foundry.db.engine import make_engine
from tests.support.operator_kit import operator_thread, wait_phase
from foundry.dev import postgres
from tests.support.operator_stack import OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


# kopf logs each retry of its handler at ERROR; here the retries are the point.
@pytest.mark.allow_operator_errors(r"failed temporarily: posting the approval_request comment")
def test_comment_written_but_answer_lost_is_posted_once(control_plane, kube_client, crds, namespace, pg_url):
    engine = make_engine(pg_url)
    try:
        with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack:
            # Linear stores the approval request, then answers 500 (the answer is lost);
            # then it fails the next two reads (the marker lookup is an `issue` query).
            stack.linear.faults.add("commentCreate", "apply_then_error")
            stack.linear.faults.add("issue", "error", count=2)
            with operator_thread(stack.deps, namespace):
                issue_id, run = stack.ticket()
                waiting = wait_phase(kube_client, namespace, run, "WaitingApproval", timeout=60)
        assert stack.linear.faults.calls["commentCreate"] == 1  # found by its marker, not posted again
        assert stack.linear.faults.calls["issue"] >= 3, stack.linear.faults.calls  # the failed reads were retried
        assert stack.comment_purposes(issue_id) == ["approval_request"]
        [comment] = stack.linear.comments_json(issue_id)
        assert waiting["status"]["comments"]["approval_request"] == comment["id"]
        row = claims.get_run(engine, namespace, run)
        phases = [e.payload["to"] for e in audit.audit_events(engine, row.id) if e.kind == "phase"]
        assert phases == ["Analysing", "WaitingApproval"]
    finally:
        engine.dispose()


def test_database_outage_during_an_approval_delays_it_and_loses_nothing(control_plane, kube_client, crds,
                                                                        namespace):
    server = postgres.PostgresServer.start()
    engine = make_engine(postgres.create_database(server.url))
    try:
        with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
                operator_thread(stack.deps, namespace):
            issue_id, run = stack.ticket()
            wait_phase(kube_client, namespace, run, "WaitingApproval")
            server.outage()
            stack.decide(run, "approve", "alice")
            time.sleep(3)
            # The approval is seen, but the transition cannot be recorded: nothing moves.
            assert stack.phase(run) == "WaitingApproval" and stack.jobs() == []
            server.recover()
            running = wait_phase(kube_client, namespace, run, "AgentRunning", timeout=60)
        assert stack.jobs(run) == [f"{run}-a1"]
        assert running["status"]["approvals"]["summary"] == "1/1"
        row = claims.get_run(engine, namespace, run)
        phases = [e.payload["to"] for e in audit.audit_events(engine, row.id) if e.kind == "phase"]
        assert phases == ["Analysing", "WaitingApproval", "Approved", "AgentRunning"]
        assert audit.verify_audit_chain(engine, row.id)
    finally:
        engine.dispose()
        server.stop()
