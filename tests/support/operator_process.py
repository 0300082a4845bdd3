"""The operator as a child process, for the kill -9 tests.

A fault point (tests.support.crash_points) ends the process with `os._exit(137)`
mid-reconcile, which only a separate process survives to observe. The child is
`python -m tests.support.operator_kit -n NS`, which builds its Deps the
production way (foundry.operator.deps.build_deps) from the environment made
here: a config file from the OperatorStack's config pointed at its Linear and
GitHub servers (they run in the test process and are reached over HTTP), the
database URL, the kubeconfig and the two API secrets.

    with OperatorProcess.open(stack, kubeconfig, pg_url, tmp_path) as op:
        op.start(fault="after-job-create")
        assert op.wait_exit() == 137, op.log_tail()
        op.start()  # the restart: same environment, no fault
        ...
        op.kill(); op.start(fault="after-comment-post")  # arm it again, for a later comment
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from tests.support.operator_stack import stack_config
from tests.support.pytest_operator_errors import watch_log

REPO_ROOT = Path(__file__).resolve().parents[2]

# Inherited settings that would change what the child talks to or whether it dies.
_SCRUB = ("FOUNDRY_FAULT", "FOUNDRY_FAULT_ONCE_DIR", "FOUNDRY_LINEAR_URL", "FOUNDRY_GITHUB_URL",
          "FOUNDRY_CONFIG", "FOUNDRY_METRICS_PORT")


def write_config(stack: Any, path: Path, config: dict[str, Any] | None = None) -> Path:
    """The stand's config as the YAML file FOUNDRY_CONFIG names, with the API
    URLs of the stand's Linear and GitHub servers."""
    doc = dict(config or stack_config())
    doc["linear"] = {**doc.get("linear", {}), "api_url": stack.linear.graphql_url}
    doc["github"] = {**doc.get("github", {}), "api_url": stack.github.url}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def operator_env(stack: Any, kubeconfig: Path | str, database_url: str, config_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update({
        "FOUNDRY_CONFIG": str(config_path),
        "FOUNDRY_DATABASE_URL": database_url,
        "KUBECONFIG": str(kubeconfig),
        "FOUNDRY_LINEAR_API_KEY": stack.linear.api_key,
        "FOUNDRY_GITHUB_TOKEN": stack.github.token,
        "PYTHONUNBUFFERED": "1",
        # The child runs `-m tests.support.operator_kit`: the repository root must be importable
        # whatever the working directory.
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
    })
    return env


@dataclass
class OperatorProcess:
    namespace: str
    env: dict[str, str]
    workdir: Path
    proc: subprocess.Popen | None = None
    starts: int = 0
    _log: Any = field(default=None, repr=False)

    @classmethod
    @contextmanager
    def open(cls, stack: Any, kubeconfig: Path | str, database_url: str, workdir: Path,
             config: dict[str, Any] | None = None) -> Iterator["OperatorProcess"]:
        """A process handle for the stack's namespace; whatever still runs at the end is stopped."""
        workdir.mkdir(parents=True, exist_ok=True)
        config_path = write_config(stack, workdir / "foundry.yaml", config)
        op = cls(stack.namespace, operator_env(stack, kubeconfig, database_url, config_path), workdir)
        try:
            yield op
        finally:
            op.kill()

    @property
    def log_path(self) -> Path:
        return self.workdir / "operator.log"

    def start(self, fault: str | None = None) -> None:
        """Start the operator; with `fault`, armed to die once at that point.
        Each armed start gets its own once-directory, so a later start can arm
        the same point again for a later occurrence of the side effect."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the operator is still running; kill it or wait for its exit first")
        self._close_log()
        env = dict(self.env)
        if fault:
            once = self.workdir / f"faults-{uuid.uuid4().hex[:8]}"
            once.mkdir()
            env.update(FOUNDRY_FAULT=fault, FOUNDRY_FAULT_ONCE_DIR=str(once))
        self.starts += 1
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n===== start {self.starts} (fault: {fault or 'none'}) =====\n".encode())
        self._log.flush()
        watch_log(self.log_path)  # the running test fails on its unexpected errors (pytest_operator_errors)
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.operator_kit", "-n", self.namespace],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_exit(self, timeout: float = 60.0) -> int:
        """The exit code of the running operator (137 after a fault point fired)."""
        assert self.proc is not None, "not started"
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the operator did not exit within {timeout}s\n{self.log_tail()}") from None

    def stop(self, timeout: float = 30.0) -> int:
        """A clean stop (SIGTERM, as Kubernetes ends a pod); its exit code."""
        assert self.proc is not None and self.proc.poll() is None, "not running"
        self.proc.terminate()
        code = self.wait_exit(timeout)
        self._close_log()
        return code

    def kill(self) -> None:
        """kill -9 and reap. Also how a test restarts the operator at a moment
        it chooses (a run waiting on someone else), and how it ends: a clean
        SIGTERM costs kopf's daemon cancellation timeout (5 s) for nothing,
        and surviving a kill -9 anywhere is the property under test anyway."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)
        self._close_log()

    def log_tail(self, lines: int = 60) -> str:
        if self._log is not None:
            self._log.flush()
        if not self.log_path.exists():
            return "(no operator log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
