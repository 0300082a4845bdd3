"""The operator's pure pieces: conditions, PR summaries, resync timing, fault points."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from foundry.domain.phases import Phase
from foundry.operator.reconcile.prtruth import summarise_checks, summarise_reviews
from foundry.operator.reconcile.timing import IDLE_SECONDS, next_wake
from foundry.operator.status import conditions_for, merge_conditions

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def test_condition_time_moves_only_when_status_flips():
    first = merge_conditions([], conditions_for(Phase.WAITING_APPROVAL, "Planned", "m"), T0)
    again = merge_conditions(first, conditions_for(Phase.WAITING_APPROVAL, "Planned", "m2"), T0 + timedelta(1))
    assert {c["type"]: c["lastTransitionTime"] for c in again} == {"Ready": "2025-01-01T00:00:00Z",
                                                                    "Approved": "2025-01-01T00:00:00Z"}
    assert again[1]["message"] == "m2"
    approved = merge_conditions(again, conditions_for(Phase.APPROVED, "ApprovalsSatisfied", ""), T0 + timedelta(2))
    by_type = {c["type"]: c for c in approved}
    assert by_type["Approved"] == {"type": "Approved", "status": "True", "reason": "ApprovalsSatisfied",
                                   "message": "", "lastTransitionTime": "2025-01-03T00:00:00Z"}
    assert by_type["Ready"]["status"] == "True"  # untouched by a phase that does not mention it


def test_every_phase_has_conditions_defined():
    for phase in Phase:
        conditions_for(phase, "R", "m")  # KeyError would mean a phase the operator cannot record


@pytest.mark.parametrize(("runs", "expected"), [
    ([], "none"),
    ([{"id": 1, "name": "ci", "status": "in_progress"}], "pending"),
    ([{"id": 1, "name": "ci", "status": "completed", "conclusion": "failure"}], "failure"),
    ([{"id": 1, "name": "ci", "status": "completed", "conclusion": "failure"},
      {"id": 2, "name": "ci", "status": "completed", "conclusion": "success"}], "success"),  # re-run wins
    ([{"id": 1, "name": "ci", "status": "completed", "conclusion": "success"},
      {"id": 2, "name": "lint", "status": "completed", "conclusion": "timed_out"}], "failure"),
])
def test_check_summary(runs, expected):
    assert summarise_checks(runs) == expected


def test_review_summary_counts_each_reviewers_latest_on_the_head():
    r = lambda i, who, state, sha="h2": {"id": i, "user": {"login": who}, "state": state, "commit_id": sha,  # noqa: E731
                                         "submitted_at": f"2025-01-01T00:00:0{i}Z"}
    assert summarise_reviews([r(1, "a", "CHANGES_REQUESTED", "h1")], "h2") == "none"  # old commit
    assert summarise_reviews([r(1, "a", "CHANGES_REQUESTED"), r(2, "a", "APPROVED")], "h2") == "approved"
    assert summarise_reviews([r(1, "a", "APPROVED"), r(2, "b", "CHANGES_REQUESTED")], "h2") == "changes_requested"
    assert summarise_reviews([r(1, "a", "COMMENTED")], "h2") == "none"


def test_resync_timing():
    cfg = SimpleNamespace(timeouts=SimpleNamespace(resync_seconds=7, approval_seconds=100))
    assert next_wake({"status": {"phase": "PROpen"}}, cfg, T0) == 7
    assert next_wake({"status": {"phase": "Complete"}}, cfg, T0) == IDLE_SECONDS
    waiting = {"status": {"phase": "WaitingApproval", "conditions": [
        {"type": "Approved", "status": "False", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}}
    assert next_wake(waiting, cfg, T0 + timedelta(seconds=40)) == pytest.approx(60.5)
    assert next_wake(waiting, cfg, T0 + timedelta(seconds=400)) == 0.5


def test_fault_point_kills_once_per_marker_dir(tmp_path):
    code = ("from tests.support import crash_points; from foundry.operator.checkpoints import reached; "
            "crash_points.install(); reached('after-job-create'); print('alive')")
    env = {"FOUNDRY_FAULT": "after-job-create", "FOUNDRY_FAULT_ONCE_DIR": str(tmp_path), "PATH": "/usr/bin",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert (first.returncode, first.stdout) == (137, "")
    assert (second.returncode, second.stdout.strip()) == (0, "alive")


def test_unknown_fault_point_is_refused(monkeypatch):
    from tests.support.crash_points import at_checkpoint

    monkeypatch.setenv("FOUNDRY_FAULT", "after-lunch")
    with pytest.raises(ValueError, match="unknown fault points"):
        at_checkpoint("after-job-create")
