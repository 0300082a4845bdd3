"""The whole story through the installed chart on the real node, once cleanly and once with the operator
pod killed at every step.

A signed Linear webhook reaches the bridge through its Service; the operator in its pod plans and posts
the plan; a signed `/foundry approve` comment approves; the agent Job's pod runs the runner with the real
Claude Code CLI against the model stand-in and opens the PR on the GitHub stand-in; CI fails once (a
check run delivered by webhook), the remediation pod runs, CI passes, the PR merges, the run is
Complete. The Job controller sets every Job's status; nothing here patches one. One chart install
serves both tickets.
"""

from __future__ import annotations

import time

import pytest

from tests.support.chart_story import (FEEDBACK_HEADING, MODEL_KEY, REPO, SUMMARY, ChartStoryBed, StoryFacts)
from tests.support.runner_kit import basic_auth, fresh_clone, git

pytestmark = [pytest.mark.node, pytest.mark.slow, pytest.mark.timeout(1500)]

# The operator's transitions for the story, as its Events on the run record them.
TRANSITIONS = [("Pending", "Analysing"), ("Analysing", "WaitingApproval"), ("WaitingApproval", "Approved"),
               ("Approved", "AgentRunning"), ("AgentRunning", "PROpen"), ("PROpen", "AgentRunning"),
               ("AgentRunning", "PROpen"), ("PROpen", "Complete")]
# What a watcher polling the run sees at the least (a phase that lasts a moment may pass unseen).
SEEN = ["WaitingApproval", "AgentRunning", "PROpen", "AgentRunning", "PROpen", "Complete"]
BOT_PURPOSES = ["approval_request", "pr_opened", "done"]


@pytest.fixture(scope="module")
def bed(real_node):
    started = time.monotonic()
    bed = ChartStoryBed(real_node).start()
    print(f"\n[chart-story] bed up in {time.monotonic() - started:.1f} s: {bed.timings}")
    try:
        yield bed
    finally:
        bed.stop()


def bot_comments(bed: ChartStoryBed, issue_id: str) -> list[dict]:
    return [c for c in bed.linear.comments_json(issue_id) if c["user"]["id"] == bed.linear.bot]


def purposes(bed: ChartStoryBed, facts: StoryFacts) -> list[str]:
    """The purpose marker of each comment Foundry wrote on the ticket, in order (one marker each)."""
    from foundry.connectors.marked_comments import find_markers

    marks = [find_markers(c["body"]) for c in bot_comments(bed, facts.issue_id)]
    assert all(len(m) == 1 and m[0][0] == facts.run for m in marks), marks
    return [m[0][1] for m in marks]


def assert_story_facts(bed: ChartStoryBed, facts: StoryFacts, tmp_path) -> dict:
    run = bed.run_object(facts.run)
    status = run["status"]
    assert status["phase"] == "Complete" and status["reason"] == "Merged", status
    # Exactly one run for the ticket, one Job per attempt, each completed by the Job controller.
    assert [r["metadata"]["name"] for r in bed.runs_of(facts.issue_id)] == [facts.run]
    jobs = sorted(bed.jobs_of(facts.run), key=lambda j: j.metadata.name)
    assert [j.metadata.name for j in jobs] == [f"{facts.run}-a1", f"{facts.run}-a2"]
    for job in jobs:
        assert job.status.succeeded == 1 and not job.status.failed, job.status
        assert [c.type for c in job.status.conditions if c.status == "True"][-1] == "Complete"
        pods = bed.core.list_namespaced_pod(bed.agent_namespace,
                                            label_selector=f"job-name={job.metadata.name}").items
        assert len(pods) == 1 and pods[0].status.phase == "Succeeded", [p.metadata.name for p in pods]
    recorded = status["agent"]["jobs"]
    assert [(j["attempt"], j["name"], j["state"]) for j in recorded] == [
        (1, f"{facts.run}-a1", "succeeded"), (2, f"{facts.run}-a2", "succeeded")], recorded
    assert all(j.get("outcome") == "pushed" and SUMMARY in (j.get("summary") or "") for j in recorded), recorded

    # One PR, from the run's branch, merged; CI failed on attempt 1's head and passed on attempt 2's.
    branch = f"foundry/{facts.run}"
    pulls = [p for (repo, _), p in bed.github.pulls.items() if repo == REPO and p.head_ref == branch]
    assert [p.number for p in pulls] == [facts.pr_number] and pulls[0].merged
    (first, failed), (second, passed) = facts.ci
    assert (failed, passed) == ("failure", "success")
    assert status["remediations"] == {first: 2}
    assert status["pr"]["number"] == facts.pr_number and status["pr"]["merged"] is True

    # The branch holds the runner's two commits (one per attempt) on main's old head.
    clone = fresh_clone(bed.github.git_url(REPO), branch, tmp_path / f"check-{facts.run}",
                        env=basic_auth(bed.github.token))
    log = git("log", "--format=%H %(trailers:key=Foundry-Attempt,valueonly,separator=)", cwd=clone).split("\n")
    commits = [line.split() for line in log if line.strip()]
    assert [c[0] for c in commits[:2]] == [second, first], commits
    assert [c[1] for c in commits[:2]] == ["2", "1"], commits
    assert git("log", "-1", "--format=%(trailers:key=Foundry-Run,valueonly)", cwd=clone).strip() == facts.run

    # One comment of each kind on the ticket, in story order.
    assert purposes(bed, facts) == BOT_PURPOSES
    assert sorted(status["comments"]) == sorted(BOT_PURPOSES)
    return status


def transitions(bed: ChartStoryBed, run: str) -> list[tuple[str, str]]:
    events = bed.core.list_namespaced_event(bed.namespace, field_selector=(
        f"involvedObject.kind=FoundryRun,involvedObject.name={run}")).items
    # event_time has microseconds; several transitions fall in one second.
    events.sort(key=lambda e: e.event_time or e.first_timestamp)
    out = []
    for e in events:
        head = (e.message or "").split(":", 1)[0]
        if " → " in head:
            before, after = head.split(" → ", 1)
            out.extend([(before, after)] * (e.count or 1))
    return out


def seen_in_order(seen: list[str], want: list[str]) -> bool:
    """`want` is a subsequence of `seen`."""
    it = iter(seen)
    return all(phase in it for phase in want)


def attempt_prompts(bed: ChartStoryBed, facts: StoryFacts) -> list[str]:
    """The first user text of each conversation the model stand-in served for this run's attempts."""
    from foundry.dev import model_wire as W

    out = []
    for r in bed.model.model_requests("messages"):
        text = "\n".join(W.user_texts(r.body))
        if r.step == 0 and facts.run in text:
            out.append(text)
    return out


def test_the_story_through_the_chart_ends_complete(bed, tmp_path):
    facts = bed.story("Greet people politely when their name is messy").play()
    print(f"\n[chart-story] clean story {facts.run}: {facts.marks}")
    status = assert_story_facts(bed, facts, tmp_path)
    assert seen_in_order(facts.phases, SEEN), facts.phases
    assert transitions(bed, facts.run) == TRANSITIONS
    # Attempt 2 was told what failed; the model key reached the model, the push token never did.
    prompts = attempt_prompts(bed, facts)
    assert len(prompts) == 2 and FEEDBACK_HEADING not in prompts[0] and FEEDBACK_HEADING in prompts[1], prompts
    assert "test_greets_someone_without_a_name" in prompts[1]
    assert any(r.headers.get("x-api-key") == MODEL_KEY for r in bed.model.model_requests())
    assert status["approvals"]["summary"] == "1/1"


def test_killing_the_operator_pod_at_every_step_changes_nothing(bed, tmp_path):
    kills: list[tuple[str, float]] = []

    def kill(step: str) -> None:
        if step == "complete":
            return
        killed = bed.kill_operator()
        kills.append((step, round(bed.wait_takeover(killed), 1)))

    facts = bed.story("Greet people politely, even after a crash", on_step=kill).play()
    print(f"\n[chart-story] killed story {facts.run}: {facts.marks}; the standby led after {kills}")
    assert [k for k, _ in kills] == ["plan-comment", "approval", "job-1-created", "pr-opened", "ci-failed",
                                     "job-2-created", "ci-passed", "merged"]
    assert_story_facts(bed, facts, tmp_path)
    # No transition was made twice (two remediations, say). The path may differ from the clean one: a CI
    # failure that lands while the operator restarts is judged straight from AgentRunning (no PROpen
    # first). An Event is posted after its status write, so a kill may lose one, never add one.
    reasons = [e.reason for e in bed.core.list_namespaced_event(bed.namespace, field_selector=(
        f"involvedObject.kind=FoundryRun,involvedObject.name={facts.run}")).items]
    once = ("Planned", "AgentStarted", "Remediating", "Merged")  # PROpened comes once per new head
    assert all(reasons.count(r) <= 1 for r in once), (reasons, transitions(bed, facts.run))
    assert facts.phases[-1] == "Complete"
    assert len(attempt_prompts(bed, facts)) == 2
