"""Drive one coding-agent CLI (Claude Code, Codex, Aider, or any command) in a work tree.

    spec = spec_from_input(job_input["runner"])
    report = run_agent(spec, workdir=repo, home=private_home, prompt=prompt, env=os.environ,
                       transcript=sys.stdout.buffer, bin_dir=clis / "bin")

Each adapter module (claude_code, codex, aider, command) builds its CLI's argv and
environment and reads its output; this module finds the executable, runs it
(process.run_process: own process group, stdin /dev/null, wall-clock limit, output
cap, nothing left running) and turns what happened into an AgentReport.

Where the executables come from: `bin_dir`, else $FOUNDRY_AGENT_BIN_DIR (from `env`),
else the PATH in `env`. tools/agent-clis.sh installs the pinned versions and prints
the directory holding bin/.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

from foundry.runner.agents import aider, claude_code, codex, command
from foundry.runner.agents.adapter import SetupError, one_line
from foundry.runner.agents.environment import DEFAULT_PATH
from foundry.runner.agents.process import run_process
from foundry.runner.agents.spec import AgentReport, AgentSpec, spec_from_input

__all__ = ["AgentSpec", "AgentReport", "spec_from_input", "run_agent", "ADAPTERS", "INSTALL_HINT"]

ADAPTERS: dict[str, Any] = {"claude-code": claude_code, "codex": codex, "aider": aider, "command": command}
LABELS = {"claude-code": "Claude Code", "codex": "Codex", "aider": "Aider", "command": "the command"}
INSTALL_HINT = "install the pinned agent CLIs with tools/agent-clis.sh (it prints the directory holding bin/)"
BIN_DIR_VAR = "FOUNDRY_AGENT_BIN_DIR"


def _failed(reason: str, *, exit_code: int | None = None, timed_out: bool = False, summary: str = "",
            **usage: Any) -> AgentReport:
    return AgentReport(ok=False, exit_code=exit_code, timed_out=timed_out, reason=one_line(reason, 500),
                       summary=summary, turns=usage.get("turns"), tokens_in=usage.get("tokens_in"),
                       tokens_out=usage.get("tokens_out"), cost_usd=usage.get("cost_usd"))


def find_executable(spec: AgentSpec, env: Mapping[str, str], bin_dir: Path | None) -> Path:
    if spec.name == "command":
        name = spec.command[0]
        if "/" in name:
            path = Path(name)
            if not path.is_file():
                raise SetupError(f"runner.command: {name} does not exist")
            return path
        found = shutil.which(name, path=env.get("PATH") or DEFAULT_PATH)
        if not found:
            raise SetupError(f"runner.command: {name} is not on PATH ({env.get('PATH') or DEFAULT_PATH})")
        return Path(found)
    exe = ADAPTERS[spec.name].EXECUTABLE
    where = bin_dir or (Path(env[BIN_DIR_VAR]) if env.get(BIN_DIR_VAR) else None)
    if where is not None:
        path = where / exe
        if path.is_file():
            return path
        raise SetupError(f"{LABELS[spec.name]} ({exe}) is not installed in {where}; {INSTALL_HINT}")
    found = shutil.which(exe, path=env.get("PATH") or DEFAULT_PATH)
    if not found:
        raise SetupError(f"{LABELS[spec.name]} ({exe}) is not on PATH and no bin directory was given "
                         f"(bin_dir or ${BIN_DIR_VAR}); {INSTALL_HINT}")
    return Path(found)


@contextlib.contextmanager
def _sink(transcript: Path | IO[bytes] | None) -> Iterator[IO[bytes] | None]:
    if transcript is None or hasattr(transcript, "write"):
        yield transcript  # type: ignore[misc]
        return
    path = Path(transcript)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        yield fh


def _shown_argv(argv: list[str], prompt: str) -> str:
    return " ".join(f"<prompt: {len(prompt)} characters>" if a == prompt or a.endswith("=" + prompt) else a
                    for a in argv)


def run_agent(spec: AgentSpec, *, workdir: Path, home: Path, prompt: str, env: Mapping[str, str],
              transcript: Path | IO[bytes] | None = None, bin_dir: Path | None = None) -> AgentReport:
    """Run the CLI `spec` names on `prompt` in `workdir`; never raises for a CLI's failure.

    `env` is the caller's environment: only allow-listed names reach the CLI (see
    environment.py). `home` becomes its HOME and must lie outside `workdir`, so the
    CLI's own files never land in the repository. `transcript` (a path, or a binary
    stream such as the pod log) receives the CLI's output up to the cap.
    """
    adapter = ADAPTERS.get(spec.name)
    if adapter is None:
        return _failed(f"unknown runner {spec.name!r}; expected one of {', '.join(ADAPTERS)}")
    workdir, home = Path(workdir).resolve(), Path(home).resolve()
    label = LABELS[spec.name]
    try:
        if not workdir.is_dir():
            raise SetupError(f"the work tree {workdir} does not exist")
        if home == workdir or workdir in home.parents:
            raise SetupError(f"HOME ({home}) must be outside the repository ({workdir}): the CLI's files would be "
                             f"committed")
        home.mkdir(parents=True, exist_ok=True)
        exe = find_executable(spec, env, bin_dir)
        inv = adapter.prepare(spec, exe=exe, workdir=workdir, home=home, prompt=prompt, env=env)
    except SetupError as err:
        return _failed(str(err))
    except OSError as err:
        return _failed(f"cannot prepare {label}: {err}")
    with _sink(transcript) as sink:
        if sink is not None:
            lines = [f"agent {spec.name}: {_shown_argv(inv.argv, prompt)}", *inv.notes,
                     f"environment: {', '.join(sorted(inv.env))} (values not shown)"]
            sink.write("".join(f"[foundry] {line}\n" for line in lines).encode())
            sink.flush()
        out = run_process(inv.argv, cwd=workdir, env=inv.env, timeout=spec.timeout_seconds,
                          cap=spec.output_cap_bytes, on_stdout_line=inv.reader.stdout_line,
                          on_stderr_line=inv.reader.stderr_line, transcript=sink)
    parsed = inv.reader.finish()
    usage = {"turns": parsed.turns, "tokens_in": parsed.tokens_in, "tokens_out": parsed.tokens_out,
             "cost_usd": parsed.cost_usd}
    if out.start_error:
        return _failed(f"cannot start {label}: {out.start_error}")
    if out.timed_out:
        return _failed(f"{label} ran past its limit of {spec.timeout_seconds} s and was stopped "
                       f"(with everything it started)", timed_out=True, summary=parsed.summary, **usage)
    if out.aborted:
        return _failed(f"{label} was stopped: {out.aborted}", summary=parsed.summary, **usage)
    if out.exit_code != 0:
        detail = parsed.error or (out.stderr_tail[-1] if out.stderr_tail else "no error message")
        return _failed(f"{label} exited with code {out.exit_code}: {detail}", exit_code=out.exit_code,
                       summary=parsed.summary, **usage)
    if parsed.error:
        return _failed(f"{label} exited 0 but reported a failure: {parsed.error}", exit_code=0,
                       summary=parsed.summary, **usage)
    return AgentReport(ok=True, exit_code=0, timed_out=False, reason="", summary=parsed.summary, **usage)
