"""Agent attempts on the real node: the operator's JobProvider starting real agent pods.

The bed around a started NodeCluster:

- the locally built agent image (operator/Dockerfile.agent, foundry.dev.images)
  imported into the node's containerd under the name the chart uses;
- the GitHub stand-in (real git over smart HTTP, anonymous git refused, `main`
  protected) with a GitHub App installed, so each attempt's push token is a
  repo-scoped installation token the operator's own code asks for;
- the model stand-in;
- both bound on the node IP, the address pods reach the host at;
- per test, a namespace enforcing the restricted Pod Security Standard, holding
  the agent's ServiceAccount (no token automounted) and the model key's Secret.

Nothing here plays the kubelet or the Job controller: pods really run, and the
Job's status is the controller's. Used by tests/test_agent_pod_node.py and
tools/bench_agent_pod.py.

    with AgentPodBed(cluster, image_ref) as bed:
        ns = bed.namespace()
        cfg = bed.config(ns, runner=bed.command_runner())
        attempt = bed.dispatch(cfg, "linear-acme-42-1")
        attempt.wait_running(); st = attempt.wait_ended()
        plan = bed.dispatch_plan(cfg)   # plan Job <run>-p1: the same waits, plan_state() at the end
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from foundry.agents.provider import FAILED, RUNNING, attempt_name, plan_job_name
from foundry.agents.credentials import push_token_source
from foundry.agents.job_provider import JobProvider
from foundry.agents.job_manifest import attempt_selector, plan_selector
from foundry.config import FoundryConfig, parse_config
from foundry.operator.reconcile import jobinput
from tests.support.agent_pods import restricted_namespace
from foundry.dev.github_auth import generate_app_key
from foundry.dev.github_server import GitHubServer
from foundry.dev.model_server import ModelServer, Usage
from tests.support.runner_kit import BASE_FILES

REPO = "acme/api"
ISSUE = "ACME-42"
AGENT_SA = "foundry-agent"
MODEL_SECRET = "model-api"
MODEL_KEY = "sk-ant-in-a-pod-0123456789abcdef"
APP_ID, INSTALLATION_ID = 4242, 77
APP_KEY_ENV = "FOUNDRY_TEST_APP_KEY"
RUN_NAMESPACE = "runs"  # the FoundryRun's namespace; Jobs go to agent.namespace, so it need not exist
PLAN = {"goal": "Greet people by name, without stray spaces", "steps": ["Strip the name in greet()"],
        "files": ["greeter.py"], "tests": [], "outOfScope": []}
TICKET = {"title": "Greet people by name", "url": f"https://linear.app/acme/issue/{ISSUE}",
          "description": "Names come with stray spaces."}
# Small enough that a few attempts fit the 2-core node side by side, big enough for Claude Code.
RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
# A `command` runner that edits the work tree (its cwd) and reports usage as the contract allows.
EDIT_COMMAND = ["python3", "-c",
                "import json, pathlib; p = pathlib.Path('greeter.py'); "
                "p.write_text(p.read_text().replace('{name}', '{name.strip()}')); "
                "print(json.dumps({'summary': 'greet strips the name', 'tokensIn': 11, 'tokensOut': 3, "
                "'costUsd': 0.0004}))"]


def agent_image() -> tuple[str, Path]:
    """(ref, docker-archive tarball) of the agent image, built or reused (foundry.dev.images)."""
    from foundry.dev.images import ensure_images

    ((ref, tar),) = ensure_images(("foundry-agent",)).items()
    return ref, tar


def fake_run(name: str) -> dict[str, Any]:
    """What the JobProvider reads of a FoundryRun (its identity); with agent.namespace set the
    Job cannot be owned by the run, so no real object is needed."""
    return {"metadata": {"name": name, "namespace": RUN_NAMESPACE, "uid": str(uuid.uuid4()),
                         "labels": {"foundry.dev/issue-key": ISSUE}}}


def pod_started(pod: client.V1Pod) -> bool:
    """A container of the pod is running or has run: the pod got past scheduling and sandbox set-up."""
    statuses = [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]
    return any(s.state and (s.state.running or s.state.terminated) for s in statuses)


@dataclass
class Attempt:
    """One dispatched attempt and the moments it passed (monotonic seconds since dispatch)."""

    bed: "AgentPodBed"
    cfg: FoundryConfig
    provider: JobProvider
    run: dict[str, Any]
    job_input: dict[str, Any]
    namespace: str
    dispatched_at: float
    marks: dict[str, float] = field(default_factory=dict)
    plan: bool = False  # plan Job 1 (dispatch_plan, plan_state) instead of attempt 1

    @property
    def name(self) -> str:
        return (plan_job_name if self.plan else attempt_name)(self.run["metadata"]["name"], 1)

    def _mark(self, what: str) -> None:
        self.marks.setdefault(what, round(time.monotonic() - self.dispatched_at, 3))

    def pods(self) -> list[client.V1Pod]:
        selector = (plan_selector if self.plan else attempt_selector)(self.run, 1)
        return self.bed.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def _observe(self) -> None:
        for pod in self.pods():
            if pod_started(pod):
                self._mark("started")
            if pod.status.phase in ("Running", "Succeeded", "Failed"):
                self._mark("running")

    def wait_running(self, timeout: float = 120) -> float:
        """Seconds from dispatch until the pod's phase is Running (all init steps done, publish started),
        or until it ended (a short attempt can pass Running between two polls)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._observe()
            if "running" in self.marks:
                return self.marks["running"]
            time.sleep(0.1)
        raise AssertionError(f"no pod of {self.namespace}/{self.name} ran within {timeout} s: {self._describe()}")

    def wait_ended(self, timeout: float = 240, poll: float = 0.2) -> dict[str, Any]:
        """JobProvider.state() (a plan's plan_state()) once it says the attempt ended (succeeded or failed)."""
        deadline = time.monotonic() + timeout
        read = self.provider.plan_state if self.plan else self.provider.state
        while time.monotonic() < deadline:
            self._observe()
            st = read(self.run, 1)
            if st["state"] != RUNNING:
                self._mark("ended")
                return st
            time.sleep(poll)
        raise AssertionError(f"{self.namespace}/{self.name} still running after {timeout} s: {self._describe()}")

    def wait_job(self, condition: str, timeout: float = 120) -> client.V1Job:
        """The Job once the real Job controller set `condition` (Complete or Failed) on it."""
        deadline = time.monotonic() + timeout
        job = None
        while time.monotonic() < deadline:
            job = self.bed.batch.read_namespaced_job(self.name, self.namespace)
            conds = {c.type: c for c in job.status.conditions or [] if c.status == "True"}
            if condition in conds:
                self._mark(condition.lower())
                return job
            if {"Complete", "Failed"} & conds.keys():
                raise AssertionError(f"Job {self.name} ended {sorted(conds)}, wanted {condition}: {self._describe()}")
            time.sleep(0.1)
        raise AssertionError(f"Job {self.name} not {condition} after {timeout} s: {self._describe()}")

    def logs(self, step: str) -> str:
        pods = self.pods()
        if not pods:
            return "(no pod)"
        try:
            return self.bed.core.read_namespaced_pod_log(pods[-1].metadata.name, self.namespace, container=step)
        except client.ApiException as err:
            return f"(no log: {err.status} {err.reason})"

    def _describe(self) -> str:
        pods = [self.bed.api.sanitize_for_serialization(p.status) for p in self.pods()]
        events = [f"{e.involved_object.kind}/{e.involved_object.name} {e.reason}: {e.message}"
                  for e in self.bed.core.list_namespaced_event(self.namespace).items]
        return f"pods={pods} events={events[-10:]}"


class AgentPodBed:
    """The stand-ins on the node IP, a GitHub App, and restricted namespaces on a started NodeCluster."""

    def __init__(self, cluster: Any, image_ref: str, *, usage: Usage = Usage(input_tokens=1200, output_tokens=80)):
        self.cluster = cluster
        self.image_ref = image_ref
        self.api = cluster.api_client()
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.app_key, public_key = generate_app_key()
        self.github = GitHubServer(host=cluster.node_ip, require_auth=True)
        self.model = ModelServer(host=cluster.node_ip, usage=usage)
        self._public_key = public_key
        self._namespaces: list[str] = []

    def __enter__(self) -> "AgentPodBed":
        self.github.start()
        self.model.start()
        self.github.add_repo(REPO, files=BASE_FILES)
        self.github.protect_branch(REPO, "main")
        self.github.install_app(app_id=APP_ID, public_key_pem=self._public_key, installation_id=INSTALLATION_ID,
                                account=REPO.split("/")[0])
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in self._namespaces:
            try:
                self.core.delete_namespace(ns)
            except client.ApiException:
                pass
        self.model.stop()
        self.github.stop()
        self.api.close()

    # -- what each attempt needs

    def namespace(self, prefix: str = "agents") -> str:
        """A fresh namespace enforcing `restricted`, with the agent's ServiceAccount and the model key."""
        name = restricted_namespace(self.api, f"{prefix}-{uuid.uuid4().hex[:8]}", service_account=AGENT_SA)
        self._namespaces.append(name)
        self.core.create_namespaced_secret(name, {"metadata": {"name": MODEL_SECRET},
                                                  "stringData": {"api-key": MODEL_KEY}})
        return name

    def command_runner(self, command: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        return {"name": "command", "command": list(command or EDIT_COMMAND), "timeout_seconds": 120, **extra}

    def config(self, namespace: str, *, runner: dict[str, Any], agent_seconds: int = 600,
               resources: dict[str, Any] | None = None, **agent: Any) -> FoundryConfig:
        """The operator's configuration for attempts in `namespace`, as a user would write it."""
        return parse_config(self.config_doc(namespace, runner=runner, agent_seconds=agent_seconds,
                                            resources=resources, **agent))

    def config_doc(self, namespace: str, *, runner: dict[str, Any], agent_seconds: int = 600,
                   resources: dict[str, Any] | None = None, **agent: Any) -> dict[str, Any]:
        """config() as the document (for foundry.config.parse_config) before it is parsed."""
        return {
            "repositories": [{"name": "api", "github": REPO}],
            "github": {"api_url": self.github.url, "app_id": APP_ID, "installation_id": INSTALLATION_ID,
                       "private_key_env": APP_KEY_ENV},
            "agent": {"image": self.image_ref, "namespace": namespace, "service_account": AGENT_SA,
                      "env": {"ANTHROPIC_BASE_URL": self.model.url, "OPENAI_BASE_URL": f"{self.model.url}/v1"},
                      "secret_refs": [{"secret": MODEL_SECRET, "key": "api-key", "env": "ANTHROPIC_API_KEY"},
                                      {"secret": MODEL_SECRET, "key": "api-key", "env": "OPENAI_API_KEY"}],
                      "resources": resources or RESOURCES, "runner": runner, **agent},
            "timeouts": {"agent_seconds": agent_seconds},
        }

    def provider(self, cfg: FoundryConfig) -> JobProvider:
        """The real JobProvider with the real App token source (JWT → installation token for the repo)."""
        return JobProvider(cfg, self.api, push_token_source(cfg.github, env={APP_KEY_ENV: self.app_key}))

    def job_input(self, cfg: FoundryConfig, run_name: str) -> dict[str, Any]:
        """input.json v2 as the operator builds it."""
        return jobinput.build(cfg, run=run_name, issue_key=ISSUE, attempt=1, repo=cfg.repositories["api"],
                              branch=f"foundry/{run_name}", api_url=cfg.github.api_url, ticket=TICKET, plan=PLAN)

    def plan_input(self, cfg: FoundryConfig, run_name: str) -> dict[str, Any]:
        """input.json of plan 1 (mode plan) as the operator builds it."""
        return jobinput.build_plan(cfg, run=run_name, issue_key=ISSUE, number=1, repo=cfg.repositories["api"],
                                   branch=f"foundry/{run_name}", api_url=cfg.github.api_url, ticket=TICKET)

    def dispatch(self, cfg: FoundryConfig, run_name: str | None = None, *, plan: bool = False) -> Attempt:
        """Attempt 1 of a new run (`plan`: its plan Job 1 instead), through the real JobProvider."""
        run = fake_run(run_name or f"linear-acme-42-{uuid.uuid4().hex[:6]}")
        provider = self.provider(cfg)
        job_input = (self.plan_input if plan else self.job_input)(cfg, run["metadata"]["name"])
        t0 = time.monotonic()
        (provider.dispatch_plan if plan else provider.dispatch)(run, 1, job_input)
        return Attempt(self, cfg, provider, run, job_input, str(cfg.agent.namespace), t0, plan=plan)

    def dispatch_plan(self, cfg: FoundryConfig, run_name: str | None = None) -> Attempt:
        return self.dispatch(cfg, run_name, plan=True)


__all__ = ["AgentPodBed", "Attempt", "agent_image", "fake_run", "pod_started", "FAILED", "REPO", "AGENT_SA",
           "MODEL_KEY", "EDIT_COMMAND", "RESOURCES"]
