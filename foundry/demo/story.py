"""The demo's story, played on a running LocalStack.

A ticket labelled twice at once → one run → the agent, read-only, writes the
plan → an approval comment naming the plan's hash → the local agent, given
that hash, commits and opens a PR → CI fails once → Foundry retries → CI
passes → the PR is merged → the run is Complete. Every step acts only through the
outside world (Linear and GitHub stand-ins); Foundry's bridge and operator do
the rest, and the story watches the FoundryRun to see them do it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundry.demo import example_repo
from foundry.demo.ci import run_tests
from foundry.demo.progress import Progress
from foundry.demo.stack import LocalStack, StackError
from foundry.kube.crds import GROUP, VERSION

TRIGGER_LABELS = (["foundry", "repo:greeter"], ["foundry", "repo:greeter", "backend"])


class StoryFailed(RuntimeError):
    """The story could not reach its next step; the message says where it stopped and why."""


@dataclass
class StoryResult:
    run: str | None = None
    phase: str | None = None
    issue_id: str | None = None
    issue_key: str | None = None
    pr_number: int | None = None
    ci: list[tuple[str, str]] = field(default_factory=list)  # (head sha, conclusion)
    plan_hash: str | None = None  # status.plan.hash of the agent's plan
    plan_files: list[str] = field(default_factory=list)
    approved_hash: str | None = None  # the FoundryApproval's spec.planHash
    # attempt → (input.json planHash, the runner's result planHash), from the local provider's folder
    attempt_plans: dict[int, tuple[str | None, str | None]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.phase == "Complete"


class Story:
    def __init__(self, stack: LocalStack, progress: Progress, *, confirm: Callable[[str], None] | None = None,
                 step_timeout: float = 90.0) -> None:
        self.stack = stack
        self.progress = progress
        self.confirm = confirm or (lambda _prompt: None)
        self.step_timeout = step_timeout
        self.result = StoryResult()
        self._phases_seen: list[str] = []

    # ---- the story --------------------------------------------------------------

    def play(self) -> StoryResult:
        linear, stack = self.stack.linear, self.stack
        issue_id = linear.create_issue("ACME", example_repo.TICKET_TITLE, example_repo.TICKET_DESCRIPTION,
                                       actor_id=stack.alice_id)
        self.result.issue_id = issue_id
        self.result.issue_key = linear.issue_json(issue_id)["identifier"]
        self.progress.step(f"Linear: {self.result.issue_key} “{example_repo.TICKET_TITLE}” created (not labelled yet)")

        self._label_twice_at_once(issue_id)
        run = self._the_one_run(issue_id)
        self.result.run = run["metadata"]["name"]
        self.progress.step(f"one FoundryRun for two label webhooks: {self.result.run}")

        self._wait_phase("WaitingApproval", "the agent to read the repository and write the plan (read-only)")
        short = self._show_plan(issue_id)

        approve = f"/foundry approve {short}"
        self.confirm(f"Press Enter to approve as Alice (posts `{approve}` on {self.result.issue_key}) ")
        linear.add_comment(issue_id, approve, user_id=stack.alice_id)
        self.progress.step(f"Linear: Alice commented `{approve}`: she approves this plan, and no other")

        self._wait_phase("AgentRunning", "the approval to reach the operator and the local agent to start")
        self._show_approval()
        self.progress.step("the local agent is running (attempt 1)")
        number = self._wait_pr()
        self.result.pr_number = number
        self.progress.step(f"GitHub: the agent opened PR #{number} from branch foundry/{self.result.run}")

        # CI reports once the runner has finished (a failure seen while it still writes its
        # report would have the operator replace the attempt before it reported).
        self._wait_attempt_done(1)
        self._attempt_plan(1)
        self.progress.step(f"attempt 1 was given plan {short} (input.json planHash), and its runner's result "
                           "records it")
        first = self._run_ci(number, expect="failure")
        self.progress.step(f"CI failed on {first[:8]} (the first attempt forgot the empty name)")
        self._wait_attempt(2)
        self.progress.step("Foundry retried: attempt 2 on the same branch, with the CI failure as feedback")
        second = self._run_ci(number, expect="success", after=first)
        self.progress.step(f"CI passed on {second[:8]}")

        self._wait_pr_seen(second)
        report = self._wait_attempt_done(2)
        self._attempt_plan(2)
        self.progress.step(f"the runner reported: {report.get('outcome')}, {report.get('filesChanged')} files, "
                           f"head {str(report.get('headSha'))[:8]}, plan {short}: {report.get('summary')}")
        self.confirm(f"Press Enter to merge PR #{number} ")
        stack.github.submit_review(example_repo.REPO, number, "octocat", "APPROVED", "Looks good, thanks!")
        stack.github.merge(example_repo.REPO, number)
        self.progress.step(f"GitHub: PR #{number} approved and merged")

        self._wait_phase("Complete", "the operator to see the merge")
        self.progress.step(f"{self.result.run} is Complete")
        return self.result

    # ---- the plan and what binds to it -------------------------------------------------

    def _show_plan(self, issue_id: str) -> str:
        """The agent's plan as the run holds it and the ticket shows it; its short hash."""
        from foundry.domain.plan_status import short

        status = self._status()
        plan = status.get("plan") or {}
        if plan.get("source") != "agent" or not plan.get("hash"):
            raise StoryFailed(f"the run's plan was not written by the agent (source {plan.get('source')!r}); "
                              f"the operator log is {self.stack.logs_dir / 'operator.log'}")
        self.result.plan_hash, self.result.plan_files = plan["hash"], list(plan.get("files") or [])
        job = (status.get("planJob") or {}).get("name") or "its plan job"
        self.progress.step(f"the agent wrote the plan, read-only ({job}): plan {plan['hash'][:19]}…, "
                           f"revision {plan.get('revision')}")
        agent = plan.get("agent") or {}
        for f in agent.get("files") or []:
            self.progress.note(f"{f.get('path')}: {_clip(str(f.get('why')), 110)}")
        self.progress.note(f"tests: {len(agent.get('tests') or [])}, risks: {len(agent.get('risks') or [])}, "
                           f"open questions: {len(agent.get('openQuestions') or [])}")
        bodies = [c["body"] for c in self.stack.linear.comments_json(issue_id)]
        posted = any(plan["hash"] in b or short(plan["hash"]) in b for b in bodies)
        if not posted:
            raise StoryFailed(f"no comment on {self.result.issue_key} shows plan {short(plan['hash'])}")
        self.progress.step(f"Linear: Foundry posted the plan with its hash {short(plan['hash'])} "
                           "and asked Alice to approve")
        return short(plan["hash"])

    def _show_approval(self) -> None:
        """Alice's FoundryApproval names the plan's hash, and the operator counted it for that hash."""
        from foundry.cli.runs import approval_objects

        approvals = approval_objects(self.stack.api, self.stack.namespace, self.result.run)
        named = [(a["metadata"]["name"], (a.get("spec") or {}).get("planHash")) for a in approvals]
        counted = (self._status().get("approvals") or {}).get("planHash")
        if not named or any(h != self.result.plan_hash for _, h in named) or counted != self.result.plan_hash:
            raise StoryFailed(f"the approval is not bound to plan {self.result.plan_hash}: approvals {named}, "
                              f"counted for {counted}")
        self.result.approved_hash = named[0][1]
        self.progress.step(f"FoundryApproval {named[0][0]} names plan {str(named[0][1])[:19]}…, "
                           "the hash the operator counted it for")

    def _attempt_plan(self, attempt: int) -> tuple[str | None, str | None]:
        """(input.json planHash, the runner's result planHash) of an attempt, from its local folder."""
        from foundry.agents.provider import attempt_name

        folder = self.stack.agent_workdir / self.stack.namespace / attempt_name(self.result.run, attempt)
        given, recorded = (_json_field(folder / name, "planHash") for name in ("input.json", "result.json"))
        self.result.attempt_plans[attempt] = (given, recorded)
        if given != self.result.plan_hash or recorded != given:
            raise StoryFailed(f"attempt {attempt} was given plan {given} and its runner recorded {recorded}, "
                              f"not the approved {self.result.plan_hash} (see {folder})")
        return given, recorded

    # ---- steps --------------------------------------------------------------------

    def _label_twice_at_once(self, issue_id: str) -> None:
        """Two people add the trigger label at the same moment: two signed webhooks race to the bridge."""
        barrier = threading.Barrier(len(TRIGGER_LABELS))
        errors: list[BaseException] = []

        def label(labels: list[str]) -> None:
            try:
                barrier.wait(10)
                self.stack.linear.update_issue(issue_id, labels=labels, actor_id=self.stack.alice_id)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=label, args=(labels,)) for labels in TRIGGER_LABELS]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        if errors:
            raise StoryFailed(f"labelling the ticket failed: {errors[0]}")
        sent = [d for d in self.stack.linear.deliveries if d.event == "Issue" and d.payload.get("action") == "update"]
        self.progress.step(f"Linear: the `foundry` label was added twice at once ({len(sent)} webhooks)")

    def _the_one_run(self, issue_id: str) -> dict[str, Any]:
        runs = self._wait(lambda: self._runs_of(issue_id) or None, "the bridge to create the run")
        # Let both deliveries land before counting: the point is that the second made no run.
        self.stack.linear.wait_webhooks(30)
        runs = self._runs_of(issue_id)
        if len(runs) != 1:
            raise StoryFailed(f"expected one FoundryRun for the issue, found {len(runs)}: "
                              f"{[r['metadata']['name'] for r in runs]}")
        return runs[0]

    def _wait_pr(self) -> int:
        def open_pr() -> int | None:
            pulls = [p for (repo, _), p in self.stack.github.pulls.items() if repo == example_repo.REPO]
            return pulls[0].number if pulls else None

        return self._wait(open_pr, "the agent to open a pull request")

    def _run_ci(self, number: int, *, expect: str, after: str | None = None) -> str:
        """Run the tests on the PR's head (a new head, if `after` is given) and report the check."""
        github = self.stack.github

        def head() -> str | None:
            sha = github.pulls[(example_repo.REPO, number)].head_sha
            return sha if sha != after else None

        sha = self._wait(head, "a new commit on the pull request")
        with self.progress.waiting(f"CI is running the tests on {sha[:8]}"):
            github.set_check(example_repo.REPO, sha, None, name="tests", status="in_progress")
            outcome = run_tests(dict(github.commits[sha].tree))
            github.set_check(example_repo.REPO, sha, outcome.conclusion, name="tests")
        self.result.ci.append((sha, outcome.conclusion))
        if outcome.conclusion != expect:
            raise StoryFailed(f"CI on {sha[:8]} was {outcome.conclusion}, the story expected {expect}:\n{outcome.output}")
        return sha

    def _wait_attempt(self, attempt: int) -> None:
        def started() -> bool:
            status = self._status()
            jobs = (status.get("agent") or {}).get("jobs") or []
            return any(j.get("attempt") == attempt for j in jobs) or None  # type: ignore[return-value]

        self._wait(started, f"the operator to start agent attempt {attempt}")

    def _wait_attempt_done(self, attempt: int) -> dict[str, Any]:
        """The attempt's record once its runner has finished (a merge before that would cancel it
        between its push and its report)."""
        def done() -> dict[str, Any] | None:
            jobs = (self._status().get("agent") or {}).get("jobs") or []
            job = next((j for j in jobs if j.get("attempt") == attempt), None)
            return job if job and job.get("state") in ("succeeded", "failed") else None

        return self._wait(done, f"agent attempt {attempt} to finish and report")

    def _wait_pr_seen(self, sha: str) -> None:
        """Merge only once the operator has looked at the passing head, so the story shows each step."""
        def seen() -> bool | None:
            status = self._status()
            head = (status.get("pr") or {}).get("headSha")
            return (status.get("phase") == "PROpen" and head in (None, sha)) or None

        self._wait(seen, "the operator to see the passing checks")

    # ---- watching -------------------------------------------------------------------

    def _runs_of(self, issue_id: str) -> list[dict[str, Any]]:
        from kubernetes import client

        from foundry.domain.naming import label_value
        from foundry.kube.runs import LABEL_ISSUE_ID

        return client.CustomObjectsApi(self.stack.api).list_namespaced_custom_object(
            GROUP, VERSION, self.stack.namespace, "foundryruns",
            label_selector=f"{LABEL_ISSUE_ID}={label_value(issue_id)}")["items"]

    def _status(self) -> dict[str, Any]:
        from kubernetes import client

        obj = client.CustomObjectsApi(self.stack.api).get_namespaced_custom_object(
            GROUP, VERSION, self.stack.namespace, "foundryruns", self.result.run)
        status = obj.get("status") or {}
        phase = status.get("phase")
        if phase and (not self._phases_seen or self._phases_seen[-1] != phase):
            self._phases_seen.append(phase)
            self.progress.note(f"phase → {phase}" + (f" ({status.get('reason')})" if status.get("reason") else ""))
        self.result.phase = phase
        return status

    def _wait_phase(self, phase: str, what: str) -> None:
        from foundry.domain.phases import Phase

        def reached() -> bool | None:
            status = self._status()
            current = status.get("phase")
            if current == phase:
                return True
            if current and Phase(current).is_terminal:
                raise StoryFailed(f"the run ended as {current} while waiting for {phase}: "
                                  f"{status.get('reason')}: {status.get('message')}")
            return None

        self._wait(reached, what)

    def _wait(self, check: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + self.step_timeout
        with self.progress.waiting(f"waiting for {what}"):
            while True:
                try:
                    self.stack.check_alive()
                except StackError as exc:
                    raise StoryFailed(str(exc)) from None
                value = check()
                if value:
                    return value
                if time.monotonic() > deadline:
                    phase = f" (the run is {self.result.phase})" if self.result.phase else ""
                    raise StoryFailed(f"gave up after {self.step_timeout:g}s waiting for {what}{phase}; "
                                      f"the logs are in {self.stack.logs_dir}")
                time.sleep(0.25)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_field(path: Path, key: str) -> Any:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc.get(key) if isinstance(doc, dict) else None
