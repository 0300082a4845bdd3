"""In-memory Deps for calling one reconcile step directly (tests/test_steps_*.py).

A step is `(deps, run) -> Transition | Stay`; these tests call it with the
few things it talks to held in memory, and assert what it chose and what it
asked the world to do. Each stand-in keeps the shape of the real answers it
replaces, so the step runs the same code it runs in production:

- MemoryKube: a kubernetes ApiClient whose transport answers the two calls a
  step makes (list a run's FoundryApprovals by label, post an Event);
- MemoryLinear: comments (list, create, get) and the viewer, with the real
  LinearComment records;
- MemoryGitHub: pulls, commits, files, check runs, statuses, reviews in
  GitHub's REST payload shapes;
- MemoryAgents: the agent provider (dispatch, state, cancel; and the same for
  plan Jobs), idempotent per (run, attempt) and (run, plan) like the real ones;
- the database: SQLite in memory with the models' schema (its partial unique
  index is the same one-active-run guard as PostgreSQL's).

The real-server tests (tests/test_operator_*.py) still prove the steps against
the API server, PostgreSQL and the Linear/GitHub stand-ins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client
from kubernetes.client import rest
from sqlalchemy import Engine

from foundry.config import FoundryConfig, parse_config
from foundry.connectors.errors import NotFound
from foundry.connectors.linear import LinearComment
from foundry.db.engine import create_schema, make_engine
from foundry.domain.adoption import RUNNER_AUTHOR
from foundry.domain import plan_status
from foundry.domain.naming import approval_name
from foundry.operator.leadership import AlwaysLeading
from foundry.operator.locks import RunLocks
from foundry.operator.metrics import OperatorMetrics
from foundry.operator.reconcile import prtruth, steps_approval
from foundry.operator.reconcile.view import RunView

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
REPO = "acme/app"
VIEWER = "user-foundry"


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def config(plan_mode: str = "heuristic", **policy: Any) -> FoundryConfig:
    """One repository, two approvers (Alice covers auth), one approval required; plans by the
    deterministic planner unless `plan_mode` is "agent" (a plan Job, the Claude Code runner)."""
    return parse_config({
        "plan": {"mode": plan_mode},
        "trigger": {"label": "foundry"},
        "repositories": [{"name": "app", "github": REPO, "base_branch": "main",
                          "keywords": ["health", "endpoint"], "paths": ["app/"]}],
        "approvers": [
            {"name": "Alice", "kubernetes": "alice", "linear": "alice@example.com", "roles": ["lead", "security"]},
            {"name": "Bob", "kubernetes": "bob", "linear": "bob@example.com", "roles": ["dev"]},
        ],
        "policy": {"approvals_required": 1, "retry_cap": 2, "budget_cap": 3, "max_changed_files": 10,
                   "roles_required": {"auth": ["security"]}, "forbidden_paths": [".github/workflows/**"],
                   **policy},
        "agent": {"provider": "job", "image": "registry.example/foundry-agent:test",
                  "runner": {"name": "claude-code"}},
        "timeouts": {"agent_seconds": 600, "pr_wait_seconds": 60, "resync_seconds": 1, "approval_seconds": 3600},
    })


# --- Kubernetes ---------------------------------------------------------------------------------

class _Answer:
    """What urllib3 would hand the client: status, reason, bytes, headers."""

    def __init__(self, status: int, payload: Any) -> None:
        self.status = status
        self.reason = "OK" if status < 300 else "Error"
        self.data = json.dumps(payload).encode()
        self.headers = {"content-type": "application/json"}


class MemoryKube(client.ApiClient):
    """The API server as far as a step sees it: FoundryApprovals (listed by the
    `foundry.dev/run` label, as kubeio.list_approvals asks), Events (recorded),
    and FoundryRuns to read. Anything else (a status patch, say) is recorded in
    `requests` and answered 404, so a test can assert it was not asked."""

    def __init__(self) -> None:
        super().__init__(client.Configuration())
        self.approvals: list[dict[str, Any]] = []
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []

    def call_api(self, method, url, header_params=None, body=None, post_params=None,
                 _request_timeout=None) -> rest.RESTResponse:
        parts = urlsplit(url)
        self.requests.append((method, parts.path))
        segments = parts.path.strip("/").split("/")
        if method == "GET" and segments[-1] == "foundryapprovals":
            namespace = segments[-2]
            selector = (parse_qs(parts.query).get("labelSelector") or [""])[0]
            key, _, value = selector.partition("=")
            items = [a for a in self.approvals if a["metadata"]["namespace"] == namespace
                     and (a["metadata"].get("labels") or {}).get(key) == value]
            return rest.RESTResponse(_Answer(200, {"kind": "FoundryApprovalList", "items": items}))
        if method == "GET" and len(segments) >= 2 and segments[-2] == "foundryruns":
            found = self.runs.get((segments[-3], segments[-1]))
            if found is not None:
                return rest.RESTResponse(_Answer(200, found))
        if method == "POST" and segments[-1] == "events":
            self.events.append(body)
            return rest.RESTResponse(_Answer(201, body))
        return rest.RESTResponse(_Answer(404, {"kind": "Status", "code": 404, "message": f"{method} {parts.path}"}))

    def approve(self, run: RunView, approver: str, *, decision: str = "approve", made: datetime = NOW,
                source: str = "kubernetes", **spec: Any) -> dict[str, Any]:
        """A FoundryApproval as the API server returns it (name, uid, label, creation time)."""
        name = approval_name(run.name, decision, approver, spec.get("commentId"))
        obj = {"apiVersion": "foundry.dev/v1alpha1", "kind": "FoundryApproval",
               "metadata": {"name": name, "namespace": run.namespace, "uid": f"uid-{name}",
                            "creationTimestamp": iso(made), "labels": {"foundry.dev/run": run.name}},
               "spec": {"run": run.name, "decision": decision, "approver": approver, "source": source, **spec}}
        self.approvals.append(obj)
        return obj

    def event_reasons(self) -> list[str]:
        return [e["reason"] for e in self.events]


# --- Linear ---------------------------------------------------------------------------------------

class MemoryLinear:
    def __init__(self) -> None:
        self.comments: dict[str, LinearComment] = {}
        self.created: list[LinearComment] = []

    def viewer_id(self) -> str:
        return VIEWER

    def list_comments(self, issue_id: str) -> list[LinearComment]:
        return [c for c in self.comments.values() if c.issue_id == issue_id]

    def create_comment(self, issue_id: str, body: str) -> LinearComment:
        return self.add(issue_id, body)

    def get_comment(self, comment_id: str) -> LinearComment:
        try:
            return self.comments[comment_id]
        except KeyError:
            raise NotFound("get_comment", comment_id, "no such comment") from None

    def add(self, issue_id: str, body: str, *, user_id: str = VIEWER, user_email: str | None = None,
            made: datetime = NOW) -> LinearComment:
        comment = LinearComment(id=f"c{len(self.comments) + 1}", body=body, created_at=iso(made), user_id=user_id,
                                issue_id=issue_id, user_email=user_email)
        self.comments[comment.id] = comment
        if user_id == VIEWER:
            self.created.append(comment)
        return comment

    def purposes(self) -> list[str]:
        """The purpose of each comment Foundry posted, in order (from its marker)."""
        from foundry.connectors.marked_comments import find_markers

        return [purpose for c in self.created for _, purpose in find_markers(c.body)]


# --- GitHub ---------------------------------------------------------------------------------------

class MemoryGitHub:
    base_url = "https://api.github.example"

    def __init__(self) -> None:
        self.pulls: dict[int, dict[str, Any]] = {}
        self.commits: dict[str, dict[str, Any]] = {}
        self.files: dict[int, list[dict[str, Any]]] = {}
        self.check_runs: dict[str, list[dict[str, Any]]] = {}
        self.annotations: dict[int, list[dict[str, Any]]] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.reviews: dict[int, list[dict[str, Any]]] = {}
        self.review_comments: dict[tuple[int, int], list[dict[str, Any]]] = {}

    def login(self) -> str:
        return "foundry-bot"

    def find_pull_by_branch(self, repo: str, branch: str) -> dict[str, Any] | None:
        found = [p for p in self.pulls.values() if p["head"]["ref"] == branch]
        return max(found, key=lambda p: p["number"]) if found else None

    def get_commit(self, repo: str, sha: str) -> dict[str, Any]:
        return self.commits[sha]

    def list_pull_files(self, repo: str, number: int) -> list[dict[str, Any]]:
        return list(self.files.get(number, []))

    def list_check_runs(self, repo: str, sha: str) -> list[dict[str, Any]]:
        return list(self.check_runs.get(sha, []))

    def list_check_run_annotations(self, repo: str, check_run_id: int) -> list[dict[str, Any]]:
        return list(self.annotations.get(check_run_id, []))

    def combined_status(self, repo: str, sha: str) -> dict[str, Any]:
        return {"sha": sha, "statuses": list(self.statuses.get(sha, []))}

    def list_reviews(self, repo: str, number: int) -> list[dict[str, Any]]:
        return list(self.reviews.get(number, []))

    def list_comments_for_review(self, repo: str, number: int, review_id: int) -> list[dict[str, Any]]:
        return list(self.review_comments.get((number, review_id), []))

    def open_pull(self, run: RunView, *, number: int = 7, sha: str = "a" * 40, files: tuple[str, ...] = ("app/x.py",),
                  attempt: int = 1, opener: str = "foundry-bot", author: str = RUNNER_AUTHOR) -> dict[str, Any]:
        """A PR from the run's branch whose head commit is Foundry's (foundry.domain.adoption)."""
        pull = {"number": number, "html_url": f"https://github.example/{REPO}/pull/{number}", "state": "open",
                "merged": False, "merged_at": None, "user": {"login": opener},
                "head": {"ref": run.branch, "sha": sha}, "base": {"ref": "main"}}
        self.pulls[number] = pull
        self.push(run, sha, attempt=attempt, author=author)
        self.files[number] = [{"filename": f, "status": "modified", "additions": 1, "deletions": 0} for f in files]
        return pull

    def push(self, run: RunView, sha: str, *, attempt: int, author: str = RUNNER_AUTHOR, number: int | None = None) -> None:
        """A new head commit on the branch, with the trailers Foundry's runner writes."""
        self.commits[sha] = {"sha": sha, "commit": {
            "author": {"name": author},
            "message": f"{run.issue_key}: change\n\nFoundry-Run: {run.name}\nFoundry-Attempt: {attempt}\n"}}
        if number is not None:
            self.pulls[number]["head"]["sha"] = sha

    def check(self, sha: str, name: str, conclusion: str | None, *, id_: int | None = None,
              output: dict[str, Any] | None = None) -> None:
        runs = self.check_runs.setdefault(sha, [])
        runs.append({"id": id_ or 100 + len(runs), "name": name, "head_sha": sha,
                     "status": "completed" if conclusion else "in_progress", "conclusion": conclusion,
                     "output": output or {"title": name, "summary": "", "text": "", "annotations_count": 0}})

    def review(self, number: int, login: str, state: str, sha: str, *, id_: int = 500, body: str = "") -> None:
        self.reviews.setdefault(number, []).append({"id": id_, "user": {"login": login}, "state": state,
                                                    "commit_id": sha, "body": body,
                                                    "submitted_at": iso(NOW)})


# --- The agent provider ---------------------------------------------------------------------------

class MemoryAgents:
    """Attempts keyed by (run, attempt): dispatching one that exists adopts it."""

    def __init__(self) -> None:
        self.attempts: dict[tuple[str, int], dict[str, Any]] = {}
        self.inputs: dict[tuple[str, int], dict[str, Any]] = {}
        self.dispatched: list[tuple[str, int]] = []
        self.cancelled: list[tuple[str, int]] = []
        self.plans: dict[tuple[str, int], dict[str, Any]] = {}
        self.plan_inputs: dict[tuple[str, int], dict[str, Any]] = {}
        self.plans_dispatched: list[tuple[str, int]] = []
        self.plans_cancelled: list[tuple[str, int]] = []

    def dispatch(self, run: dict[str, Any], attempt: int, job_input: dict[str, Any]) -> dict[str, Any]:
        key = (run["metadata"]["name"], attempt)
        self.dispatched.append(key)
        if key not in self.attempts:
            self.inputs[key] = dict(job_input)
            self.attempts[key] = {"name": f"{key[0]}-a{attempt}", "attempt": attempt, "state": "running",
                                  "startedAt": iso(NOW)}
        return dict(self.attempts[key])

    def state(self, run: dict[str, Any], attempt: int) -> dict[str, Any]:
        found = self.attempts.get((run["metadata"]["name"], attempt))
        if found is None:
            return {"state": "missing"}
        return {k: v for k, v in found.items() if k not in ("name", "attempt")}

    def cancel(self, run: dict[str, Any], attempt: int) -> None:
        key = (run["metadata"]["name"], attempt)
        self.cancelled.append(key)
        if key in self.attempts and self.attempts[key]["state"] == "running":
            self.attempts[key]["state"] = "failed"
            self.attempts[key]["reason"] = "cancelled"

    def finish(self, run: RunView, attempt: int, state: str, *, finished: datetime = NOW, **result: Any) -> None:
        """The attempt ended (its Job and termination message, as the provider reports them)."""
        self.attempts[(run.name, attempt)].update({"state": state, "finishedAt": iso(finished), **result})

    # Plan Jobs (<run>-p<n>), kept apart from attempts as the providers keep them.

    def dispatch_plan(self, run: dict[str, Any], number: int, job_input: dict[str, Any]) -> dict[str, Any]:
        key = (run["metadata"]["name"], number)
        self.plans_dispatched.append(key)
        if key not in self.plans:
            self.plan_inputs[key] = dict(job_input)
            self.plans[key] = {"name": f"{key[0]}-p{number}", "number": number, "state": "running",
                               "startedAt": iso(NOW)}
        return dict(self.plans[key])

    def plan_state(self, run: dict[str, Any], number: int) -> dict[str, Any]:
        found = self.plans.get((run["metadata"]["name"], number))
        return {"state": "missing"} if found is None else dict(found)

    def cancel_plan(self, run: dict[str, Any], number: int) -> None:
        key = (run["metadata"]["name"], number)
        self.plans_cancelled.append(key)
        if key in self.plans and self.plans[key]["state"] == "running":
            self.plans[key].update(state="failed", reason="cancelled")

    def finish_plan(self, run: RunView, number: int, plan: dict[str, Any] | None = None, *,
                    state: str = "succeeded", **fields: Any) -> None:
        """The plan Job ended; `plan` (the agent's JSON form) as the provider reports a valid one."""
        from foundry.domain import plans

        done: dict[str, Any] = {"state": state, "finishedAt": iso(NOW), **fields}
        if plan is not None:
            made = plans.validate(plan)
            done["plan"] = {**plans.summary_fields(made), "bytes": len(plans.canonical_json(made).encode())}
        self.plans[(run.name, number)].update(done)


# --- Deps -----------------------------------------------------------------------------------------

def memory_engine() -> Engine:
    engine = make_engine("sqlite://")
    create_schema(engine)
    return engine


@dataclass
class StepDeps:
    """What the steps read from Deps, nothing more; `now` moves the clock."""

    config: FoundryConfig = field(default_factory=config)
    api: MemoryKube = field(default_factory=MemoryKube)
    linear: MemoryLinear = field(default_factory=MemoryLinear)
    github: MemoryGitHub = field(default_factory=MemoryGitHub)
    agents: MemoryAgents = field(default_factory=MemoryAgents)
    engine: Engine = field(default_factory=memory_engine)
    leadership: AlwaysLeading = field(default_factory=AlwaysLeading)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    locks: RunLocks = field(default_factory=RunLocks)
    now: datetime = NOW

    def __post_init__(self) -> None:
        # What the steps remember per operator process (decisions confirmed with
        # Linear, PRs already told not adopted) must not leak from one test to the next.
        steps_approval._confirmed.clear()
        prtruth._told.clear()

    def clock(self) -> datetime:
        return self.now

    def later(self, **delta: float) -> None:
        self.now = self.now + timedelta(**delta)


# --- Runs -----------------------------------------------------------------------------------------

READY_TICKET = {
    "title": "Add a health endpoint",
    "description": "The service has no health endpoint, so monitoring cannot tell whether it is up. "
                   "Add one at /healthz that answers 200 when the service is ready.\n\n"
                   "## Acceptance criteria\n- [ ] GET /healthz answers 200\n",
    "labels": ["foundry", "repo:app"],
    "url": "https://linear.example/ACME-1",
    "updatedAt": iso(NOW - timedelta(hours=1)),
}


def run_view(phase: str | None = "Pending", *, name: str = "linear-acme-1-a1", issue: str = "issue-1",
             created: datetime = NOW - timedelta(hours=1), ticket: dict[str, Any] | None = None,
             **status: Any) -> RunView:
    """A FoundryRun as the API server returns it, in `phase` with `status` fields."""
    body = {"apiVersion": "foundry.dev/v1alpha1", "kind": "FoundryRun",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1,
                         "resourceVersion": "1", "creationTimestamp": iso(created)},
            "spec": {"issueId": issue, "issueKey": "ACME-1", "tracker": "linear", "attempt": 1,
                     "ticket": dict(READY_TICKET if ticket is None else ticket)},
            "status": {**({"phase": phase} if phase else {}), **status}}
    return RunView(body)


# The plan the fixtures' runs wait with or were approved for (the deterministic planner's, revision 1).
PLAN = plan_status.heuristic({"goal": "Add a health endpoint", "steps": ["add /healthz"], "files": [],
                              "tests": [], "outOfScope": []}, 1, READY_TICKET)


def waiting(since: datetime = NOW - timedelta(minutes=10), **status: Any) -> RunView:
    """A run in WaitingApproval since `since` (the plan's time: its Approved=False condition)."""
    base = {"repo": "app", "riskAreas": [], "plan": dict(PLAN), "questions": [],
            "approvals": {"required": 1, "received": 0, "summary": "0/1", "approvers": []},
            "conditions": [{"type": "Approved", "status": "False", "reason": "Planned", "message": "",
                            "lastTransitionTime": iso(since)}]}
    return run_view("WaitingApproval", **{**base, **status})


def approved(**status: Any) -> RunView:
    base = {"repo": "app", "riskAreas": [], "plan": dict(PLAN), "questions": [],
            "approvals": {"required": 1, "received": 1, "summary": "1/1", "planHash": PLAN["hash"],
                          "approvers": [{"name": "Alice", "via": "kubernetes"}]}}
    return run_view("Approved", **{**base, **status})


def agent_running(jobs: list[dict[str, Any]] | None = None, attempt: int = 1, **status: Any) -> RunView:
    jobs = jobs if jobs is not None else [{"name": f"linear-acme-1-a1-a{attempt}", "attempt": attempt,
                                           "state": "running", "startedAt": iso(NOW)}]
    base = {k: v for k, v in approved().status.items() if k != "phase"}
    return run_view("AgentRunning", **{**base, "agent": {"attempt": attempt, "jobs": jobs},
                                       "pr": {"branch": "foundry/linear-acme-1-a1"}, **status})


def with_attempt(deps: StepDeps, run: RunView, attempt: int = 1) -> RunView:
    """`run` with attempt `attempt` started at the provider, as dispatch would have left it."""
    record = deps.agents.dispatch(run.body, attempt, {})
    deps.agents.dispatched.clear()
    jobs = [j for j in run.jobs if j.get("attempt") != attempt] + [record]
    return RunView({**run.body, "status": {**run.status, "agent": {**run.agent, "attempt": attempt, "jobs": jobs}}})
