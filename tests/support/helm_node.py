"""Helpers for the chart's lifecycle tests on the real node (tests/test_helm_node.py).

    load_chart_images(cluster)                 Foundry's and PostgreSQL's images, built here, under the chart's names
    previous_chart(tmp)                        the chart as it was at the last commit with another version
    StandalonePostgres(core, ns).start()       an "external" PostgreSQL: a plain pod + Service, not the chart's
    query_database(core, ns, secret, key, sql) rows read by a pod in the cluster, as the Foundry image sees them
    wait_release_ready(...)                    StatefulSets and Deployments of a release ready, no pod stuck

Pods in the node's network are not reachable from the test process, so every
look at the database goes through a pod in the cluster.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
import uuid
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from foundry.paths import REPO_ROOT

CHART_PATH = "helm/foundry"
# Waiting reasons that never resolve on their own: fail at once, naming them.
STUCK = {"CreateContainerConfigError", "ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
         "CrashLoopBackOff"}
RESTRICTED = client.V1SecurityContext(allow_privilege_escalation=False, read_only_root_filesystem=True,
                                      run_as_non_root=True, capabilities=client.V1Capabilities(drop=["ALL"]),
                                      seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"))


def load_chart_images(cluster: Any, names: tuple[str, ...] = ("foundry", "postgres")) -> dict[str, str]:
    """Build (or reuse, cached by content) Foundry's images and import them into the node under the
    names the chart uses. The chart's own pods need the Foundry and PostgreSQL images; the agent
    image (2 GB) only when an agent runs. {ref: imported name}."""
    from foundry.dev.images import ensure_images

    return {ref: cluster.import_image(tar, ref) for ref, tar in ensure_images(names).items()}


def foundry_image() -> str:
    from foundry.dev.images import chart_refs

    return chart_refs()[0]


def postgres_image() -> str:
    from foundry.dev.images import POSTGRES_REF

    return POSTGRES_REF


# ---------------------------------------------------------------- the previous chart

def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO_ROOT), *args], check=True, capture_output=True, text=True).stdout


def previous_chart(dest: Path) -> tuple[Path, str, str]:
    """The chart at the newest commit whose Chart.yaml has a version other than today's, extracted under
    `dest`. Returns (chart dir, its version, the commit)."""
    current = yaml.safe_load((REPO_ROOT / CHART_PATH / "Chart.yaml").read_text())["version"]
    for commit in _git("log", "--format=%H", "--", f"{CHART_PATH}/Chart.yaml").split():
        meta = yaml.safe_load(_git("show", f"{commit}:{CHART_PATH}/Chart.yaml"))
        if meta["version"] != current:
            archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit, CHART_PATH],
                                     check=True, capture_output=True).stdout
            with tarfile.open(fileobj=BytesIO(archive)) as tar:
                tar.extractall(dest, filter="data")
            return dest / CHART_PATH, str(meta["version"]), commit
    raise AssertionError(f"no commit has a chart version other than {current}")


# ---------------------------------------------------------------- waiting on a release

def _stuck(pods: list[client.V1Pod]) -> list[str]:
    out = []
    for p in pods:
        for s in (p.status.init_container_statuses or []) + (p.status.container_statuses or []):
            waiting = s.state and s.state.waiting
            if waiting and waiting.reason in STUCK:
                out.append(f"{p.metadata.name}/{s.name}: {waiting.reason}: {waiting.message}")
    return out


def wait_release_ready(core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str, release: str,
                       timeout: float = 300) -> None:
    """Every StatefulSet and Deployment of `release` has all replicas ready and updated; a pod stuck for
    good (a missing secret key, an image that cannot be had, a crash loop) fails at once."""
    selector = f"app.kubernetes.io/instance={release}"
    deadline = time.monotonic() + timeout
    pending: list[str] = []
    while time.monotonic() < deadline:
        stuck = _stuck(core.list_namespaced_pod(namespace, label_selector=selector).items)
        if stuck:
            raise AssertionError("pods that will not start:\n" + "\n".join(stuck))
        pending = []
        for d in apps.list_namespaced_deployment(namespace, label_selector=selector).items:
            want = d.spec.replicas or 0
            st = d.status
            if (st.ready_replicas or 0) < want or (st.updated_replicas or 0) < want or \
                    (st.observed_generation or 0) < d.metadata.generation or (st.replicas or 0) != want:
                pending.append(f"Deployment/{d.metadata.name} {st.ready_replicas or 0}/{want}")
        for s in apps.list_namespaced_stateful_set(namespace, label_selector=selector).items:
            want = s.spec.replicas or 0
            st = s.status
            if (st.ready_replicas or 0) < want or st.current_revision != st.update_revision or \
                    (st.observed_generation or 0) < s.metadata.generation:
                pending.append(f"StatefulSet/{s.metadata.name} {st.ready_replicas or 0}/{want}")
        if not pending:
            return
        time.sleep(1)
    raise AssertionError(f"release {release} not ready after {timeout}s: {pending}")


def init_logs(core: client.CoreV1Api, namespace: str, selector: str, container: str) -> list[str]:
    """The logs of `container` (an init container too) of every pod matching `selector`."""
    return [core.read_namespaced_pod_log(p.metadata.name, namespace, container=container)
            for p in core.list_namespaced_pod(namespace, label_selector=selector).items]


# ---------------------------------------------------------------- looking into the database from inside

def _wait_pod_done(core: client.CoreV1Api, namespace: str, name: str, timeout: float) -> client.V1Pod:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = core.read_namespaced_pod(name, namespace)
        if p.status.phase in ("Succeeded", "Failed"):
            return p
        stuck = _stuck([p])
        if stuck:
            raise AssertionError("\n".join(stuck))
        time.sleep(0.3)
    raise AssertionError(f"pod {namespace}/{name} did not finish in {timeout}s")


def run_python(core: client.CoreV1Api, namespace: str, code: str, *, env: list[client.V1EnvVar] = (),
               image: str | None = None, timeout: float = 90) -> str:
    """Run `code` with the Foundry image's Python in a one-off restricted pod; its stdout (fails on exit != 0)."""
    name = f"probe-{uuid.uuid4().hex[:8]}"
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"foundry.dev/test": "probe"}),
        spec=client.V1PodSpec(
            restart_policy="Never", automount_service_account_token=False, termination_grace_period_seconds=1,
            enable_service_links=False,
            security_context=client.V1PodSecurityContext(run_as_non_root=True, run_as_user=10001, run_as_group=10001),
            containers=[client.V1Container(
                name="probe", image=image or foundry_image(), image_pull_policy="IfNotPresent",
                command=["python3", "-c", code], env=list(env), security_context=RESTRICTED,
                volume_mounts=[client.V1VolumeMount(name="tmp", mount_path="/tmp")])],
            volumes=[client.V1Volume(name="tmp", empty_dir=client.V1EmptyDirVolumeSource())]))
    core.create_namespaced_pod(namespace, pod)
    try:
        done = _wait_pod_done(core, namespace, name, timeout)
        logs = core.read_namespaced_pod_log(name, namespace)
        if done.status.phase != "Succeeded":
            raise AssertionError(f"probe pod failed:\n{logs}")
        return logs
    finally:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


_QUERY = """
import json, os, sys
from sqlalchemy import create_engine, text
engine = create_engine(os.environ["FOUNDRY_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1))
with engine.connect() as c:
    rows = [dict(r._mapping) for r in c.execute(text(sys.argv[1] if len(sys.argv) > 1 else os.environ["SQL"]))]
print("ROWS " + json.dumps(rows, default=str))
"""


def query_database(core: client.CoreV1Api, namespace: str, secret: str, key: str, sql: str) -> list[dict[str, Any]]:
    """Rows of `sql`, read by a pod that gets FOUNDRY_DATABASE_URL from Secret `secret`/`key` as the chart's pods do."""
    env = [client.V1EnvVar(name="SQL", value=sql),
           client.V1EnvVar(name="FOUNDRY_DATABASE_URL", value_from=client.V1EnvVarSource(
               secret_key_ref=client.V1SecretKeySelector(name=secret, key=key)))]
    out = run_python(core, namespace, _QUERY, env=env)
    line = next(line for line in out.splitlines() if line.startswith("ROWS "))
    return json.loads(line[len("ROWS "):])


def wait_rows(core: client.CoreV1Api, namespace: str, secret: str, key: str, sql: str,
              timeout: float = 120) -> list[dict[str, Any]]:
    """query_database until it returns at least one row."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            rows = query_database(core, namespace, secret, key, sql)
        except AssertionError:
            rows = []  # the table may not exist yet
        if rows:
            return rows
        time.sleep(2)
    raise AssertionError(f"no rows for {sql!r} after {timeout}s")


# ---------------------------------------------------------------- an external PostgreSQL

class StandalonePostgres:
    """A PostgreSQL the chart did not make: one pod and a Service in its own namespace, an emptyDir for data.
    The URL is for pods (cluster DNS)."""

    def __init__(self, core: client.CoreV1Api, namespace: str, *, password: str | None = None) -> None:
        self.core, self.namespace = core, namespace
        self.password = password or uuid.uuid4().hex
        self.name = "external-pg"

    @property
    def url(self) -> str:
        return (f"postgresql+psycopg://app:{self.password}@{self.name}.{self.namespace}.svc.cluster.local:5432/"
                "foundry")

    def start(self, timeout: float = 120) -> "StandalonePostgres":
        labels = {"app": self.name}
        sec = client.V1SecurityContext(allow_privilege_escalation=False, run_as_non_root=True,
                                       capabilities=client.V1Capabilities(drop=["ALL"]),
                                       seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"))
        self.core.create_namespaced_pod(self.namespace, client.V1Pod(
            metadata=client.V1ObjectMeta(name=self.name, labels=labels),
            spec=client.V1PodSpec(
                automount_service_account_token=False, termination_grace_period_seconds=5,
                security_context=client.V1PodSecurityContext(run_as_user=999, run_as_group=999, fs_group=999),
                containers=[client.V1Container(
                    name="postgres", image=postgres_image(), image_pull_policy="IfNotPresent",
                    env=[client.V1EnvVar(name="POSTGRES_USER", value="app"),
                         client.V1EnvVar(name="POSTGRES_DB", value="foundry"),
                         client.V1EnvVar(name="POSTGRES_PASSWORD", value=self.password),
                         client.V1EnvVar(name="PGDATA", value="/data/pgdata")],
                    security_context=sec,
                    readiness_probe=client.V1Probe(_exec=client.V1ExecAction(
                        command=["pg_isready", "-h", "127.0.0.1", "-U", "app", "-d", "foundry"]), period_seconds=2),
                    volume_mounts=[client.V1VolumeMount(name="data", mount_path="/data")])],
                volumes=[client.V1Volume(name="data", empty_dir=client.V1EmptyDirVolumeSource())])))
        self.core.create_namespaced_service(self.namespace, client.V1Service(
            metadata=client.V1ObjectMeta(name=self.name),
            spec=client.V1ServiceSpec(selector=labels, ports=[client.V1ServicePort(port=5432, target_port=5432)])))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.core.read_namespaced_pod(self.name, self.namespace)
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []):
                return self
            stuck = _stuck([p])
            if stuck:
                raise AssertionError("\n".join(stuck))
            time.sleep(0.5)
        raise AssertionError(f"the standalone PostgreSQL was not Ready in {timeout}s")
