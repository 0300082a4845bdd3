"""The local Foundry stack: everything `foundry dev demo` and `foundry dev up` run.

Start order: control plane (unless a kubeconfig is given) → CRDs → namespace →
SQLite schema → example git repository → Linear and GitHub stand-ins (in this
process) → `foundry bridge` → webhooks pointed at it → `foundry operator` with
the local agent provider. stop() undoes it in reverse and is safe to call
after a partial start, twice, or from a signal handler's unwinding.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from foundry.demo import example_repo
from foundry.demo.config import APPROVER_EMAIL, APPROVER_KUBE_USER, APPROVER_NAME, TEAM, demo_config
from foundry.demo.processes import Child
from foundry.kube.crds import GROUP, VERSION

BRIDGE_READY = "foundry bridge listening on"
FOUNDRY = [sys.executable, "-m", "foundry.cli.main"]
# Webhook retries of the stand-ins come after 60 s, 1 h, 6 h like the real
# services; scaled down so a delivery refused during start-up is retried in seconds.
WEBHOOK_RETRY_SCALE = 0.05


class StackError(RuntimeError):
    """A piece of the stack did not start; the message says which and where its log is."""


@dataclass
class LocalStack:
    workdir: Path
    kubeconfig: Path | None = None  # None: start a local control plane
    namespace: str = "foundry-demo"
    keep_resources: bool = False  # leave the namespace and its runs in an existing cluster
    announce: Any = None  # callable(str) for progress lines

    linear: Any = field(default=None, init=False)
    github: Any = field(default=None, init=False)
    api: Any = field(default=None, init=False)
    bridge_url: str = field(default="", init=False)
    database_url: str = field(default="", init=False)
    config_path: Path = field(default=Path(), init=False)
    repo_dir: Path = field(default=Path(), init=False)
    alice_id: str = field(default="", init=False)
    linear_secret: str = field(default_factory=lambda: secrets.token_hex(16), init=False)
    github_secret: str = field(default_factory=lambda: secrets.token_hex(16), init=False)
    # The plan's clone token: may read the example repository and nothing else (a push with it is refused).
    read_token: str = field(default_factory=lambda: "ghp_demo_read_" + secrets.token_hex(12), init=False)
    _control_plane: Any = field(default=None, init=False)
    _children: list[Child] = field(default_factory=list, init=False)
    _namespace_created: bool = field(default=False, init=False)

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def agent_workdir(self) -> Path:
        """The local provider's root: a folder per plan and attempt, <namespace>/<run>-p<n> and -a<n>."""
        return self.workdir / "agent-work"

    @property
    def own_cluster(self) -> bool:
        return self._control_plane is not None

    def _say(self, text: str) -> None:
        if self.announce:
            self.announce(text)

    # ---- start ----------------------------------------------------------------

    def start(self) -> "LocalStack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        self._start_cluster()
        self._prepare_cluster()
        self._prepare_database()
        self.repo_dir = self.workdir / "example-repo"  # a clone of the stand-in's repository, made by clone_example()
        self._start_standins()
        self._write_config()
        self._start_bridge()
        self._start_operator()
        return self

    def _start_cluster(self) -> None:
        if self.kubeconfig is not None:
            self._say(f"using the cluster of {self.kubeconfig}")
            return
        from foundry.dev.binaries import BinariesUnavailable, control_plane_bin_dir
        from foundry.dev.controlplane import ControlPlane, ControlPlaneError

        try:
            bin_dir = control_plane_bin_dir(build=True)
        except BinariesUnavailable as exc:
            raise StackError(str(exc)) from None
        cp = ControlPlane(bin_dir=bin_dir, workdir=self.workdir / "cluster")
        self._control_plane = cp
        try:
            cp.start()
        except ControlPlaneError as exc:
            raise StackError(f"the local control plane did not start: {exc}") from None
        self.kubeconfig = cp.kubeconfig
        self._say(f"local Kubernetes control plane at {cp.server} (etcd + kube-apiserver)")

    def _prepare_cluster(self) -> None:
        from kubernetes import client
        from kubernetes import config as kube_config

        from foundry.kube.crds import install_crds

        self.api = kube_config.new_client_from_config(config_file=str(self.kubeconfig))
        install_crds(self.api)
        self._say("CRDs installed: foundryruns.foundry.dev, foundryapprovals.foundry.dev")
        core = client.CoreV1Api(self.api)
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
                name=self.namespace, labels={"app.kubernetes.io/part-of": "foundry-demo"})))
            self._namespace_created = True
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        self._grant_approver()

    def _grant_approver(self) -> None:
        """Let the demo approver (Kubernetes user alice) use `foundry approve` in the namespace."""
        from kubernetes import client

        rbac = client.RbacAuthorizationV1Api(self.api)
        name = "foundry-demo-approver"
        role = {"metadata": {"name": name}, "rules": [
            {"apiGroups": ["foundry.dev"], "resources": ["foundryruns"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["foundry.dev"], "resources": ["foundryapprovals"], "verbs": ["get", "list", "create"]},
        ]}
        binding = {"metadata": {"name": name},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": APPROVER_KUBE_USER}]}
        for create in (lambda: rbac.create_namespaced_role(self.namespace, role),
                       lambda: rbac.create_namespaced_role_binding(self.namespace, binding)):
            try:
                create()
            except client.ApiException as exc:
                if exc.status != 409:
                    raise

    def _prepare_database(self) -> None:
        from foundry.db import migrate

        path = self.workdir / "foundry.db"
        for leftover in self.workdir.glob("foundry.db*"):
            leftover.unlink()
        self.database_url = f"sqlite:///{path}"
        migrate.upgrade(self.database_url)
        self._say(f"SQLite database {path} (schema migrated)")

    def _start_standins(self) -> None:
        from foundry.dev.github_server import GitHubServer
        from foundry.dev.linear_server import LinearServer

        self.linear = LinearServer(webhook_secret=self.linear_secret, retry_scale=WEBHOOK_RETRY_SCALE).start()
        self.linear.add_team(TEAM, "Acme")
        self.alice_id = self.linear.add_user(APPROVER_NAME, APPROVER_EMAIL)
        # require_auth: clone and push need a token, as on GitHub; the runner gets one by file.
        self.github = GitHubServer(webhook_secret=self.github_secret, retry_scale=WEBHOOK_RETRY_SCALE,
                                   require_auth=True).start()
        self.github.add_repo(example_repo.REPO, default_branch=example_repo.BASE_BRANCH,
                             files=dict(example_repo.INITIAL_FILES))
        self.github.register_token(self.read_token, login="foundry-planner", repositories=[example_repo.REPO],
                                   permissions={"contents": "read", "metadata": "read"})
        self._say(f"local Linear at {self.linear.graphql_url}, local GitHub at {self.github.url} "
                  f"(git: {self.github.git_url(example_repo.REPO)})")

    def _write_config(self) -> None:
        self.config_path = self.workdir / "foundry.yaml"
        self.agent_workdir.mkdir(exist_ok=True)
        cfg = demo_config(linear_graphql_url=self.linear.graphql_url, github_url=self.github.url,
                          agent_workdir=self.agent_workdir)
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDRY_")}
        env.update({
            "KUBECONFIG": str(self.kubeconfig),
            "FOUNDRY_NAMESPACE": self.namespace,
            "FOUNDRY_DATABASE_URL": self.database_url,
            "FOUNDRY_CONFIG": str(self.config_path),
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def _start_bridge(self) -> None:
        env = self._base_env() | {
            "FOUNDRY_LINEAR_WEBHOOK_SECRET": self.linear_secret,
            "FOUNDRY_GITHUB_WEBHOOK_SECRET": self.github_secret,
        }
        bridge = Child("bridge", FOUNDRY + ["bridge", "--host", "127.0.0.1", "--port", "0"], env,
                       self.logs_dir / "bridge.log").start()
        self._children.append(bridge)
        try:
            self.bridge_url = bridge.wait_for_line(BRIDGE_READY, timeout=60)
        except RuntimeError as exc:
            raise StackError(str(exc)) from None
        self.linear.set_webhook_url(f"{self.bridge_url}/webhooks/linear")
        self.github.set_webhook_url(f"{self.bridge_url}/webhooks/github")
        self._say(f"foundry bridge at {self.bridge_url}; both stand-ins send their signed webhooks there")

    def _start_operator(self) -> None:
        env = self._base_env() | {
            "FOUNDRY_LINEAR_API_KEY": self.linear.api_key,
            "FOUNDRY_LINEAR_URL": self.linear.graphql_url,
            "FOUNDRY_GITHUB_TOKEN": self.github.token,
            # What the local provider hands a plan (as a plan Job's read-token Secret), never the push token.
            "FOUNDRY_GITHUB_READ_TOKEN": self.read_token,
            "FOUNDRY_GITHUB_URL": self.github.url,
        }
        operator = Child("operator", FOUNDRY + ["operator", "--namespace", self.namespace], env,
                         self.logs_dir / "operator.log").start()
        self._children.append(operator)
        time.sleep(0.5)
        if not operator.alive():
            raise StackError(f"foundry operator exited at once; last lines of {operator.log_path}:\n{operator.tail()}")
        self._say(f"foundry operator watching namespace {self.namespace} "
                  "(agent: `foundry agent run` as a local process, driving the demo's command agent)")

    def clone_example(self) -> Path:
        """A fresh clone of the example repository from the stand-in (what the agent really pushed)."""
        assert self.github is not None
        return example_repo.clone(self.github.git_url(example_repo.REPO), self.github.token, self.repo_dir)

    def check_alive(self) -> None:
        """StackError naming the first child that died, with the end of its log."""
        for child in self._children:
            if not child.alive():
                raise StackError(f"foundry {child.name} stopped unexpectedly; last lines of {child.log_path}:\n{child.tail()}")

    # ---- what a person needs to explore it --------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "kubeconfig": str(self.kubeconfig),
            "namespace": self.namespace,
            "database_url": self.database_url,
            "config": str(self.config_path),
            "bridge": self.bridge_url,
            "linear_graphql": self.linear.graphql_url if self.linear else None,
            "linear_webhook_secret": self.linear_secret,
            "linear_api_key": self.linear.api_key if self.linear else None,
            "github": self.github.url if self.github else None,
            "github_webhook_secret": self.github_secret,
            "github_token": self.github.token if self.github else None,
            "example_repo": str(self.repo_dir),
            "logs": str(self.logs_dir),
        }

    # ---- stop -----------------------------------------------------------------

    def stop(self) -> None:
        if self.api is not None and not self.own_cluster and not self.keep_resources:
            self._delete_runs()
        for child in reversed(self._children):
            child.stop()
        self._children.clear()
        for server in (self.github, self.linear):
            if server is not None:
                server.stop()
        self.github = self.linear = None
        if self.api is not None:
            if not self.own_cluster and not self.keep_resources and self._namespace_created:
                self._delete_namespace()
            self.api.close()
            self.api = None
        if self._control_plane is not None:
            self._control_plane.stop()
            shutil.rmtree(self.workdir / "cluster" / "etcd-data", ignore_errors=True)
            self._control_plane = None

    def _delete_runs(self, timeout: float = 30.0) -> None:
        """Delete the demo's runs while the operator still runs, so its finalizer lets them go."""
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)
        try:
            custom.delete_collection_namespaced_custom_object(GROUP, VERSION, self.namespace, "foundryruns")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                left = custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "foundryruns")
                if not left["items"]:
                    return
                time.sleep(0.3)
            self._say(f"some FoundryRuns in {self.namespace} still have finalizers; delete them by hand")
        except Exception as exc:  # noqa: BLE001 - cleanup goes on; say what was left behind
            self._say(f"could not delete the demo's FoundryRuns in {self.namespace}: {exc}")

    def _delete_namespace(self) -> None:
        from kubernetes import client

        try:
            client.CoreV1Api(self.api).delete_namespace(self.namespace)
        except Exception as exc:  # noqa: BLE001
            self._say(f"could not delete namespace {self.namespace}: {exc}")
