"""The whole story through the installed chart on the real node, once cleanly and once with the operator
pod killed at every step.

A signed Linear webhook reaches the bridge through its Service; the operator in its pod plans and posts
the plan; a signed `/foundry approve` comment approves; the agent Job's pod runs the runner with the real
Claude Code CLI against the model stand-in and opens the PR on the GitHub stand-in; CI fails once (a
check run delivered by webhook), the remediation pod runs, CI passes, the PR merges, the run is
Complete. The Job controller sets every Job's status; nothing here patches one. One chart install
serves both tickets.

While the clean story's run waits for approval, the operator Deployment rolls (`helm upgrade`, two
replicas, one pod at a time): every handover of the Lease, from the old holder's pod beginning to
terminate to the new holder's acquiring, is shorter than the chart's lease duration, and the approval,
given once the Lease has moved, is acted on within one lease duration too. FOUNDRY_STORY_ROLLS=N rolls
N times (the extra ones before the approval), for docs/benchmarks.md's figures.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass, field

import pytest
import yaml

from tests.support.chart_story import (FEEDBACK_HEADING, LEASE, MODEL_KEY, PLAN_SUMMARY, REPO, SUMMARY,
                                       ChartStoryBed, StoryFacts)
from tests.support.helmchart import CHART
from tests.support.operator_roll import Handover, RollWatch
from tests.support.runner_kit import basic_auth, fresh_clone, git

pytestmark = [pytest.mark.node, pytest.mark.slow, pytest.mark.timeout(1500)]

# The operator's transitions for the story, as its Events on the run record them.
TRANSITIONS = [("Pending", "Analysing"), ("Analysing", "WaitingApproval"), ("WaitingApproval", "Approved"),
               ("Approved", "AgentRunning"), ("AgentRunning", "PROpen"), ("PROpen", "AgentRunning"),
               ("AgentRunning", "PROpen"), ("PROpen", "Complete")]
# What a watcher polling the run sees at the least (a phase that lasts a moment may pass unseen).
SEEN = ["WaitingApproval", "AgentRunning", "PROpen", "AgentRunning", "PROpen", "Complete"]
BOT_PURPOSES = ["approval_request", "pr_opened", "done"]
LEASE_DURATION = yaml.safe_load((CHART / "values.yaml").read_text())["operator"]["leaderElection"][
    "leaseDurationSeconds"]
ROLLS = int(os.environ.get("FOUNDRY_STORY_ROLLS", "1"))


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
    # First the plan Job (the real Claude Code in plan mode wrote the plan approvers read), then the attempts.
    jobs = sorted(bed.jobs_of(facts.run), key=lambda j: j.metadata.name)
    assert [j.metadata.name for j in jobs] == [f"{facts.run}-a1", f"{facts.run}-a2"]
    plan_job = bed.batch.read_namespaced_job(f"{facts.run}-p1", bed.agent_namespace)
    assert plan_job.status.succeeded == 1 and not plan_job.status.failed, plan_job.status
    assert facts.plan["source"] == "agent" and facts.plan["job"] == f"{facts.run}-p1", facts.plan
    assert facts.plan["files"] == ["greeter.py", "test_greeter.py"] and facts.plan["goal"] == PLAN_SUMMARY
    assert status["plan"]["hash"] == facts.plan["hash"] == status["approvals"]["planHash"]
    for job in jobs:
        assert job.status.succeeded == 1 and not job.status.failed, job.status
        assert [c.type for c in job.status.conditions if c.status == "True"][-1] == "Complete"
        pods = bed.core.list_namespaced_pod(bed.agent_namespace,
                                            label_selector=f"job-name={job.metadata.name}").items
        assert len(pods) == 1 and pods[0].status.phase == "Succeeded", [p.metadata.name for p in pods]
    recorded = status["agent"]["jobs"]
    assert [(j["attempt"], j["name"], j["state"]) for j in recorded] == [
        (1, f"{facts.run}-a1", "succeeded"), (2, f"{facts.run}-a2", "succeeded")], recorded
    assert all(j.get("planHash") == facts.plan["hash"] for j in recorded), recorded  # what ran is what was approved
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
        if r.step == 0 and facts.run in text and W.declared_mode(r.body) != "plan":  # not the plan Job's
            out.append(text)
    return out


@dataclass
class Roll:
    before: set[str]  # the operator pods before the roll
    watch: RollWatch
    thread: threading.Thread | None = None
    failed: list[BaseException] = field(default_factory=list)


class RollDuringStory:
    """Rolls the operator while the run waits for approval; the story approves once the Lease has moved.

    on_step("plan-comment") rolls ROLLS - 1 times to the end, then starts the last roll and returns once
    the Lease has a new holder (the old one's pod terminating); the story then approves, and by
    "pr-opened" (attempt 1's pod ran meanwhile) the last roll is over."""

    def __init__(self, bed: ChartStoryBed, rolls: int) -> None:
        self.bed, self.rolls = bed, rolls
        self.handovers: list[Handover] = []
        self.roll_seconds: list[float] = []
        self.logs: dict[str, list[str]] = {}
        self.approved_at = self.job_at = 0.0
        self._last: Roll | None = None

    def on_step(self, step: str) -> None:
        if step == "plan-comment":
            for n in range(1, self.rolls):
                self._finish(self._start(n))
            self._last = self._start(self.rolls)
            try:
                self._last.watch.wait(lambda s: len(s.holders) > 1, 240, "the Lease to change hands during the roll")
            except BaseException:
                self._finish(self._last)
                raise
        elif step == "approval":
            self.approved_at = time.monotonic()
        elif step == "job-1-created":
            self.job_at = time.monotonic()
        elif step == "pr-opened":
            assert self._last is not None
            self._finish(self._last)
            self._last = None

    def _start(self, n: int) -> "Roll":
        roll = Roll(before={p.metadata.name for p in self.bed.operator_pods()},
                    watch=RollWatch(self.bed.api, self.bed.namespace, LEASE, self.bed.operator_selector()))
        roll.watch.__enter__()

        def upgrade() -> None:
            t0 = time.monotonic()
            try:
                self.bed.roll_operator(str(n))
            except BaseException as err:  # noqa: BLE001 - raised again by _finish on the test's thread
                roll.failed.append(err)
            self.roll_seconds.append(round(time.monotonic() - t0, 1))

        roll.thread = threading.Thread(target=upgrade, name=f"roll-{n}", daemon=True)
        roll.thread.start()
        return roll

    def _finish(self, roll: "Roll") -> None:
        try:
            assert roll.thread is not None
            roll.thread.join(360)
            if roll.failed:
                raise roll.failed[0]
            # helm --wait returns once the new pods are ready; the last old one may still be stopping.
            roll.watch.wait(lambda s: roll.before <= set(s.terminating) and s.holders[-1][0] not in s.terminating,
                            90, "every old operator pod to terminate and a new pod to hold the Lease")
        finally:
            roll.watch.__exit__(None, None, None)
        self.handovers += roll.watch.samples.handovers()
        self.logs.update(roll.watch.samples.logs)

    def check(self) -> None:
        gaps = [h.gap for h in self.handovers]
        print(f"\n[chart-story] {self.rolls} roll(s) in {self.roll_seconds} s; handovers "
              f"{[(h.old[-5:], h.new[-5:], None if h.gap is None else round(h.gap, 2)) for h in self.handovers]}"
              + (f"; gap p50 {statistics.median(gaps):.2f} s, max {max(gaps):.2f} s" if None not in gaps else "")
              + f"; approval to Job {self.job_at - self.approved_at:.1f} s")
        for pod, lines in self.logs.items():  # the old holder's shutdown, as its log tells it
            said = [line[:200] for line in lines if any(w in line for w in ("SIGTERM", "leading", "released"))]
            print(f"[chart-story] {pod}: {said}")
        assert len(self.handovers) >= self.rolls, self.handovers  # each roll moved the Lease at least once
        slow = [h for h in self.handovers if h.gap is None or h.gap >= LEASE_DURATION]
        assert not slow, (f"handovers of {LEASE_DURATION} s or more (or from a pod that never stopped): {slow}\n"
                          + "\n".join(f"--- {pod}\n" + "\n".join(lines[-40:]) for pod, lines in self.logs.items()))
        assert self.job_at - self.approved_at < LEASE_DURATION, "the approval waited out a lease duration"


def test_the_story_through_the_chart_ends_complete(bed, tmp_path):
    roll = RollDuringStory(bed, ROLLS)
    facts = bed.story("Greet people politely when their name is messy", on_step=roll.on_step).play()
    print(f"\n[chart-story] clean story {facts.run}: {facts.marks}")
    roll.check()
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
