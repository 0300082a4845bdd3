"""A terminal database row never becomes active again.

A transition writes the DB row first and the status last. When the status
write is refused (409: the run changed since it was read), the step used to be
recomputed from the fresh read, and if that now came out active, the terminal
row was moved back to an active phase: the issue's freed slot was taken twice,
or, when another attempt had claimed it meanwhile, ActiveRunConflict was raised
on every reconcile for ever.

The race is made deterministic with a fault point (tests.support.crash_points
`after-db-phase`): right after the row is written NeedsClarification, the
ticket on the run is completed (so a recompute would plan it) and, in one
variant, the bridge claims the next attempt for the edited ticket. Real API
server, real PostgreSQL, the reconciler called in this thread.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from kubernetes import client

from foundry.db import audit, claims
from foundry.db.audit import RunEnded
from foundry.db.engine import make_engine
from foundry.domain.naming import run_name
from foundry.operator.kubeio import GROUP, RUNS, VERSION
from foundry.operator.reconcile.loop import reconcile_run
from tests.support.crash_points import on_point
from tests.support.operator_stack import READY_DESCRIPTION, OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres]

THIN = "It is broken."


def _phases(engine, row_id: int) -> list[str]:
    return [e.payload["to"] for e in audit.audit_events(engine, row_id) if e.kind == "phase"]


@pytest.mark.parametrize("slot_taken", [False, True], ids=["slot-free", "slot-taken-by-next-attempt"])
def test_refused_status_write_does_not_revive_a_terminal_row(control_plane, kube_client, crds, namespace, pg_url,
                                                            slot_taken):
    engine = make_engine(pg_url)
    try:
        with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack:
            issue_id, run = stack.ticket(description=THIN)
            objects = client.CustomObjectsApi(stack.api)
            fired: list[str] = []

            def meanwhile() -> None:
                row = claims.get_run(engine, namespace, run)
                if fired or row is None or row.phase != "NeedsClarification":
                    return
                fired.append(row.phase)
                # The person completes the ticket on the run: its resourceVersion
                # moves (the pending status write gets 409) and a recompute would plan it.
                objects.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, RUNS, run,
                    {"spec": {"ticket": {"description": READY_DESCRIPTION}}})
                if slot_taken:
                    # The bridge sees the edit; the row is terminal, so the issue gets attempt 2.
                    nxt = claims.claim_run(engine, tracker="linear", issue_id=issue_id, issue_key=row.issue_key,
                                           namespace=namespace,
                                           ticket_updated_at=row.ticket_updated_at + timedelta(minutes=1),
                                           name_for=lambda n: run_name("linear", issue_id, n))
                    assert (nxt.status, nxt.attempt) == ("created", 2), nxt

            with on_point("after-db-phase", meanwhile):
                final = reconcile_run(stack.deps, namespace, run)
            assert fired == ["NeedsClarification"], "the fault point never saw the terminal write"

            # The status follows the row; the recomputed plan did not happen.
            assert final is not None and final.value == "NeedsClarification"
            status = stack.run(run)["status"]
            assert status["phase"] == "NeedsClarification" and status["reason"] == "MissingInformation", status
            assert "approval_request" not in stack.comment_purposes(issue_id)

            row = claims.get_run(engine, namespace, run)
            assert row.phase == "NeedsClarification" and row.finished_at is not None
            assert _phases(engine, row.id) == ["Analysing", "NeedsClarification"]
            assert audit.verify_audit_chain(engine, row.id)
            holder = claims.active_run(engine, "linear", issue_id)
            if slot_taken:
                assert holder is not None and holder.attempt == 2
            else:
                assert holder is None  # the slot stays free

            # Later reconciles are quiet: no ActiveRunConflict loop, no change.
            for _ in range(2):
                assert reconcile_run(stack.deps, namespace, run).value == "NeedsClarification"
            assert _phases(engine, row.id) == ["Analysing", "NeedsClarification"]
    finally:
        engine.dispose()


def test_record_phase_refuses_terminal_to_active(pg_url):
    from foundry.db import migrate

    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        from datetime import datetime, timezone

        t0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
        claim = claims.claim_run(engine, tracker="linear", issue_id="i-1", issue_key="ACME-1", namespace="ns",
                                 ticket_updated_at=t0, name_for=lambda a: f"i-1-a{a}")
        audit.record_phase(engine, claim.run_id, "Stopped", "human stop")
        with pytest.raises(RunEnded) as caught:
            audit.record_phase(engine, claim.run_id, "WaitingApproval", "recomputed")
        assert caught.value.phase == "Stopped"
        row = claims.get_run_by_id(engine, claim.run_id)
        assert row.phase == "Stopped"
        assert _phases(engine, claim.run_id) == ["Stopped"]
        # Terminal to terminal stays allowed (a later, more precise ending); finished_at keeps its first stamp.
        again = audit.record_phase(engine, claim.run_id, "Closed", "pr closed")
        assert again.finished_at == row.finished_at
    finally:
        engine.dispose()


def test_a_status_left_behind_by_a_crash_follows_its_ended_row(control_plane, kube_client, crds, namespace, pg_url):
    """A crash between the row write and the status write, then a step that only stays: the
    housekeeping round writes the row's ending to the status (no second audit event)."""
    from foundry.operator import housekeeping

    engine = make_engine(pg_url)
    try:
        with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack:
            issue_id, run = stack.ticket()
            assert reconcile_run(stack.deps, namespace, run).value == "WaitingApproval"
            row = claims.get_run(engine, namespace, run)
            # What the killed operator had written: the row, not the status.
            audit.record_phase(engine, row.id, "Stopped", "StoppedByHuman",
                               {"message": "stop by alice (kubernetes)", "from": "WaitingApproval"})
            # The restarted operator's reconcile finds nothing to do (the decision is gone).
            assert reconcile_run(stack.deps, namespace, run).value == "WaitingApproval"

            report = housekeeping.run_round(stack.deps, lambda: [namespace])
            assert report.settled == [f"{namespace}/{run}"] and not report.skipped, report
            status = stack.run(run)["status"]
            assert (status["phase"], status["reason"], status["message"]) == (
                "Stopped", "StoppedByHuman", "stop by alice (kubernetes)"), status
            assert _phases(engine, row.id) == ["Analysing", "WaitingApproval", "Stopped"]
            assert housekeeping.run_round(stack.deps, lambda: [namespace]).settled == []
            assert claims.active_run(engine, "linear", issue_id) is None
    finally:
        engine.dispose()
