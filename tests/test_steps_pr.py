"""The PR and remediation steps, called directly (foundry.operator.reconcile.steps_pr):
PROpen / ReviewRequired → Complete | Closed | Blocked | ReviewRequired | AgentRunning (remediation)."""

from __future__ import annotations

from foundry.domain.phases import Phase
from foundry.operator.reconcile import steps_pr
from foundry.operator.reconcile.outcome import Stay, Transition
from foundry.operator.reconcile.view import RunView
from tests.support.step_deps import MemoryGitHub, StepDeps, agent_running, run_view, with_attempt

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


def test_an_attempt_started_but_never_recorded_is_recorded_once_its_push_is_the_head():
    """The operator died between attempt 2's Job create and its status write; its successor
    came after attempt 2 had pushed, so nothing replayed the start. The head's author is found."""
    deps = StepDeps()
    run = _pr_open(deps)
    deps.agents.attempts[(RUN, 2)] = {"name": f"{RUN}-a2", "attempt": 2, "state": "succeeded",
                                      "finishedAt": "2026-12-03T10:00:00Z", "outcome": "pushed", "headSha": SHA}
    outcome = steps_pr.watch_pr(deps, run)
    assert isinstance(outcome, Stay)
    agent = outcome.status["agent"]
    assert agent["attempt"] == 2 and [(j["attempt"], j["state"]) for j in agent["jobs"]] == [
        (1, "succeeded"), (2, "succeeded")]
    assert deps.agents.dispatched == []  # found by reading, nothing started
    again = steps_pr.watch_pr(deps, RunView({**run.body, "status": {**run.status, **outcome.status}}))
    assert set(again.status) == {"lastSyncedAt"}  # recorded once; the head is now accounted for


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


# ---------------------------------------------------------------- plan drift (the plan names app/x.py)

PLAN = {"repo": "app", "steps": ["add /healthz"], "files": ["app/x.py"]}


class _EditableGitHub(MemoryGitHub):
    """MemoryGitHub that takes the PR step's one write, the PR body (recorded in `body_updates`)."""

    def __init__(self) -> None:
        super().__init__()
        self.body_updates: list[tuple[int, str | None]] = []

    def update_pull(self, repo: str, number: int, *, body: str | None = None) -> dict:
        self.body_updates.append((number, body))
        self.pulls[number]["body"] = body
        return self.pulls[number]


def _deps(github: MemoryGitHub | None = None) -> StepDeps:
    steps_pr._refused.clear()  # what this process was refused must not leak from one test to the next
    return StepDeps(github=github or _EditableGitHub())


def _planned(deps: StepDeps, **kw) -> RunView:
    """_pr_open with a plan that names its files (the shared fixtures' plan names none)."""
    return _pr_open(deps, **{"plan": PLAN, **kw})


def _drift_condition(outcome) -> tuple[bool, str, str]:
    (cond,) = [c for c in outcome.conditions if c.type == "PlanDrift"]
    return cond.status, cond.reason, cond.message


def _written(deps: StepDeps, run: RunView, outcome) -> RunView:
    """`run` as the API server has it once `outcome` is written (its conditions merged)."""
    from foundry.operator.status import merge_conditions

    status = {**run.status, **outcome.status,
              "conditions": merge_conditions(run.status.get("conditions"), outcome.conditions, deps.clock())}
    if isinstance(outcome, Transition):
        status["phase"] = outcome.to.value
    return RunView({**run.body, "status": status})


def test_a_pr_within_the_plan_says_so_without_an_event():
    deps = _deps()
    run = _planned(deps, files=("app/x.py", "app/helpers.py", "tests/test_x.py"))
    outcome = steps_pr.watch_pr(deps, run)
    assert _drift_condition(outcome) == (False, "WithinPlan", "every changed file is within the approved plan")
    assert outcome.events == []
    assert steps_pr.watch_pr(deps, _written(deps, run, outcome)).conditions == []  # said once


def test_files_outside_the_plan_get_the_drift_condition_and_one_warning_and_go_to_review():
    deps = _deps()
    run = _planned(deps, files=("app/x.py", "lib/util.py", "docs/notes.md"))
    outcome = steps_pr.watch_pr(deps, run)
    assert (outcome.to, outcome.reason) == (Phase.REVIEW_REQUIRED, "DiffNeedsReview")
    assert "files outside the plan: lib/util.py, docs/notes.md" in outcome.message
    status, reason, message = _drift_condition(outcome)
    assert (status, reason) == (True, "FilesOutsidePlan")
    assert message == "2 changed file(s) outside the approved plan: lib/util.py, docs/notes.md"
    assert outcome.events == [("PlanDrift", message, True)]
    # The next pass over the same head neither rewrites the condition nor warns again.
    again = steps_pr.watch_pr(deps, _written(deps, run, outcome))
    assert isinstance(again, Stay) and again.conditions == [] and again.events == []


def test_an_uncovered_risky_file_outside_the_plan_blocks_the_run_with_one_comment():
    deps = _deps()
    run = _planned(deps, files=("app/x.py", "db/migrations/0003_add.sql"), riskAreas=[])
    outcome = steps_pr.watch_pr(deps, run)
    assert (outcome.to, outcome.reason, outcome.warning) == (Phase.BLOCKED, "PlanDrift", True)
    why = "db/migrations/0003_add.sql is in risk area migrations, which the approvals did not cover"
    assert why in outcome.message
    assert _drift_condition(outcome)[:2] == (True, "RiskyFilesOutsidePlan") and why in _drift_condition(outcome)[2]
    assert outcome.events == []  # the transition's own Warning (reason PlanDrift) tells it
    assert deps.linear.purposes() == ["blocked"] and why in deps.linear.created[0].body


def test_risky_drift_the_approvals_covered_only_needs_review():
    deps = _deps()
    run = _planned(deps, files=("app/x.py", "db/migrations/0003_add.sql"), riskAreas=["migrations"])
    outcome = steps_pr.watch_pr(deps, run)
    assert (outcome.to, outcome.reason) == (Phase.REVIEW_REQUIRED, "DiffNeedsReview")
    assert _drift_condition(outcome)[:2] == (True, "FilesOutsidePlan")


def test_a_plan_without_files_judges_no_drift():
    deps = _deps()
    run = _planned(deps, files=("lib/anything.py",), plan={**PLAN, "files": []})
    outcome = steps_pr.watch_pr(deps, run)
    assert isinstance(outcome, Stay)  # still PROpen: nothing bounds the change
    assert _drift_condition(outcome)[:2] == (False, "PlanNamesNoFiles") and outcome.events == []


def test_drift_is_flagged_once_in_the_pr_body_and_taken_out_when_the_head_is_back_within_the_plan():
    deps = _deps()
    run = _planned(deps, files=("app/x.py", "lib/util.py"))
    deps.github.pulls[7]["body"] = "## Approved plan\n\nadd /healthz\n"
    outcome = steps_pr.watch_pr(deps, run)
    ((number, body),) = deps.github.body_updates
    assert number == 7 and body.startswith("## Approved plan\n\nadd /healthz\n\n<!-- foundry:plan-drift -->")
    assert "## Plan drift" in body and "- `lib/util.py`" in body and "`app/x.py`" not in body
    # Later passes over the same head find the section and leave the body alone.
    steps_pr.watch_pr(deps, _written(deps, run, outcome))
    assert len(deps.github.body_updates) == 1
    # A remediation's runner rewrote the body (no section) and the head stays drifted: flagged again, once.
    deps.github.pulls[7]["body"] = "## What the agent did (attempt 2)\n\nfixed CI\n"
    steps_pr.watch_pr(deps, _written(deps, run, outcome))
    assert deps.github.body_updates[-1][1].count("<!-- foundry:plan-drift -->") == 1
    # A new head within the plan: the section goes, the rest stays.
    deps.github.files[7] = [{"filename": "app/x.py", "status": "modified", "additions": 1, "deletions": 0}]
    steps_pr.watch_pr(deps, _written(deps, run, outcome))
    assert deps.github.body_updates[-1][1] == "## What the agent did (attempt 2)\n\nfixed CI\n"


def test_a_blocked_run_says_why_in_the_pr_body_too():
    deps = _deps()
    run = _planned(deps, files=("app/x.py", "db/migrations/0003_add.sql"), riskAreas=[])
    outcome = steps_pr.watch_pr(deps, run)
    assert outcome.to == Phase.BLOCKED
    (_, body), = deps.github.body_updates
    assert "Foundry blocked this run: `db/migrations/0003_add.sql` (risk area migrations" in body


def test_no_drift_writes_no_body():
    deps = _deps()
    steps_pr.watch_pr(deps, _planned(deps, files=("app/x.py",)))
    steps_pr.watch_pr(deps, _planned(_deps(), files=("lib/y.py",), plan={**PLAN, "files": []}))
    assert deps.github.body_updates == []


def test_a_refused_body_edit_does_not_hold_the_run():
    from foundry.connectors.errors import ServerError, Unauthorized

    class Refusing(_EditableGitHub):
        def __init__(self, error: Exception) -> None:
            super().__init__()
            self.error = error
            self.asked = 0

        def update_pull(self, repo, number, *, body=None):
            self.asked += 1
            raise self.error

    for error, asked in ((Unauthorized("update_pull", "acme/app#7", "Resource not accessible by integration",
                                       status=403), 1),  # refused for good: not asked again for that body
                         (ServerError("update_pull", "acme/app#7", "boom", status=502), 2)):  # tried each pass
        deps = _deps(Refusing(error))
        run = _planned(deps, files=("app/x.py", "lib/util.py"))
        outcome = steps_pr.watch_pr(deps, run)
        assert (outcome.to, outcome.reason) == (Phase.REVIEW_REQUIRED, "DiffNeedsReview")
        assert _drift_condition(outcome)[:2] == (True, "FilesOutsidePlan")
        steps_pr.watch_pr(deps, _written(deps, run, outcome))
        assert deps.github.asked == asked
        # A head that drifts differently asks for a different body: that is asked for.
        deps.github.files[7].append({"filename": "lib/more.py", "status": "added", "additions": 1, "deletions": 0})
        steps_pr.watch_pr(deps, _written(deps, run, outcome))
        assert deps.github.asked == asked + 1


def test_a_forbidden_file_outside_the_plan_blocks_as_forbidden_and_is_named_as_drift():
    deps = _deps()
    run = _planned(deps, files=("app/x.py", ".github/workflows/ci.yml"))
    outcome = steps_pr.watch_pr(deps, run)
    assert (outcome.to, outcome.reason) == (Phase.BLOCKED, "ForbiddenPath")
    status, reason, message = _drift_condition(outcome)
    assert (status, reason) == (True, "RiskyFilesOutsidePlan")
    assert ".github/workflows/ci.yml matches forbidden path .github/workflows/**" in message
    (_, body), = deps.github.body_updates
    assert "`.github/workflows/ci.yml` (forbidden path)" in body
    assert deps.linear.purposes() == ["blocked"]


def test_a_remediation_starts_only_for_the_approved_plan_as_it_stands():
    """The third path into AgentRunning (after dispatch and a retry): a PR's remediation is guarded too."""
    import pytest

    from foundry.operator.errors import CannotReconcile
    from tests.support.step_deps import PLAN

    deps = StepDeps()
    run = _pr_open(deps, plan={**PLAN, "files": ["app/", "deploy/prod.yaml"]})  # edited after approval
    deps.github.check(SHA, "unit tests", "failure",
                      output={"title": "2 failed", "summary": "", "text": "", "annotations_count": 0})
    with pytest.raises(CannotReconcile) as err:
        steps_pr.watch_pr(deps, run)
    assert err.value.reason == "PlanNotApproved" and "is not the plan's hash" in str(err.value)
    assert (RUN, 2) not in deps.agents.dispatched
