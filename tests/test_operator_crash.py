"""kill -9 right after a side effect, before it is recorded, then restart:
the restarted operator finds its earlier work instead of repeating it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone

import pytest

from foundry.db import audit, claims
from foundry.db.engine import create_schema, make_engine
from foundry.kube.runs import TicketSnapshot, Trigger, build_run_manifest, create_or_attach
from foundry.operator.testkit import get_run, wait_for
from foundry.testing.pytest_crds import crds  # noqa: F401 - fixture

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def _start(control_plane, namespace: str, pg_url: str, env_extra: dict[str, str], log) -> subprocess.Popen:
    env = dict(os.environ, KUBECONFIG=str(control_plane.kubeconfig), FOUNDRY_DATABASE_URL=pg_url, **env_extra)
    return subprocess.Popen([sys.executable, "-m", "foundry.operator.testkit", "-n", namespace],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def test_crash_after_db_insert_is_recovered_as_own_row(control_plane, kube_client, crds, namespace, pg_url,
                                                       tmp_path):
    engine = make_engine(pg_url)
    create_schema(engine)
    issue_id = f"issue-{uuid.uuid4().hex[:8]}"
    ticket = TicketSnapshot(tracker="linear", issue_id=issue_id, issue_key="ACME-9", title="t", description="d",
                            updated_at=datetime(2025, 1, 2, tzinfo=timezone.utc))
    # A run the bridge did not claim (kubectl apply): the operator's insert is the first write.
    manifest = build_run_manifest(ticket, 1, Trigger(source="manual", actor="alice"), namespace=namespace)
    name = manifest["metadata"]["name"]
    create_or_attach(kube_client, namespace, manifest)

    log_path = tmp_path / "operator.log"
    with open(log_path, "wb") as log:
        first = _start(control_plane, namespace, pg_url,
                       {"FOUNDRY_FAULT": "after-db-insert", "FOUNDRY_FAULT_ONCE_DIR": str(tmp_path)}, log)
        try:
            assert first.wait(60) == 137, log_path.read_text()
        finally:
            first.kill()
        # Died after the insert and before any status write.
        assert claims.get_run(engine, namespace, name) is not None
        assert (get_run(kube_client, namespace, name).get("status") or {}).get("phase") in (None, "Pending")

        second = _start(control_plane, namespace, pg_url, {}, log)
        try:
            wait_for(lambda: (get_run(kube_client, namespace, name).get("status") or {}).get("phase")
                     not in (None, "Pending"), timeout=60, what="the run to leave Pending")
        finally:
            second.terminate()
            second.wait(30)

    status = get_run(kube_client, namespace, name)["status"]
    assert status["phase"] != "Duplicate", status  # its own row must not count as another active run
    row = claims.get_run(engine, namespace, name)
    assert len(claims.runs_of_issue(engine, "linear", issue_id)) == 1
    phases = [e.payload["to"] for e in audit.audit_events(engine, row.id) if e.kind == "phase"]
    assert phases[0] == "Analysing" and phases.count("Analysing") == 1
    assert audit.verify_audit_chain(engine, row.id)
    engine.dispose()
