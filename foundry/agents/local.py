"""The `local` provider: the agent as a subprocess, for development.

Each attempt gets a folder `<root>/<namespace>/<run>-a<attempt>/` holding
`input.json`, `agent.log`, `pid` and, when it ends, `exitcode`. The folder's
`claimed` marker is created with O_EXCL before anything starts, so a second
dispatch of the same attempt (a retry, a restarted operator) adopts the first
instead of starting another process.

The root is agent.local_workdir, else <state dir>/agents. The command is
agent.local_command; it finds its input through $FOUNDRY_JOB_INPUT and writes
the result JSON of docs/agent-contract.md to $FOUNDRY_RESULT_PATH
(`<folder>/result.json`), which state() reports like a pod's termination message.

The push token is what a pod's credentials Secret would hold: written to
`<folder>/credentials/token` (0600) and named by $FOUNDRY_GITHUB_TOKEN_FILE.
The operator's own secrets are not passed on to the command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from foundry.agents.provider import FAILED, MISSING, RUNNING, SUCCEEDED, AgentError, attempt_name, record, run_identity, utc_iso
from foundry.agents.credentials import CredentialError, StaticTokenSource, TokenSource
from foundry.config import FoundryConfig
from foundry.paths import state_dir

# A claim with no pid after this long means the claimant died before starting the process.
CLAIM_GRACE_SECONDS = 30.0
TOKEN_FILE_ENV = "FOUNDRY_GITHUB_TOKEN_FILE"
# The operator's own credentials: the attempt gets its push token by file, nothing else.
_OPERATOR_SECRETS = ("FOUNDRY_GITHUB_TOKEN", "FOUNDRY_LINEAR_API_KEY", "FOUNDRY_LINEAR_WEBHOOK_SECRET",
                     "FOUNDRY_GITHUB_WEBHOOK_SECRET", "FOUNDRY_GITHUB_APP_PRIVATE_KEY", "FOUNDRY_DATABASE_URL")


class LocalProvider:
    """Agent attempts as local subprocesses (development only)."""

    def __init__(self, cfg: FoundryConfig, root: Path | None = None, tokens: TokenSource | None = None) -> None:
        if not cfg.agent.local_command:
            raise AgentError("agent.local_command is required for the local provider")
        self.cfg = cfg
        self.tokens: TokenSource = tokens if tokens is not None else StaticTokenSource.from_env()
        self.root = Path(root or cfg.agent.local_workdir or state_dir() / "agents")
        self._children: dict[Path, subprocess.Popen[bytes]] = {}  # reaped in state()

    def workdir(self, run: Mapping[str, Any], attempt: int) -> Path:
        name, namespace, _ = run_identity(run)
        return self.root / namespace / attempt_name(name, attempt)

    def dispatch(self, run: Mapping[str, Any], attempt: int, job_input: Mapping[str, Any]) -> dict[str, Any]:
        """Start the attempt's process unless its folder is already claimed (then adopt it)."""
        work = self.workdir(run, attempt)
        work.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(work / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            st = self.state(run, attempt)
            return record(work.name, attempt, st["state"], st.get("startedAt"), st.get("finishedAt"))
        os.write(fd, utc_iso().encode())
        os.close(fd)
        tmp = work / "input.json.tmp"
        tmp.write_text(json.dumps(job_input, sort_keys=True, indent=2))
        os.replace(tmp, work / "input.json")
        env = {k: v for k, v in os.environ.items() if k not in _OPERATOR_SECRETS}
        env.update(self.cfg.agent.env)
        token_file = self._write_token(work, str(job_input.get("repo") or ""))
        if token_file is not None:
            env[TOKEN_FILE_ENV] = str(token_file)
        argv = [sys.executable, "-m", "foundry.agents.local_runner", str(work), *self.cfg.agent.local_command]
        proc = subprocess.Popen(argv, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, env=env)
        self._children[work] = proc
        (work / "pid").write_text(str(proc.pid))
        return record(work.name, attempt, RUNNING, utc_iso())

    def _write_token(self, work: Path, repo: str) -> Path | None:
        """The attempt's push token in a private file, like the Secret a pod mounts; None without one
        (the runner then clones anonymously and fails to push with git's own reason)."""
        try:
            token = self.tokens.push_token(repo).token
        except CredentialError:
            return None
        folder = work / "credentials"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / "token"
        fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token)
        return path

    def state(self, run: Mapping[str, Any], attempt: int) -> dict[str, Any]:
        """succeeded/failed from the exit code; running while the process lives; missing if never claimed."""
        work = self.workdir(run, attempt)
        proc = self._children.get(work)
        if proc is not None and proc.poll() is not None:
            self._children.pop(work, None)  # reaped: no zombie left behind
        claimed = work / "claimed"
        if not claimed.exists():
            return {"state": MISSING}
        started = claimed.read_text().strip() or None
        code_file = work / "exitcode"
        if code_file.exists():
            code = int(code_file.read_text().strip() or "1")
            finished = utc_iso_from_mtime(code_file)
            if code == 0:
                out = {"state": SUCCEEDED, "startedAt": started, "finishedAt": finished}
            else:
                out = {"state": FAILED, "startedAt": started, "finishedAt": finished, "reason": f"ExitCode{code}"}
            return {**out, **_result(work)}
        if (work / "cancelled").exists():
            return {"state": FAILED, "startedAt": started, "reason": "Cancelled"}
        pid = _read_pid(work)
        if pid is None:
            if time.time() - claimed.stat().st_mtime > CLAIM_GRACE_SECONDS:
                return {"state": FAILED, "startedAt": started, "reason": "NeverStarted"}
            return {"state": RUNNING, "startedAt": started}
        if _alive(pid):
            return {"state": RUNNING, "startedAt": started}
        return {"state": FAILED, "startedAt": started, "reason": "ProcessVanished"}

    def cancel(self, run: Mapping[str, Any], attempt: int) -> None:
        """Terminate the attempt's process group (it was started in its own session)."""
        work = self.workdir(run, attempt)
        if not (work / "claimed").exists() or (work / "exitcode").exists():
            return
        (work / "cancelled").write_text(utc_iso())
        pid = _read_pid(work)
        if pid is not None and _alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        proc = self._children.pop(work, None)
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def _result(work: Path) -> dict[str, Any]:
    """The fields of `<work>/result.json` the operator records (none if the command wrote none)."""
    from foundry.agents.result import MAX_BYTES, RESULT_FIELDS, parse_result

    path = work / "result.json"
    if not path.exists():
        return {}
    with open(path, "rb") as fh:
        result = parse_result(fh.read(MAX_BYTES + 1))
    if "error" in result:
        return {"outcome": "failed", "reason": f"result.json: {result['error']}"}
    return {k: result[k] for k in RESULT_FIELDS if k in result}


def utc_iso_from_mtime(path: Path) -> str:
    from datetime import datetime, timezone

    return utc_iso(datetime.fromtimestamp(path.stat().st_mtime, timezone.utc))


def _read_pid(work: Path) -> int | None:
    try:
        return int((work / "pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
