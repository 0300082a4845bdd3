"""`foundry runs list|show` against the real API server and a real SQLite audit trail."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client

from foundry.cli.main import cli
from foundry.cli.output import Printer, age, plain_table
from foundry.cli.runs import event_summary, issue_selector, phase_filter, run_row
from foundry.kube.crds import GROUP, VERSION
from foundry.kube.runs import TicketSnapshot, Trigger, build_run_manifest, create_or_attach

UPDATED = datetime(2025, 3, 1, 9, 30, tzinfo=timezone.utc)


# --- pure ---------------------------------------------------------------------


def test_phase_filter_is_case_insensitive_and_expands_active():
    assert phase_filter(("complete",)) == {"Complete"}
    assert phase_filter(("PROpen,waitingapproval",)) == {"PROpen", "WaitingApproval"}
    active = phase_filter(("active",))
    assert "AgentRunning" in active and "Complete" not in active


def test_phase_filter_names_the_valid_phases_on_a_typo():
    with pytest.raises(ValueError, match="unknown phase 'Compelte'.*Complete"):
        phase_filter(("Compelte",))


def test_issue_selector_uses_the_key_label_for_keys_and_the_id_label_otherwise():
    assert issue_selector("acme-42") == "foundry.dev/issue-key=ACME-42"
    assert issue_selector("3f0c2b1e-6a57") == "foundry.dev/issue-id=3f0c2b1e-6a57"


def test_run_row_reads_printer_column_fields():
    now = datetime(2025, 3, 1, 10, 0, tzinfo=timezone.utc)
    obj = {
        "metadata": {"name": "lin-x-1", "creationTimestamp": "2025-03-01T09:55:00Z"},
        "spec": {"issueKey": "ACME-1", "attempt": 2},
        "status": {"phase": "PROpen", "repo": "acme/api", "approvals": {"summary": "1/1"},
                   "pr": {"number": 7, "url": "http://gh/pr/7"}, "reason": "ChecksPending"},
    }
    assert run_row(obj, now=now) == ["lin-x-1", "ACME-1", "PROpen", "acme/api", "1/1", 7, "5m"]
    assert run_row(obj, wide=True, now=now)[-3:] == [2, "ChecksPending", "http://gh/pr/7"]
    # A run the operator has not touched yet has no status: it reads as Pending.
    assert run_row({"metadata": {"name": "n"}, "spec": {}}, now=now)[2] == "Pending"


def test_age_and_event_summary():
    now = datetime(2025, 1, 2, tzinfo=timezone.utc)
    assert age("2025-01-01T00:00:00Z", now) == "1d"
    assert age(now - timedelta(seconds=59), now) == "59s"
    assert age(None, now) == ""
    assert event_summary("phase", {"from": "Pending", "to": "Analysing", "reason": "Intake"}) == "Pending → Analysing (Intake)"
    assert event_summary("approval", {"by": "alice", "roles": []}) == "by=alice"
    assert event_summary("Remediating", {"message": "CI failed on abc: attempt 2", "k8s_uid": "u-1"}) == \
        "CI failed on abc: attempt 2"
    assert event_summary("agent-retry", {"attempt": 2, "k8s_uid": "u-1"}) == "attempt=2"


def test_plain_table_aligns_columns_and_rich_is_used_only_on_a_tty():
    assert plain_table(["a", "bb"], [["xxx", 1]]) == "A     BB\nxxx   1"
    piped = io.StringIO()
    Printer(piped).table(["phase"], [["Complete"]])
    assert piped.getvalue() == "PHASE\nComplete\n"  # no box drawing, no escape codes

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    printer = Printer(tty)
    assert printer.rich
    printer.table(["phase"], [["Complete"]])
    assert "Complete" in tty.getvalue() and tty.getvalue() != piped.getvalue()


# --- against the API server ---------------------------------------------------

def _make_run(api, namespace, issue_id, key, attempt=1, status=None):
    ticket = TicketSnapshot("linear", issue_id, key, title=f"Ticket {key}", updated_at=UPDATED)
    manifest = build_run_manifest(ticket, attempt, Trigger("webhook", actor="alice"), namespace=namespace)
    name = create_or_attach(api, namespace, manifest).name
    if status:
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "foundryruns", name, {"status": status})
    return name


def _invoke(*args, env=None):
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result


@pytest.fixture
def kc(control_plane, crds):
    return ["--kubeconfig", str(control_plane.kubeconfig)]


@pytest.mark.kube
def test_list_filters_by_phase_and_issue_and_renders_each_format(kube_client, kc, namespace):
    done = _make_run(kube_client, namespace, "issue-a", "ACME-1", status={"phase": "Complete", "pr": {"number": 3}})
    waiting = _make_run(kube_client, namespace, "issue-b", "ACME-2", status={"phase": "WaitingApproval"})

    table = _invoke("runs", "list", *kc, "-n", namespace)
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split() == ["NAME", "ISSUE", "PHASE", "REPO", "APPROVALS", "PR", "AGE"]
    assert {done, waiting} == {line.split()[0] for line in lines[1:]}

    only_done = _invoke("runs", "list", *kc, "-n", namespace, "--phase", "complete", "-o", "json")
    assert [i["metadata"]["name"] for i in json.loads(only_done.output)["items"]] == [done]

    active = _invoke("runs", "list", *kc, "-n", namespace, "--phase", "active", "-o", "yaml")
    assert [i["metadata"]["name"] for i in yaml.safe_load(active.output)["items"]] == [waiting]

    by_issue = _invoke("runs", "list", *kc, "-n", namespace, "--issue", "acme-2", "-o", "wide")
    rows = by_issue.output.splitlines()
    assert "ATTEMPT" in rows[0] and len(rows) == 2 and rows[1].startswith(waiting)

    nothing = _invoke("runs", "list", *kc, "-n", namespace, "--issue", "ACME-999")
    assert nothing.exit_code == 0 and "No FoundryRuns found" in nothing.output

    everywhere = _invoke("runs", "list", *kc, "-A", "--issue", "ACME-1")
    assert everywhere.output.splitlines()[0].startswith("NAMESPACE") and namespace in everywhere.output


@pytest.mark.kube
def test_list_rejects_an_unknown_phase_with_usage_status(kc, namespace):
    result = _invoke("runs", "list", *kc, "-n", namespace, "--phase", "Done")
    assert result.exit_code == 2 and "unknown phase 'Done'" in result.output


@pytest.mark.kube
def test_show_prints_plan_approvals_attempts_pr_conditions_and_the_db_timeline(kube_client, kc, namespace, tmp_path):
    from foundry.db.audit import record_decision, record_phase
    from foundry.db.claims import insert_run_row_for_operator
    from foundry.db.engine import create_schema, make_engine
    from foundry.kube.approvals import build_approval_manifest, create_or_attach_approval

    status = {
        "phase": "PROpen",
        "repo": "acme/api",
        "plan": {"goal": "Retry payouts", "steps": ["add retry"], "files": ["payouts.py"], "tests": ["test_retry"]},
        "approvals": {"required": 1, "received": 1, "summary": "1/1",
                      "approvers": [{"name": "alice", "roles": ["lead"], "source": "kubernetes", "at": "2025-03-01T10:00:00Z"}]},
        "agent": {"attempt": 1, "jobs": [{"name": "x-a1", "attempt": 1, "state": "Succeeded", "headSha": "abc123def4567890"}]},
        "pr": {"number": 12, "url": "http://github.local/acme/api/pull/12", "branch": "foundry/x", "state": "open", "merged": False},
        "conditions": [{"type": "Approved", "status": "True", "reason": "PolicySatisfied", "message": "1 of 1",
                        "lastTransitionTime": "2025-03-01T10:00:00Z"}],
    }
    name = _make_run(kube_client, namespace, "issue-show", "ACME-7", status=status)
    create_or_attach_approval(kube_client, namespace,
                              build_approval_manifest(name, "approve", "alice", "kubernetes", namespace=namespace))

    url = f"sqlite:///{tmp_path / 'foundry.db'}"
    engine = make_engine(url)
    create_schema(engine)
    row = insert_run_row_for_operator(engine, tracker="linear", issue_id="issue-show", issue_key="ACME-7",
                                      namespace=namespace, name=name, attempt=1, ticket_updated_at=UPDATED).run
    record_phase(engine, row.id, "Analysing", "Intake")
    record_decision(engine, row.id, "approval", {"by": "alice"})
    engine.dispose()

    result = _invoke("runs", "show", name, *kc, "-n", namespace, "--database-url", url)
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in ("Retry payouts", "payouts.py", "Approvals (1/1 counted)", "alice", "lead", "x-a1", "Succeeded",
                     "http://github.local/acme/api/pull/12", "PolicySatisfied", "Pending → Analysing (Intake)", "by=alice"):
        assert expected in out, expected
    assert "does not verify" not in out

    # The issue key finds the same run; -o json carries the timeline for scripts.
    as_json = json.loads(_invoke("runs", "show", "ACME-7", *kc, "-n", namespace, "--database-url", url, "-o", "json").output)
    assert as_json["run"]["metadata"]["name"] == name
    assert [e["kind"] for e in as_json["timeline"]] == ["phase", "approval"]
    assert [a["spec"]["approver"] for a in as_json["approvals"]] == ["alice"]


@pytest.mark.kube
def test_show_names_the_operator_that_holds_the_lease(kube_client, kc, namespace, tmp_path):
    from kubernetes import client

    name = _make_run(kube_client, namespace, "issue-lease", "ACME-9")
    db = ("--database-url", f"sqlite:///{tmp_path / 'empty.db'}")
    alone = _invoke("runs", "show", name, *kc, "-n", namespace, *db)
    assert alone.exit_code == 0 and "leading:" not in alone.output  # no election, nothing to say
    client.CoordinationV1Api(kube_client).create_namespaced_lease(namespace, {
        "metadata": {"name": "foundry-operator"}, "spec": {"holderIdentity": "foundry-operator-7d9c-x2", "leaseDurationSeconds": 15}})
    shown = _invoke("runs", "show", name, *kc, "-n", namespace, *db)
    assert shown.exit_code == 0 and "leading: foundry-operator-7d9c-x2" in shown.output
    as_json = json.loads(_invoke("runs", "show", name, *kc, "-n", namespace, *db, "-o", "json").output)
    assert as_json["operatorLeader"] == "foundry-operator-7d9c-x2"


@pytest.mark.kube
def test_show_still_answers_when_the_database_is_unusable(kube_client, kc, namespace, tmp_path):
    name = _make_run(kube_client, namespace, "issue-nodb", "ACME-8")
    result = _invoke("runs", "show", name, *kc, "-n", namespace, "--database-url", f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.exit_code == 0
    assert "timeline unavailable" in result.output and name in result.output


@pytest.mark.kube
def test_show_unknown_run_exits_1_with_a_clear_message(kc, namespace):
    result = _invoke("runs", "show", "lin-nope-1", *kc, "-n", namespace)
    assert result.exit_code == 1
    assert f"no FoundryRun 'lin-nope-1' in namespace {namespace}" in result.output
    assert "Traceback" not in result.output


def _dead_kubeconfig(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
    }))
    return path


@pytest.mark.parametrize("args", [["runs", "list"], ["runs", "show", "lin-x-1"], ["approve", "lin-x-1"]])
def test_no_cluster_is_a_message_and_exit_3_not_a_traceback(tmp_path, args):
    kubeconfig = _dead_kubeconfig(tmp_path)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "foundry.cli.main", *args, "--kubeconfig", str(kubeconfig)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "cannot reach the Kubernetes API" in proc.stderr and "connection refused" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 20  # no long retry loop


def test_missing_kubeconfig_is_a_message_and_exit_3(tmp_path):
    result = _invoke("runs", "list", "--kubeconfig", str(tmp_path / "nope"))
    assert result.exit_code == 3 and "does not exist" in result.output


@pytest.mark.kube
def test_missing_crds_are_named(control_plane):
    # A cluster without Foundry: a fresh control plane would be slow, so ask for a
    # resource kind in a group that cannot exist via the same code path.
    from foundry.cli.kubeaccess import CliError, kube_errors

    api = control_plane.api_client()
    with pytest.raises(CliError, match="CRDs are not installed"):
        with kube_errors():
            client.CustomObjectsApi(api).list_namespaced_custom_object("nothing.example", "v1", "default", "widgets")
