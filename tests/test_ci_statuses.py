"""CI that reports through commit statuses (GitHub's older API), not check runs, is seen:
the PR's `checks` verdict reads the combined status as well, and a failing status remediates."""

from __future__ import annotations

from typing import Iterator

import pytest

from foundry.connectors.github import GitHubClient
from foundry.dev.github_server import GitHubServer
from foundry.domain.phases import Phase
from foundry.operator.reconcile import steps_pr
from foundry.operator.reconcile.outcome import Stay, Transition
from foundry.operator.reconcile.prtruth import ci_verdict, summarise_statuses
from tests.support.step_deps import StepDeps, agent_running, run_view, with_attempt

RUN = "linear-acme-1-a1"
SHA = "a" * 40
REPO = "acme/api"


def _status(state: str, context: str = "ci/jenkins", id_: int = 1, description: str = "") -> dict:
    return {"id": id_, "state": state, "context": context, "description": description}


def _pr_open(deps: StepDeps) -> object:
    """A run whose PR #7 (head SHA) was adopted and whose only attempt has finished."""
    run = with_attempt(deps, agent_running(jobs=[], attempt=1), 1)
    deps.agents.finish(run, 1, "succeeded", outcome="pushed")
    pull = deps.github.open_pull(run, sha=SHA, files=("app/x.py",), attempt=1)
    base = {k: v for k, v in run.status.items() if k != "phase"}
    base["agent"] = {**base["agent"], "jobs": [{**j, **deps.agents.state(run.body, j["attempt"])} for j in run.jobs]}
    base["pr"] = {"number": 7, "url": pull["html_url"], "branch": run.branch, "headSha": SHA, "state": "open",
                  "merged": False, "checks": "none", "review": "none"}
    base["comments"] = {"pr_opened": "c-earlier"}
    return run_view("PROpen", **base)


def test_a_failing_status_alone_starts_a_remediation_told_what_failed() -> None:
    deps = StepDeps()
    run = _pr_open(deps)
    deps.github.statuses[SHA] = [_status("failure", description="3 tests failed")]
    outcome = steps_pr.watch_pr(deps, run)
    assert isinstance(outcome, Transition)
    assert (outcome.to, outcome.reason) == (Phase.AGENT_RUNNING, "Remediating")
    assert deps.agents.dispatched == [(RUN, 2)]
    feedback = deps.agents.inputs[(RUN, 2)]["feedback"]
    assert feedback["reason"] == "CI failed" and feedback["checks"] == []
    assert feedback["statuses"] == [{"context": "ci/jenkins", "state": "failure", "description": "3 tests failed"}]


def test_a_passing_status_alone_is_recorded_and_the_run_waits() -> None:
    deps = StepDeps()
    run = _pr_open(deps)
    deps.github.statuses[SHA] = [_status("pending", id_=1), _status("success", id_=2)]
    outcome = steps_pr.watch_pr(deps, run)
    assert isinstance(outcome, Stay) and outcome.status["pr"]["checks"] == "success"
    assert deps.agents.dispatched == []


def test_a_pending_status_holds_a_failing_check_until_all_of_ci_has_spoken() -> None:
    deps = StepDeps()
    run = _pr_open(deps)
    deps.github.check(SHA, "unit tests", "failure")
    deps.github.statuses[SHA] = [_status("pending")]
    outcome = steps_pr.watch_pr(deps, run)
    assert isinstance(outcome, Stay) and outcome.status["pr"]["checks"] == "pending"
    deps.github.statuses[SHA].append(_status("success", id_=2))
    outcome = steps_pr.watch_pr(deps, run)
    assert isinstance(outcome, Transition) and outcome.reason == "Remediating"


@pytest.mark.parametrize("statuses, verdict", [
    ([], "none"),
    ([_status("error")], "failure"),
    ([_status("failure", id_=1), _status("success", id_=2)], "success"),  # re-reported: the newest counts
    ([_status("success", "a"), _status("failure", "b", 2)], "failure"),
    ([_status("success", "a"), _status("pending", "b", 2)], "pending"),
])
def test_the_statuses_verdict(statuses: list, verdict: str) -> None:
    assert summarise_statuses({"statuses": statuses}) == verdict


@pytest.mark.parametrize("checks, statuses, verdict", [
    ("none", "none", "none"), ("success", "none", "success"), ("none", "failure", "failure"),
    ("success", "failure", "failure"), ("failure", "pending", "pending"), ("success", "success", "success"),
])
def test_check_runs_and_statuses_together(checks: str, statuses: str, verdict: str) -> None:
    assert ci_verdict(checks, statuses) == verdict


@pytest.fixture
def gh() -> Iterator[GitHubServer]:
    with GitHubServer() as server:
        server.add_repo(REPO, files={"README.md": "# api\n"})
        yield server


def test_the_combined_status_as_github_serves_it(gh: GitHubServer) -> None:
    sha = gh.commit(REPO, "foundry/x", {"app.py": "x = 1\n"}, "work")
    with GitHubClient(gh.token, base_url=gh.url) as client:
        nothing = client.combined_status(REPO, sha)
        # GitHub: "pending" with no status at all; Foundry must not read that as CI at work.
        assert (nothing["state"], nothing["total_count"]) == ("pending", 0)
        assert summarise_statuses(nothing) == "none"
        gh.set_status(REPO, sha, "pending", context="ci/jenkins")
        gh.set_status(REPO, sha, "failure", context="ci/jenkins", description="2 failed")
        failed = client.combined_status(REPO, sha)
    assert failed["state"] == "failure" and summarise_statuses(failed) == "failure"
