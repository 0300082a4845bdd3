"""The PR and remediation steps, called directly (foundry.operator.reconcile.steps_pr):
PROpen / ReviewRequired → Complete | Closed | Blocked | ReviewRequired | AgentRunning (remediation)."""

from __future__ import annotations

from foundry.domain.phases import Phase
from foundry.operator.reconcile import steps_pr
from foundry.operator.reconcile.outcome import Stay, Transition
from foundry.operator.reconcile.view import RunView
from tests.support.step_deps import StepDeps, agent_running, run_view, with_attempt

RUN = "linear-acme-1-a1"
SHA = "a" * 40


def _pr_open(deps: StepDeps, *, attempt: int = 1, finished: bool = True, phase: str = "PROpen",
             files: tuple[str, ...] = ("app/x.py",), **status) -> RunView:
    """A run whose PR #7 (head SHA) was adopted; its attempts started at the provider."""
    run = agent_running(jobs=[], attempt=attempt)
    for n in range(1, attempt + 1):
        run = with_attempt(deps, run, n)
        if finished or n < attempt:
            deps.agents.finish(run, n, "succeeded", outcome="pushed")
    pull = deps.github.open_pull(run, sha=SHA, files=files, attempt=attempt)
    base = {k: v for k, v in run.status.items() if k != "phase"}
    base["agent"] = {**base["agent"], "jobs": [{**j, **deps.agents.state(run.body, j["attempt"])} for j in run.jobs]}
    base["pr"] = {"number": 7, "url": pull["html_url"], "branch": run.branch, "headSha": SHA, "state": "open",
                  "merged": False, "checks": "none", "review": "none"}
    base["comments"] = {"pr_opened": "c-earlier"}
    return run_view(phase, **{**base, **status})


def test_an_open_pr_with_nothing_new_only_notes_the_sync():
    deps = StepDeps()
    run = _pr_open(deps)
    outcome = steps_pr.watch_pr(deps, run)
    assert isinstance(outcome, Stay) and set(outcome.status) == {"lastSyncedAt"}
    assert deps.agents.dispatched == [] and deps.linear.created == []


def test_checks_passing_are_recorded():
    deps = StepDeps()
    run = _pr_open(deps)
    deps.github.check(SHA, "ci", None)
    deps.github.check(SHA, "ci", "success", id_=900)  # a re-run: the newest of a name is the verdict
    outcome = steps_pr.watch_pr(deps, run)
    assert isinstance(outcome, Stay) and outcome.status["pr"]["checks"] == "success"


def test_merged_completes_the_run_with_one_closing_comment():
    deps = StepDeps()
    run = _pr_open(deps, finished=False)  # an attempt still at work on the branch
    deps.github.pulls[7].update({"state": "closed", "merged": True})
    outcome = steps_pr.watch_pr(deps, run)
    assert isinstance(outcome, Transition)
    assert (outcome.to, outcome.reason) == (Phase.COMPLETE, "Merged")
    assert deps.linear.purposes() == ["done"] and "merged" in deps.linear.created[0].body.lower()
    assert deps.agents.cancelled == [(RUN, 1)]
    assert outcome.status["agent"]["jobs"][0]["state"] == "cancelled"


def test_closed_unmerged_closes_the_run():
    deps = StepDeps()
    run = _pr_open(deps)
    deps.github.pulls[7]["state"] = "closed"
    outcome = steps_pr.watch_pr(deps, run)
    assert (outcome.to, outcome.reason, outcome.warning) == (Phase.CLOSED, "ClosedUnmerged", True)
    assert deps.agents.cancelled == []  # a finished Job is kept with its record


def test_a_forbidden_path_blocks_the_run():
    deps = StepDeps()
    run = _pr_open(deps, files=("app/x.py", ".github/workflows/ci.yml"))
    outcome = steps_pr.watch_pr(deps, run)
    assert (outcome.to, outcome.reason) == (Phase.BLOCKED, "ForbiddenPath")
    assert ".github/workflows/ci.yml" in outcome.message
    assert deps.linear.purposes() == ["blocked"]


def test_a_diff_too_large_goes_to_review():
    deps = StepDeps()
    run = _pr_open(deps, files=tuple(f"app/f{n}.py" for n in range(deps.config.policy.max_changed_files + 1)))
    outcome = steps_pr.watch_pr(deps, run)
    assert (outcome.to, outcome.reason, outcome.warning) == (Phase.REVIEW_REQUIRED, "DiffNeedsReview", True)
    # Already there, the same verdict is no transition.
    again = steps_pr.watch_pr(deps, RunView({**run.body, "status": {**run.status, "phase": "ReviewRequired",
                                                                    "pr": outcome.status["pr"]}}))
    assert isinstance(again, Stay)


def test_the_ticket_hears_of_the_pr_once():
    deps = StepDeps()
    run = _pr_open(deps, comments={})
    first = steps_pr.watch_pr(deps, run)
    again = steps_pr.watch_pr(deps, RunView({**run.body, "status": {**run.status, **first.status}}))
    assert deps.linear.purposes() == ["pr_opened"]
    assert "comments" not in again.status


def test_ci_failing_starts_a_remediation_told_what_failed():
    deps = StepDeps()
    run = _pr_open(deps)
    deps.github.check(SHA, "unit tests", "failure",
                      output={"title": "2 failed", "summary": "test_healthz failed", "text": "", "annotations_count": 0})
    outcome = steps_pr.watch_pr(deps, run)
    assert isinstance(outcome, Transition)
    assert (outcome.to, outcome.reason) == (Phase.AGENT_RUNNING, "Remediating")
    assert deps.agents.dispatched == [(RUN, 2)]
    told = deps.agents.inputs[(RUN, 2)]
    assert told["pr"] == {"number": 7}
    assert told["feedback"]["reason"] == "CI failed" and told["feedback"]["headSha"] == SHA
    assert [c["name"] for c in told["feedback"]["checks"]] == ["unit tests"]
    assert outcome.status["remediations"] == {SHA: 2} and outcome.status["agent"]["attempt"] == 2


def test_changes_requested_start_a_remediation_with_the_review():
    deps = StepDeps()
    run = _pr_open(deps)
    deps.github.review(7, "carol", "CHANGES_REQUESTED", SHA, body="please log the probe")
    outcome = steps_pr.watch_pr(deps, run)
    assert outcome.to == Phase.AGENT_RUNNING
    reviews = deps.agents.inputs[(RUN, 2)]["feedback"]["reviews"]
    assert [(r["user"], r["body"]) for r in reviews] == [("carol", "please log the probe")]


def test_a_review_of_an_older_commit_says_nothing_about_the_head():
    deps = StepDeps()
    run = _pr_open(deps)
    deps.github.review(7, "carol", "CHANGES_REQUESTED", "b" * 40)
    assert isinstance(steps_pr.watch_pr(deps, run), Stay)
    assert deps.agents.dispatched == []


def test_a_remediation_replaces_an_attempt_still_at_work():
    deps = StepDeps()
    run = _pr_open(deps, finished=False)
    deps.github.check(SHA, "ci", "failure")
    outcome = steps_pr.watch_pr(deps, run)
    assert deps.agents.cancelled == [(RUN, 1)] and deps.agents.dispatched == [(RUN, 2)]
    assert [j["state"] for j in outcome.status["agent"]["jobs"]] == ["cancelled", "running"]


def test_the_same_failing_head_makes_one_remediation():
    deps = StepDeps()
    run = _pr_open(deps, attempt=2, remediations={SHA: 2})  # attempt 2 ended without a new commit
    deps.github.check(SHA, "ci", "failure")
    outcome = steps_pr.watch_pr(deps, run)
    assert (outcome.to, outcome.reason) == (Phase.REVIEW_REQUIRED, "RemediationDidNotHelp")
    assert deps.agents.dispatched == []


def test_a_failing_pr_past_the_retry_cap_goes_to_review():
    deps = StepDeps()
    run = _pr_open(deps, attempt=3)
    deps.github.check(SHA, "ci", "failure")
    outcome = steps_pr.watch_pr(deps, run)
    assert (outcome.to, outcome.reason) == (Phase.REVIEW_REQUIRED, "RetryCapReached")
    assert deps.agents.dispatched == []


def test_a_pr_gone_from_view_keeps_the_run_waiting():
    deps = StepDeps()
    run = _pr_open(deps)
    deps.github.pulls.clear()
    outcome = steps_pr.watch_pr(deps, run)
    assert isinstance(outcome, Stay) and set(outcome.status) == {"lastSyncedAt"}
