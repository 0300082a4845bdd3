"""Driving the real `helm` and `kubectl` binaries against Foundry's chart, for tests.

Thin wrappers: each call runs the binary, and a failure raises with its stderr,
so a test failure says what helm or kubectl said.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from foundry.paths import REPO_ROOT

CHART = REPO_ROOT / "helm" / "foundry"
FIXTURES = REPO_ROOT / "helm" / "fixtures"
# The version our source-built helm assumes when no cluster is asked (its built-in default is v1.20).
KUBE_VERSION = "1.35.4"


class ToolFailed(RuntimeError):
    def __init__(self, args: list[str], proc: subprocess.CompletedProcess) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        super().__init__(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr.strip() or proc.stdout.strip()}")


def run_tool(args: list[str | Path], *, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
    argv = [str(a) for a in args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise ToolFailed(argv, proc)
    return proc


def set_args(values: dict[str, Any] | None) -> list[str]:
    """--set-json arguments for a (nested) dict of values."""
    import json

    return [a for k, v in (values or {}).items() for a in ("--set-json", f"{k}={json.dumps(v)}")]


def template(helm: Path, *, release: str = "rel", namespace: str = "foundry", values_files: list[Path] = (),
             values: dict[str, Any] | None = None, chart: Path = CHART, check: bool = True,
             show_only: str | None = None) -> subprocess.CompletedProcess:
    args: list[str | Path] = [helm, "template", release, chart, "--namespace", namespace, "--kube-version", KUBE_VERSION]
    for f in values_files:
        args += ["--values", f]
    args += set_args(values)
    if show_only:
        args += ["--show-only", show_only]
    return run_tool(args, check=check)


def render(helm: Path, **kwargs: Any) -> list[dict[str, Any]]:
    """The chart's objects (hooks and tests included) as dicts."""
    out = template(helm, **kwargs).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """'Kind/name' → pod spec, for every object that runs pods."""
    out = {}
    for o in objects:
        if o.get("kind") in ("Deployment", "Job", "StatefulSet"):
            out[f"{o['kind']}/{o['metadata']['name']}"] = o["spec"]["template"]["spec"]
        elif o.get("kind") == "Pod":
            out[f"Pod/{o['metadata']['name']}"] = o["spec"]
    return out


def render_notes(helm: Path, **kwargs: Any) -> str:
    """NOTES.txt as `helm install` would print it, without a cluster: `helm template` never renders
    NOTES, so a copy of the chart carries it as a partial inside one extra template."""
    import shutil
    import tempfile

    chart = Path(kwargs.pop("chart", CHART))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / chart.name
        shutil.copytree(chart, copy)
        notes = (copy / "templates" / "NOTES.txt").read_text()
        (copy / "templates" / "_notes_as_partial.tpl").write_text(
            '{{- define "test.notes" -}}\n' + notes + "\n{{- end -}}\n")
        (copy / "templates" / "notes-as-object.yaml").write_text(
            'kind: RenderedNotes\ntext: |\n  {{- include "test.notes" . | nindent 2 }}\n')
        out = template(helm, chart=copy, show_only="templates/notes-as-object.yaml", **kwargs).stdout
    return yaml.safe_load(out)["text"]


def helm_cmd(helm: Path, kubeconfig: Path, *args: str | Path) -> list[str | Path]:
    return [helm, "--kubeconfig", kubeconfig, *args]


# ---------------------------------------------------------------- playing the kubelet for hook Jobs

class HookPlayer:
    """Runs the chart's migration hook Job the way a kubelet would, on a control plane without one.

    helm waits for a pre-install/pre-upgrade Job to complete. The local API server
    stores Jobs but nothing runs them, so this thread watches for the hook Job,
    runs its container's args with the real `foundry` command on this machine
    (secretKeyRef values read from the API, HOME redirected to a temp folder),
    then writes the Job status a Job controller would (Complete or Failed).

    `pinned` maps an app version (the Job's app.kubernetes.io/version label) to
    the Alembic revision that version's image had as head: an older image cannot
    be run here, so its migration is replayed as "upgrade to that revision".
    `on_job(job)` is called before running it (to observe the cluster's state).
    """

    def __init__(self, api, namespace: str, workdir: Path, *, pinned: dict[str, str] | None = None,
                 on_job=None) -> None:
        import threading

        self.api = api
        self.namespace = namespace
        self.workdir = workdir
        self.pinned = pinned or {}
        self.on_job = on_job
        self.ran: list[dict[str, Any]] = []  # {"name", "uid", "args", "returncode", "output"}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hook-player", daemon=True)

    def __enter__(self) -> "HookPlayer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.errors:
            raise self.errors[0]

    def _loop(self) -> None:
        from kubernetes import client

        batch = client.BatchV1Api(self.api)
        seen: set[str] = set()
        while not self._stop.wait(0.2):
            try:
                jobs = batch.list_namespaced_job(self.namespace, label_selector="app.kubernetes.io/component=migration")
                for job in jobs.items:
                    if job.metadata.uid in seen or job.metadata.deletion_timestamp:
                        continue
                    seen.add(job.metadata.uid)
                    self._play(batch, self.api.sanitize_for_serialization(job))
            except BaseException as err:  # noqa: BLE001 - re-raised by __exit__ in the test thread
                self.errors.append(err)
                return

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        import base64
        import os

        from kubernetes import client

        core = client.CoreV1Api(self.api)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDRY_")}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                secret = core.read_namespaced_secret(ref["name"], self.namespace)
                env[item["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
        # The pod's /tmp is its own emptyDir; here, a folder of the test's.
        env["HOME"] = str(self.workdir)
        env["FOUNDRY_STATE_DIR"] = str(self.workdir / "state")
        return env

    def _play(self, batch, job: dict[str, Any]) -> None:
        import sys
        from tests.support.jobs import finished_job_status

        if self.on_job:
            self.on_job(job)
        container = job["spec"]["template"]["spec"]["containers"][0]
        env = self._env(container)
        version = job["metadata"].get("labels", {}).get("app.kubernetes.io/version")
        if version in self.pinned:
            from foundry.db import migrate

            migrate.upgrade(env["FOUNDRY_DATABASE_URL"], self.pinned[version])
            returncode, output = 0, f"upgraded to {self.pinned[version]} (image {version})"
        else:
            # The image's ENTRYPOINT is `foundry`; the Job gives its args.
            foundry = Path(sys.executable).parent / "foundry"
            proc = subprocess.run([str(foundry), *container["args"]],
                                  env=env, capture_output=True, text=True, timeout=120)
            returncode, output = proc.returncode, proc.stdout + proc.stderr
        self.ran.append({"name": job["metadata"]["name"], "uid": job["metadata"]["uid"], "args": container["args"],
                         "returncode": returncode, "output": output})
        status = finished_job_status(returncode == 0, ran_for=1)
        batch.patch_namespaced_job_status(job["metadata"]["name"], self.namespace, {"status": status})
