"""An operator test stand: the real API server and PostgreSQL from the pytest
plugins, the local Linear and GitHub servers, the `job` agent provider, and
helpers that play the parts no process plays here (the Job controller, the
coding agent pushing to GitHub, CI, reviewers).

Used by the operator's end-to-end tests and by tools/bench_operator.py:

    with OperatorStack.open(api, engine, namespace) as stack:
        issue, run = stack.ticket("Add a /healthz endpoint")
        with operator_thread(stack.deps, namespace):
            ...

Nothing here decides anything; it only sets the scene and reads the results.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator

from kubernetes import client

from foundry.domain.adoption import RUNNER_AUTHOR
from foundry.kube.approvals import build_approval_manifest, create_or_attach_approval
from foundry.kube.runs import TicketSnapshot, Trigger, build_run_manifest, create_or_attach
from foundry.operator.kubeio import GROUP, RUNS, VERSION
from tests.support.jobs import finish_job

REPO = "acme/app"
TEAM = "ACME"
READY_DESCRIPTION = (
    "The service needs a health endpoint for the load balancer.\n\n"
    "## Acceptance criteria\n"
    "- GET /healthz answers 200 with body `ok`\n"
    "- a test covers the endpoint\n"
)
APP_FILES = {"app/main.py": "def main():\n    return 0\n", "README.md": "# app\n"}


def runner_message(subject: str, run: str, attempt: int) -> str:
    """A commit message shaped like the runner's (foundry.runner.publish.commit_message)."""
    return f"{subject}\n\nFoundry-Run: {run}\nFoundry-Attempt: {attempt}\n"


def stack_config(**policy: Any) -> dict[str, Any]:
    """The Foundry config of the stand (a dict for foundry.config.parse_config)."""
    return {
        "trigger": {"label": "foundry"},
        "repositories": [{"name": "app", "github": REPO, "base_branch": "main",
                          "keywords": ["health", "endpoint", "service"], "paths": ["app/"]}],
        "approvers": [
            {"name": "Alice", "kubernetes": "alice", "linear": "alice@example.com", "roles": ["lead", "security"]},
            {"name": "Bob", "kubernetes": "bob", "linear": "bob@example.com", "roles": ["dev"]},
        ],
        "policy": {"approvals_required": 1, "retry_cap": 2, "budget_cap": 3, "max_changed_files": 10,
                   "roles_required": {"auth": ["security"]}, "forbidden_paths": [".github/workflows/**"],
                   **policy},
        "agent": {"provider": "job", "image": "registry.example/foundry-agent:test"},
        # The deterministic planner: these runs have no agent to plan with (tests/test_operator_plan_job.py has).
        "plan": {"mode": "heuristic"},
        # resync every second: the lost-webhook tests wait for it.
        "timeouts": {"agent_seconds": 600, "pr_wait_seconds": 60, "resync_seconds": 1},
        "linear": {"team": TEAM},
    }


@dataclass
class OperatorStack:
    api: client.ApiClient
    engine: Any
    namespace: str
    linear: Any  # foundry.dev.linear_server.LinearServer
    github: Any  # foundry.dev.github_server.GitHubServer
    deps: Any  # foundry.operator.deps.Deps
    alice_id: str
    # Each run's resourceVersion as ticket() created it: `untouched` tells whether anyone wrote since.
    created_rv: dict[str, str] = field(default_factory=dict)

    @classmethod
    @contextmanager
    def open(cls, api: client.ApiClient, engine: Any, namespace: str,
             config: dict[str, Any] | None = None, linear: Any = None) -> Iterator["OperatorStack"]:
        """`linear`: a Linear stand-in to use instead of one started here (the benchmarks pass
        tests.support.linear_process.LinearProcess, one in its own process)."""
        from foundry.agents import make_provider
        from foundry.agents.credentials import StaticTokenSource
        from foundry.config import parse_config
        from foundry.connectors.github import GitHubClient
        from foundry.connectors.linear import LinearClient
        from foundry.connectors.retry import RetryPolicy
        from foundry.db.engine import create_schema
        from foundry.operator.deps import Deps
        from foundry.dev.github_server import GitHubServer
        from foundry.dev.linear_server import LinearServer

        create_schema(engine)
        cfg = parse_config(config or stack_config())
        with (linear or LinearServer()) as linear, GitHubServer() as github:
            linear.add_team(TEAM, "Acme")
            alice_id = linear.add_user("Alice", "alice@example.com")
            github.add_repo(REPO, files=dict(APP_FILES))
            # Few, quick retries: an outage test should not sit in backoff for minutes.
            retry = RetryPolicy(max_attempts=2, base_delay=0.05, max_delay=0.2)
            # The agent's push token: the stand-in's static token (the App flow has its own tests).
            tokens = StaticTokenSource(github.token)
            deps = Deps(api=api, engine=engine, config=cfg, agents=make_provider(cfg, api, tokens),
                        linear=LinearClient(linear.api_key, url=linear.graphql_url, retry=retry),
                        github=GitHubClient(github.token, base_url=github.url, retry=retry))
            try:
                yield cls(api, engine, namespace, linear, github, deps, alice_id)
            finally:
                deps.linear.close()
                deps.github.close()

    # ---- tickets and runs ------------------------------------------------------

    def ticket(self, title: str = "Add a health endpoint to the service", description: str = READY_DESCRIPTION,
               labels: tuple[str, ...] = ("foundry",),
               before_run: Callable[[str, str], None] | None = None) -> tuple[str, str]:
        """A Linear issue and its FoundryRun, created the way the bridge does
        (claim in the database, then create-or-attach the named object).
        `before_run(issue id, run name)` plays what happens between the two (the
        run's name is computable before the run exists). Returns (issue id, run name)."""
        from foundry.db import claims
        from foundry.domain.naming import run_name

        issue_id = self.linear.create_issue(TEAM, title, description, labels=list(labels), actor_id=self.alice_id)
        if before_run is not None:
            before_run(issue_id, run_name("linear", issue_id, 1))
        issue = self.linear.issue_json(issue_id)
        updated = datetime.fromisoformat(issue["updatedAt"].replace("Z", "+00:00"))
        snapshot = TicketSnapshot(tracker="linear", issue_id=issue_id, issue_key=issue["identifier"], title=title,
                                  description=description, labels=tuple(labels), team_key=TEAM, updated_at=updated)
        claim = claims.claim_run(self.engine, tracker="linear", issue_id=issue_id, issue_key=issue["identifier"],
                                 namespace=self.namespace, ticket_updated_at=updated,
                                 name_for=lambda n: run_name("linear", issue_id, n))
        manifest = build_run_manifest(snapshot, claim.attempt,
                                      Trigger(source="webhook", delivery_id=str(uuid.uuid4())),
                                      namespace=self.namespace)
        made = create_or_attach(self.api, self.namespace, manifest)
        self.created_rv[made.name] = made.object["metadata"]["resourceVersion"]
        return issue_id, manifest["metadata"]["name"]

    def untouched(self, run: str) -> bool:
        """Nothing has written to the run (metadata or status) since ticket() created it."""
        return self.run(run)["metadata"]["resourceVersion"] == self.created_rv[run]

    def agent_running(self, approver: str = "alice") -> tuple[str, str]:
        """A ticket planned, approved and dispatched (its run in AgentRunning, Job a1 created);
        needs the operator running. Returns (issue id, run name)."""
        from tests.support.operator_kit import wait_for, wait_phase

        issue_id, run = self.ticket()
        wait_phase(self.api, self.namespace, run, "WaitingApproval")
        self.decide(run, "approve", approver)
        # Attempt 1 recorded: written with the AgentRunning phase in one status write. Polling for the
        # phase itself missed it when the run moved on at once (a pod the cluster refuses).
        wait_for(lambda: ((self.run(run).get("status") or {}).get("agent") or {}).get("jobs"),
                 timeout=30, what=f"{run} to dispatch attempt 1")
        return issue_id, run

    def run(self, name: str) -> dict[str, Any]:
        return client.CustomObjectsApi(self.api).get_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                                             RUNS, name)

    def phase(self, name: str) -> str | None:
        return (self.run(name).get("status") or {}).get("phase")

    def decide(self, run: str, decision: str = "approve", approver: str = "alice",
               source: str = "kubernetes") -> None:
        """A FoundryApproval, as `foundry approve` (source kubernetes) or the bridge (source linear) makes it.

        From Linear, the approver (an email) first writes the `/foundry <decision>` comment on
        the run's issue, as a person would; the approval names that comment."""
        comment_id = None
        if source == "linear":
            issue_id = self.run(run)["spec"]["issueId"]
            user = next((u.id for u in self.linear.users.values() if u.email == approver), None)
            user = user or self.linear.add_user(approver.split("@")[0].title(), approver)
            comment_id = self.linear.add_comment(issue_id, f"/foundry {decision}", user_id=user)
        create_or_attach_approval(self.api, self.namespace,
                                  build_approval_manifest(run, decision, approver, source, namespace=self.namespace,
                                                          comment_id=comment_id))

    # ---- the agent's Jobs --------------------------------------------------------

    def jobs(self, run: str | None = None) -> list[str]:
        selector = f"foundry.dev/run={run}" if run else "foundry.dev/run"
        items = client.BatchV1Api(self.api).list_namespaced_job(self.namespace, label_selector=selector).items
        return sorted(j.metadata.name for j in items)

    def finish_job(self, name: str, *, succeeded: bool = True) -> None:
        finish_job(self.api, self.namespace, name, succeeded=succeeded)

    # ---- GitHub: what the agent, CI and reviewers do ------------------------------

    def push(self, run: str, files: dict[str, str | None], message: str = "foundry: work") -> str:
        """The agent's runner commits to foundry/<run> (created from main on first push), as the
        runner does: authored by the Foundry agent, with its trailers for the run's current
        attempt. Returns the head SHA."""
        branch = f"foundry/{run}"
        if branch not in self.github.repos[REPO].branches:
            self.github.create_branch(REPO, branch)
        return self.github.commit(REPO, branch, files, runner_message(message, run, self._attempt(run)),
                                  author=RUNNER_AUTHOR)

    def _attempt(self, run: str) -> int:
        return int(((self.run(run).get("status") or {}).get("agent") or {}).get("attempt") or 1)

    def open_pr(self, run: str) -> int:
        return self.github.open_pr(REPO, f"foundry/{run}", f"{run}: work")

    def ci(self, sha: str, conclusion: str) -> None:
        self.github.set_check(REPO, sha, conclusion)

    def merge(self, number: int) -> None:
        self.github.merge(REPO, number)

    # ---- Linear: what Foundry wrote -------------------------------------------------

    def comment_purposes(self, issue_id: str) -> list[str]:
        """The purposes of Foundry's comments on the issue (from their hidden markers), sorted."""
        from foundry.connectors.marked_comments import find_markers

        return sorted(purpose for c in self.linear.comments_json(issue_id) for _, purpose in find_markers(c["body"]))
