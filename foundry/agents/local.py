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

A plan (docs/decisions/0021-plan-job.md) runs the same way in
`<root>/<namespace>/<run>-p<n>/` with input.json mode plan: its folder gets
the read-only token at `credentials/read-token` ($FOUNDRY_GITHUB_READ_TOKEN_FILE,
where the runner looks for it), or none, and never the push token (the push
token's variable names a file that does not exist, so the runner's refusal to
plan with a push token cannot be sidestepped by the operator's environment).
plan_state checks the plan (foundry.agents.plan_result), reading a plan cut
from result.json from `agent.log`; past plan.timeout_seconds the plan is
stopped and reported failed with cause DeadlineExceeded, as a plan Job would be.
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
from typing import Any, Callable

from foundry.agents.credentials import CredentialError, StaticTokenSource, TokenSource
from foundry.agents.plan_result import MAX_LOG_BYTES, PLAN_INVALID, PlanInvalid, checked_plan
from foundry.agents.provider import (DEADLINE_EXCEEDED, FAILED, MISSING, RUNNING, SUCCEEDED, AgentError,
                                     attempt_name, plan_job_name, plan_record, record, run_identity, utc_iso)
from foundry.config import FoundryConfig
from foundry.paths import state_dir

# A claim with no pid after this long means the claimant died before starting the process.
CLAIM_GRACE_SECONDS = 30.0
TOKEN_FILE_ENV = "FOUNDRY_GITHUB_TOKEN_FILE"
READ_TOKEN_FILE_ENV = "FOUNDRY_GITHUB_READ_TOKEN_FILE"  # foundry.runner.layout.ENV_READ_TOKEN_FILE
READ_TOKEN_FILE = "read-token"  # in credentials/, the name a plan pod's Secret key has
# The operator's own credentials: the attempt gets its push token by file, nothing else.
_OPERATOR_SECRETS = ("FOUNDRY_GITHUB_TOKEN", "FOUNDRY_GITHUB_READ_TOKEN", "FOUNDRY_LINEAR_API_KEY",
                     "FOUNDRY_LINEAR_WEBHOOK_SECRET", "FOUNDRY_GITHUB_WEBHOOK_SECRET",
                     "FOUNDRY_GITHUB_APP_PRIVATE_KEY", "FOUNDRY_DATABASE_URL",
                     # set here for each folder, never inherited
                     TOKEN_FILE_ENV, READ_TOKEN_FILE_ENV)


class LocalProvider:
    """Agent attempts and plans as local subprocesses (development only)."""

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

    def plan_workdir(self, run: Mapping[str, Any], number: int) -> Path:
        name, namespace, _ = run_identity(run)
        return self.root / namespace / plan_job_name(name, number)

    # -- attempts

    def dispatch(self, run: Mapping[str, Any], attempt: int, job_input: Mapping[str, Any]) -> dict[str, Any]:
        """Start the attempt's process unless its folder is already claimed (then adopt it)."""
        work = self.workdir(run, attempt)
        return self._dispatch(work, job_input, planning=False, adopted=lambda: self.state(run, attempt),
                              entry=lambda *st: record(work.name, attempt, *st))

    def state(self, run: Mapping[str, Any], attempt: int) -> dict[str, Any]:
        """succeeded/failed from the exit code; running while the process lives; missing if never claimed."""
        return self._state(self.workdir(run, attempt))

    def cancel(self, run: Mapping[str, Any], attempt: int) -> None:
        """Terminate the attempt's process group (it was started in its own session)."""
        self._stop(self.workdir(run, attempt), "cancelled")

    # -- plans

    def dispatch_plan(self, run: Mapping[str, Any], number: int, job_input: Mapping[str, Any]) -> dict[str, Any]:
        """Start plan `<run>-p<number>` (input.json mode plan) unless its folder is claimed (then adopt it)."""
        if job_input.get("mode") != "plan":
            raise AgentError("a plan runs input.json mode plan")
        work = self.plan_workdir(run, number)
        return self._dispatch(work, job_input, planning=True, adopted=lambda: self.plan_state(run, number),
                              entry=lambda *st: plan_record(work.name, number, *st))

    def plan_state(self, run: Mapping[str, Any], number: int) -> dict[str, Any]:
        """As AgentProvider.plan_state: a succeeded plan with its checked plan, else why not."""
        work = self.plan_workdir(run, number)
        st = self._state(work, planning=True)
        if st["state"] == RUNNING and self._past_deadline(work):
            self._stop(work, "deadline")
            st = self._state(work, planning=True)
        reported = st.pop("plan", None)
        if st["state"] != SUCCEEDED:
            return st
        try:
            if st.get("outcome") != "planned":
                raise PlanInvalid(f"the plan succeeded but its result reported outcome {st.get('outcome')!r}, "
                                  "not a plan")
            cut = isinstance(reported, Mapping) and reported.get("cut")
            st["plan"] = checked_plan(reported, _log_tail(work / "agent.log") if cut else None)
        except PlanInvalid as err:
            return {**st, "state": FAILED, "outcome": "failed", "reason": PLAN_INVALID, "message": str(err)}
        return st

    def cancel_plan(self, run: Mapping[str, Any], number: int) -> None:
        """Terminate the plan's process group and take its read token away."""
        work = self.plan_workdir(run, number)
        self._stop(work, "cancelled")
        (work / "credentials" / READ_TOKEN_FILE).unlink(missing_ok=True)

    def _past_deadline(self, work: Path) -> bool:
        return time.time() - (work / "claimed").stat().st_mtime > self.cfg.plan.timeout_seconds

    # -- one folder, one process

    def _dispatch(self, work: Path, job_input: Mapping[str, Any], *, planning: bool,
                  adopted: Callable[[], dict[str, Any]], entry: Callable[..., dict[str, Any]]) -> dict[str, Any]:
        """Claim `work` and start the command there, or, when it was claimed already, adopt what runs."""
        work.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(work / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            st = adopted()
            return entry(st["state"], st.get("startedAt"), st.get("finishedAt"))
        started = utc_iso()
        os.write(fd, started.encode())
        os.close(fd)
        tmp = work / "input.json.tmp"
        tmp.write_text(json.dumps(job_input, sort_keys=True, indent=2))
        os.replace(tmp, work / "input.json")
        env = {k: v for k, v in os.environ.items() if k not in _OPERATOR_SECRETS}
        env.update(self.cfg.agent.env)
        env.update(self._token_env(work, str(job_input.get("repo") or ""), planning=planning))
        argv = [sys.executable, "-m", "foundry.agents.local_runner", str(work), *self.cfg.agent.local_command]
        proc = subprocess.Popen(argv, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, env=env)
        self._children[work] = proc
        (work / "pid").write_text(str(proc.pid))
        return entry(RUNNING, started)

    def _token_env(self, work: Path, repo: str, *, planning: bool) -> dict[str, str]:
        """The token in a private file, like the Secret a pod mounts, and the variable naming it: an
        attempt's push token, a plan's read-only one. None to be had: an anonymous clone (an attempt then
        fails to push with git's own reason). A plan's push-token variable names a file never written."""
        env = {TOKEN_FILE_ENV: str(work / "credentials" / "token")} if planning else {}
        try:
            token = self.tokens.read_token(repo) if planning else self.tokens.push_token(repo)
        except CredentialError:
            token = None
        if token is not None:
            variable, name = (READ_TOKEN_FILE_ENV, READ_TOKEN_FILE) if planning else (TOKEN_FILE_ENV, "token")
            env[variable] = str(_private(work, name, token.token))
        return env

    def _state(self, work: Path, *, planning: bool = False) -> dict[str, Any]:
        proc = self._children.get(work)
        if proc is not None and proc.poll() is not None:
            self._children.pop(work, None)  # reaped: no zombie left behind
        claimed = work / "claimed"
        if not claimed.exists():
            return {"state": MISSING}
        started = claimed.read_text().strip() or None
        if (work / "deadline").exists():
            seconds = self.cfg.plan.timeout_seconds
            return {"state": FAILED, "startedAt": started, "finishedAt": utc_iso_from_mtime(work / "deadline"),
                    "outcome": "failed", "cause": DEADLINE_EXCEEDED,
                    "reason": f"the plan ran past its deadline of {seconds} s (DeadlineExceeded)"}
        code_file = work / "exitcode"
        if code_file.exists():
            code = int(code_file.read_text().strip() or "1")
            finished = utc_iso_from_mtime(code_file)
            if code == 0:
                out = {"state": SUCCEEDED, "startedAt": started, "finishedAt": finished}
            else:
                out = {"state": FAILED, "startedAt": started, "finishedAt": finished, "reason": f"ExitCode{code}"}
            return {**out, **_result(work, planning=planning)}
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

    def _stop(self, work: Path, why: str) -> None:
        """Terminate the process group of `work` (started in its own session), leaving the marker `why`."""
        if not (work / "claimed").exists() or (work / "exitcode").exists():
            return
        (work / why).write_text(utc_iso())
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


def _private(work: Path, name: str, token: str) -> Path:
    """`token` in `<work>/credentials/<name>`, readable by this user alone (as a pod's Secret mount is)."""
    folder = work / "credentials"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return path


def _log_tail(path: Path) -> str | None:
    """The last MAX_LOG_BYTES of the folder's log (the verify step's frame is at its end); None if absent."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - MAX_LOG_BYTES))
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None


def _result(work: Path, *, planning: bool = False) -> dict[str, Any]:
    """The fields of `<work>/result.json` the operator records (none if the command wrote none);
    a plan's also its `plan` as reported (plan_state checks it)."""
    from foundry.agents.result import MAX_BYTES, RESULT_FIELDS, parse_result

    path = work / "result.json"
    if not path.exists():
        return {}
    with open(path, "rb") as fh:
        result = parse_result(fh.read(MAX_BYTES + 1), planning=planning)
    if "error" in result:
        return {"outcome": "failed", "reason": f"result.json: {result['error']}"}
    return {k: result[k] for k in (*RESULT_FIELDS, "plan") if k in result}


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
