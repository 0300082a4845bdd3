"""The demo's story told through the installed chart on the real node (tests/test_chart_story_node.py).

Everything Foundry runs is the chart's: the operator and the bridge are pods of Foundry's locally built
image, the database is the bundled PostgreSQL, every agent attempt is a Job whose pod runs the agent
image (the runner driving the real Claude Code CLI). The outside world runs on the host, bound on the
node IP so pods reach it:

- the Linear stand-in (GraphQL for the operator; signed webhooks sent to the bridge's Service, which
  the host reaches at its ClusterIP through the node's kube-proxy rules);
- the GitHub stand-in (real git over smart HTTP, `main` protected, anonymous git refused, a GitHub App
  installed: the operator reads with its installation token and hands each attempt a repo-scoped one;
  check runs and merges are delivered to the bridge as signed webhooks, as GitHub does);
- the model stand-in, replaying one scripted Claude Code conversation per attempt.

    bed = ChartStoryBed(cluster).start()       # stand-ins, images, namespaces, `helm install --wait`
    story = bed.story("Greet politely", on_step=...)
    facts = story.play()                       # label → plan → approve → PR → CI fails → retry → merge
    bed.stop()

`on_step(name)` is called once the story has seen each step happen; the kill test deletes the operator
pod there. Nothing here patches a Job's status or plays a controller.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from foundry.demo import example_repo
from foundry.demo.agent import FIRST_TRY, FIXED, TESTS
from foundry.demo.ci import run_tests
from tests.support.agent_pods import restricted_namespace
from foundry.dev.github_auth import generate_app_key
from foundry.dev.github_server import GitHubServer
from tests.support.helm_node import load_chart_images, wait_release_ready
from tests.support.helmchart import CHART, run_tool
from foundry.dev.linear_server import LinearServer
from foundry.dev.model_server import Final, ModelServer, ToolCall, Usage
from foundry.kube.crds import GROUP, VERSION

RELEASE = "story"
# The operator replicas' Lease: the chart leaves operator.leader_election.lease_name at its default.
LEASE = "foundry-operator"
REPO = example_repo.REPO
TEAM = "ACME"
APPROVER = ("Alice", "alice@example.com")
APP_ID, INSTALLATION_ID = 5151, 88
APP_KEY_ENV = "FOUNDRY_GITHUB_APP_KEY"
APP_KEY_SECRET = "github-app"
MODEL_SECRET = "model-api"
MODEL_KEY = "sk-ant-chart-story-0123456789abcdef"
AGENT_SA = f"{RELEASE}-foundry-agent"
WORK = "/foundry/work/repo"
TICKET_DESCRIPTION = example_repo.TICKET_DESCRIPTION
# Small enough that the operator, the bridge, PostgreSQL and an agent fit the 2-core node.
AGENT_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}

# The model's one move per attempt, a shell command through Claude Code's Bash tool: the first attempt
# strips the name but forgets the empty one, so CI fails; the next one finds that first try on the
# branch and finishes the job. Deciding from the work tree keeps one script right for every attempt
# of every ticket (a later ticket starts from the earlier one's merge, and still fails CI once).
EDIT = ("python3 - <<'EOF'\n"
        "import pathlib\n"
        f"root = pathlib.Path({WORK!r})\n"
        f"first, fixed, tests = {[FIRST_TRY, FIXED, TESTS]!r}\n"
        "greeter = root / 'greeter.py'\n"
        "retry = greeter.read_text() == first\n"
        "greeter.write_text(fixed if retry else first)\n"
        "(root / 'test_greeter.py').write_text(tests)\n"
        "print('retry' if retry else 'first try')\n"
        "EOF")
SUMMARY = "SUMMARY-CHART: greet() handles messy names; tests cover them."
SCRIPT = [ToolCall("Bash", {"command": EDIT, "description": "edit greeter.py and its tests"}), Final(SUMMARY)]
# The plan Job's session (Claude Code in plan mode: the stand-in answers it from this script): read the
# code, then answer with the plan. Its summary is what the story looks for on the ticket.
PLAN_SUMMARY = "PLAN-CHART: greet() strips the name and greets an empty one as 'there'."
PLAN = {"summary": PLAN_SUMMARY,
        "files": [{"path": "greeter.py", "why": "greet() formats the raw name"},
                  {"path": "test_greeter.py", "why": "tests for padded and empty names"}],
        "approach": "Strip the name inside greet(); fall back to 'there' when nothing is left.",
        "tests": ["test_greeter.py: padded and empty names"], "risks": [], "openQuestions": []}
PLAN_SCRIPT = [ToolCall("Read", {"file_path": f"{WORK}/greeter.py"}),
               Final("I read greeter.py.\n\n```json\n" + json.dumps(PLAN, indent=2) + "\n```\n")]
FEEDBACK_HEADING = "## Feedback on the previous attempt"


class StoryFailed(AssertionError):
    """The story could not reach its next step; says where it stopped, with the operator's log tail."""


# ---------------------------------------------------------------- the values a user would write


def chart_values(*, linear: LinearServer, github: GitHubServer, model: ModelServer, agent_namespace: str,
                 agent_image: str, linear_secret: str, github_secret: str) -> dict[str, Any]:
    """The chart's values: defaults, but for the stand-ins' addresses, the credentials, and a one-node
    database without a volume (no storage provisioner here)."""
    config = {
        "trigger": {"label": "foundry"},
        "repositories": [{"name": "greeter", "github": REPO, "base_branch": example_repo.BASE_BRANCH,
                          "keywords": ["greet", "greeting", "greeter"],
                          "paths": ["greeter.py", "test_greeter.py"]}],
        "approvers": [{"name": APPROVER[0], "linear": APPROVER[1], "roles": ["lead"]}],
        "policy": {"approvals_required": 1, "retry_cap": 2, "budget_cap": 3},
        "linear": {"api_url": linear.graphql_url, "team": TEAM},
        "github": {"api_url": github.url, "app_id": APP_ID, "installation_id": INSTALLATION_ID,
                   "private_key_env": APP_KEY_ENV},
        "agent": {
            "image": agent_image, "namespace": agent_namespace, "resources": AGENT_RESOURCES,
            "env": {"ANTHROPIC_BASE_URL": model.url},
            "secret_refs": [{"secret": MODEL_SECRET, "key": "api-key", "env": "ANTHROPIC_API_KEY"}],
            "runner": {"name": "claude-code", "model": "claude-sonnet-4-5", "timeout_seconds": 240},
        },
        # A short resync so a story never waits a minute on a poll; the webhooks are the fast path.
        "timeouts": {"agent_seconds": 300, "resync_seconds": 3, "pr_wait_seconds": 120},
    }
    return {
        "config": config,
        "secrets": {"linearApiKey": linear.api_key, "linearWebhookSecret": linear_secret,
                    "githubWebhookSecret": github_secret},
        "operator": {"extraEnv": [{"name": APP_KEY_ENV, "valueFrom": {
            "secretKeyRef": {"name": APP_KEY_SECRET, "key": "private-key"}}}]},
        "bridge": {"replicas": 1},
        "postgresql": {"persistence": {"enabled": False}},
    }


# ---------------------------------------------------------------- the bed


class ChartStoryBed:
    """Stand-ins on the node IP, the agent namespace, and the chart installed once for many stories."""

    def __init__(self, cluster: Any, *, namespace: str | None = None) -> None:
        self.cluster = cluster
        self.namespace = namespace or f"story-{uuid.uuid4().hex[:8]}"
        self.agent_namespace = f"{self.namespace}-agents"
        self.api = cluster.api_client()
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.linear_secret = secrets.token_hex(16)
        self.github_secret = secrets.token_hex(16)
        self.linear = LinearServer(webhook_secret=self.linear_secret)
        self.linear.host = cluster.node_ip  # bind and advertise the address pods reach the host at
        self.github = GitHubServer(host=cluster.node_ip, webhook_secret=self.github_secret, require_auth=True)
        self.model = ModelServer(SCRIPT, host=cluster.node_ip, usage=Usage(input_tokens=900, output_tokens=60),
                                 plan_script=PLAN_SCRIPT)
        self.app_key, self._app_public = generate_app_key()
        self.alice = ""
        self.timings: dict[str, float] = {}
        self._workdir = Path(tempfile.mkdtemp(prefix="foundry-chart-story-"))
        self._installed = False

    # -- start / stop

    def start(self) -> "ChartStoryBed":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        t0 = time.monotonic()
        refs = load_chart_images(self.cluster)
        from tests.support.agent_node import agent_image

        agent_ref, agent_tar = agent_image()
        self.agent_image = self.cluster.import_image(agent_tar, agent_ref)
        self.timings["images_s"] = round(time.monotonic() - t0, 1)
        assert refs, "no chart image was imported"

        self.linear.start()
        self.linear.add_team(TEAM, "Acme")
        self.alice = self.linear.add_user(*APPROVER)
        self.github.start()
        self.github.add_repo(REPO, default_branch=example_repo.BASE_BRANCH, files=dict(example_repo.INITIAL_FILES))
        self.github.protect_branch(REPO, example_repo.BASE_BRANCH)
        self.github.install_app(app_id=APP_ID, public_key_pem=self._app_public, installation_id=INSTALLATION_ID,
                                account=REPO.split("/")[0])
        self.model.start()

        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
            name=self.namespace, labels={"foundry.dev/test": "true"})))
        restricted_namespace(self.api, self.agent_namespace)
        self.core.create_namespaced_secret(self.agent_namespace, {
            "metadata": {"name": MODEL_SECRET}, "stringData": {"api-key": MODEL_KEY}})
        self.core.create_namespaced_secret(self.namespace, {
            "metadata": {"name": APP_KEY_SECRET}, "stringData": {"private-key": self.app_key}})

        values = chart_values(linear=self.linear, github=self.github, model=self.model,
                              agent_namespace=self.agent_namespace, agent_image=self.agent_image,
                              linear_secret=self.linear_secret, github_secret=self.github_secret)
        values_file = self._workdir / "values.yaml"
        values_file.write_text(yaml.safe_dump(values, sort_keys=False))
        self._values_file = values_file
        t1 = time.monotonic()
        self._installed = True
        self.helm("install", RELEASE, str(CHART), "-n", self.namespace, "-f", str(values_file), "--wait",
                  "--timeout", "300s")
        wait_release_ready(self.core, self.apps, self.namespace, RELEASE)
        self.timings["install_s"] = round(time.monotonic() - t1, 1)

        service = self.core.read_namespaced_service(f"{RELEASE}-foundry-bridge", self.namespace)
        bridge = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}"
        self.bridge_url = bridge
        self.linear.set_webhook_url(f"{bridge}/webhooks/linear")
        self.github.set_webhook_url(f"{bridge}/webhooks/github")

    def helm(self, *args: str, timeout: float = 420, check: bool = True):
        return run_tool([self.cluster.helm, "--kubeconfig", self.cluster.kubeconfig, *args], timeout=timeout,
                        check=check)

    def roll_operator(self, mark: str) -> None:
        """`helm upgrade --wait` with the install's values and one new pod annotation: the operator
        Deployment rolls (a new ReplicaSet, one pod at a time, as for a new image), nothing else changes.
        Without the pre-upgrade migration hook: it runs before any pod changes, has no schema to change
        here, and would add a pod's start (about 15 s on this machine) to every roll."""
        self.helm("upgrade", RELEASE, str(CHART), "-n", self.namespace, "-f", str(self._values_file), "--no-hooks",
                  "--set-string", f"operator.podAnnotations.foundry\\.dev/roll={mark}", "--wait", "--timeout", "300s")

    def stop(self) -> None:
        if self._installed:
            self._delete_runs()
            self.helm("uninstall", RELEASE, "-n", self.namespace, "--wait", "--timeout", "120s", check=False)
        for ns in (self.agent_namespace, self.namespace):
            try:
                self.core.delete_namespace(ns)
            except client.ApiException:
                pass
        for server in (self.model, self.github, self.linear):
            try:
                server.stop()
            except Exception:  # noqa: BLE001 - a server that never started
                pass
        self.api.close()

    def _delete_runs(self, timeout: float = 30) -> None:
        """Runs go while the operator still runs, so its finalizer lets them go."""
        try:
            self.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, self.namespace, "foundryruns")
        except client.ApiException:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "foundryruns")["items"]:
                return
            time.sleep(0.5)

    # -- what a story looks at

    def operator_pods(self) -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=self.operator_selector()).items

    def operator_log(self, lines: int = 60) -> str:
        out = []
        for pod in self.operator_pods():
            try:
                out.append(f"--- {pod.metadata.name}\n" + self.core.read_namespaced_pod_log(
                    pod.metadata.name, self.namespace, container="operator", tail_lines=lines))
            except client.ApiException as err:
                out.append(f"--- {pod.metadata.name}: no log ({err.status})")
        return "\n".join(out)

    def operator_selector(self) -> str:
        return f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"

    def operator_leader(self) -> str | None:
        """The name of the operator pod that holds the Lease (its holderIdentity is the pod's name)."""
        try:
            lease = client.CoordinationV1Api(self.api).read_namespaced_lease(LEASE, self.namespace)
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise
        return lease.spec.holder_identity or None

    def kill_operator(self, timeout: float = 60) -> str:
        """`kubectl delete pod --grace-period=0 --force` on the operator pod that leads (the
        standby stays); the killed pod's name."""
        t0 = time.monotonic()
        while True:
            alive = {p.metadata.name for p in self.operator_pods() if not p.metadata.deletion_timestamp}
            leader = self.operator_leader()
            if leader in alive:
                break
            if time.monotonic() - t0 > timeout:
                raise StoryFailed(f"no live operator pod holds the Lease in {timeout}s (holder {leader!r}, "
                                  f"pods {sorted(alive)})")
            time.sleep(0.3)
        run_tool([self.cluster.kubectl, "--kubeconfig", self.cluster.kubeconfig, "-n", self.namespace, "delete",
                  "pod", leader, "--grace-period=0", "--force", "--wait=false"], timeout=60)
        return leader

    def wait_takeover(self, killed: str, timeout: float = 120) -> float:
        """Seconds until an operator pod other than `killed` holds the Lease."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            holder = self.operator_leader()
            if holder and holder != killed:
                return time.monotonic() - t0
            time.sleep(0.3)
        raise StoryFailed(f"no other operator pod took the Lease in {timeout}s")

    def run_object(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "foundryruns", name)

    def runs_of(self, issue_id: str) -> list[dict[str, Any]]:
        from foundry.domain.naming import label_value
        from foundry.kube.runs import LABEL_ISSUE_ID

        return self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "foundryruns",
            label_selector=f"{LABEL_ISSUE_ID}={label_value(issue_id)}")["items"]

    def jobs_of(self, run: str) -> list[client.V1Job]:
        return [j for j in self.batch.list_namespaced_job(self.agent_namespace).items
                if j.metadata.name.startswith(f"{run}-a")]

    def story(self, title: str, *, on_step: Callable[[str], None] | None = None,
              step_timeout: float = 180) -> "ChartStory":
        return ChartStory(self, title, on_step=on_step or (lambda _step: None), step_timeout=step_timeout)


# ---------------------------------------------------------------- one ticket's story


@dataclass
class StoryFacts:
    issue_id: str = ""
    issue_key: str = ""
    run: str = ""
    pr_number: int = 0
    ci: list[tuple[str, str]] = field(default_factory=list)  # (head sha, conclusion), in order
    phases: list[str] = field(default_factory=list)  # every phase seen, in order
    marks: dict[str, float] = field(default_factory=dict)  # step → seconds since the story began
    plan: dict[str, Any] = field(default_factory=dict)  # status.plan as posted: source, hash, job, files, goal


class ChartStory:
    """One ticket, from its label to its merge, acting only through the stand-ins."""

    def __init__(self, bed: ChartStoryBed, title: str, *, on_step: Callable[[str], None], step_timeout: float):
        self.bed = bed
        self.title = title
        self.on_step = on_step
        self.step_timeout = step_timeout
        self.facts = StoryFacts()
        self._t0 = time.monotonic()

    def _step(self, name: str) -> None:
        self.facts.marks[name] = round(time.monotonic() - self._t0, 1)
        self.on_step(name)

    def play(self) -> StoryFacts:
        bed, linear, github = self.bed, self.bed.linear, self.bed.github
        self._t0 = time.monotonic()
        issue_id = linear.create_issue(TEAM, self.title, TICKET_DESCRIPTION, actor_id=bed.alice)
        self.facts.issue_id = issue_id
        self.facts.issue_key = linear.issue_json(issue_id)["identifier"]
        # The trigger: a signed `Issue` update webhook to the bridge's Service.
        linear.update_issue(issue_id, labels=["foundry", "repo:greeter"], actor_id=bed.alice)
        run = self._wait(lambda: (bed.runs_of(issue_id) or [None])[0], "the bridge to create the run")
        self.facts.run = run["metadata"]["name"]

        self._wait_phase("WaitingApproval", "the operator to plan and ask for approval")
        plan = self._status().get("plan") or {}
        self.facts.plan = {k: plan.get(k) for k in ("source", "hash", "job", "files", "goal")}
        self._step("plan-comment")

        linear.add_comment(issue_id, "/foundry approve", user_id=bed.alice)
        self._wait(lambda: self._approvals(), "the bridge to record the approval")
        self._step("approval")

        self._wait(lambda: self._job(1), "the operator to create attempt 1's Job")
        self._step("job-1-created")
        number = self._wait(self._pr_number, "the agent to open a pull request")
        self.facts.pr_number = number
        self._step("pr-opened")

        # CI reports once attempt 1's runner has reported (as in the demo: a failure seen while
        # the runner still writes its report would replace the attempt before it reported).
        self._wait_job_done(1)
        first = self._ci(number, expect="failure")
        self._step("ci-failed")
        self._wait(lambda: self._job(2), "the operator to create the remediation Job (attempt 2)")
        self._step("job-2-created")
        second = self._ci(number, expect="success", after=first)
        self._step("ci-passed")
        self._wait_job_done(2)
        self._wait(lambda: self._seen_head(second), "the operator to see the passing head")

        github.submit_review(REPO, number, "octocat", "APPROVED", "Looks good.")
        github.merge(REPO, number)
        self._step("merged")
        self._wait_phase("Complete", "the operator to see the merge")
        self._step("complete")
        return self.facts

    # -- steps

    def _approvals(self) -> list[dict[str, Any]] | None:
        items = self.bed.custom.list_namespaced_custom_object(GROUP, VERSION, self.bed.namespace,
                                                              "foundryapprovals")["items"]
        mine = [a for a in items if a["spec"]["run"] == self.facts.run]
        return mine or None

    def _job(self, attempt: int) -> client.V1Job | None:
        try:
            return self.bed.batch.read_namespaced_job(f"{self.facts.run}-a{attempt}", self.bed.agent_namespace)
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise

    def _wait_job_done(self, attempt: int) -> client.V1Job:
        """The attempt's Job once the Job controller says Complete (Failed stops the story)."""
        def done() -> client.V1Job | None:
            job = self._job(attempt)
            conds = {c.type for c in (job.status.conditions or []) if c.status == "True"} if job else set()
            if "Failed" in conds:
                raise StoryFailed(f"attempt {attempt}'s Job failed: {job.status.conditions}")
            return job if "Complete" in conds else None

        return self._wait(done, f"attempt {attempt}'s Job to complete")

    def _pr_number(self) -> int | None:
        branch = f"foundry/{self.facts.run}"
        pulls = [p for (repo, _), p in self.bed.github.pulls.items() if repo == REPO and p.head_ref == branch]
        return pulls[0].number if pulls else None

    def _ci(self, number: int, *, expect: str, after: str | None = None) -> str:
        """The repository's tests on exactly the PR head's files; the check run reported like GitHub Actions."""
        github = self.bed.github

        def head() -> str | None:
            sha = github.pulls[(REPO, number)].head_sha
            return sha if sha != after else None

        sha = self._wait(head, "a new commit on the pull request")
        github.set_check(REPO, sha, None, name="tests", status="in_progress")
        outcome = run_tests(github.files_at(REPO, sha))
        github.set_check(REPO, sha, outcome.conclusion, name="tests",
                         output={"title": f"tests: {outcome.conclusion}", "summary": outcome.output[-2000:]})
        self.facts.ci.append((sha, outcome.conclusion))
        if outcome.conclusion != expect:
            raise StoryFailed(f"CI on {sha[:8]} was {outcome.conclusion}, expected {expect}:\n{outcome.output}")
        return sha

    def _seen_head(self, sha: str) -> bool | None:
        status = self._status()
        return (status.get("phase") == "PROpen" and (status.get("pr") or {}).get("headSha") == sha) or None

    # -- watching

    def _status(self) -> dict[str, Any]:
        status = self.bed.run_object(self.facts.run).get("status") or {}
        phase = status.get("phase")
        if phase and (not self.facts.phases or self.facts.phases[-1] != phase):
            self.facts.phases.append(phase)
        return status

    def _wait_phase(self, phase: str, what: str) -> None:
        from foundry.domain.phases import Phase

        def reached() -> bool | None:
            status = self._status()
            current = status.get("phase")
            if current == phase:
                return True
            if current and Phase(current).is_terminal:
                raise StoryFailed(f"{self.facts.run} ended {current} waiting for {phase}: "
                                  f"{status.get('reason')}: {status.get('message')}")
            return None

        self._wait(reached, what)

    def _wait(self, check: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + self.step_timeout
        while True:
            if self.facts.run:
                self._status()
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                status = self.bed.run_object(self.facts.run).get("status") if self.facts.run else None
                raise StoryFailed(f"{self.title}: gave up after {self.step_timeout:g}s waiting for {what}; "
                                  f"status={json.dumps(status, default=str)[:3000]}\n{self.bed.operator_log()}")
            time.sleep(0.25)


__all__ = ["ChartStoryBed", "ChartStory", "StoryFacts", "StoryFailed", "SUMMARY", "FEEDBACK_HEADING", "REPO",
           "MODEL_KEY", "AGENT_SA"]
