"""`foundry agent run`: the agent image's entrypoint (docs/agent-contract.md)."""

from __future__ import annotations

import os
import signal
import sys

import click

from foundry.runner import result as R
from foundry.runner.layout import DEFAULT_INPUT, ENV_INPUT, Layout

STEP_CHOICES = ("prepare", "agent", "publish", "plan", "verify")


@click.group()
def agent() -> None:
    """The agent runner that works inside each attempt's pod."""


@agent.command("run", context_settings={"max_content_width": 100})
@click.option("--step", type=click.Choice(STEP_CHOICES), default=None,
              help="Run one step (the pod runs prepare and agent as init containers, publish as the main one; "
                   "a plan: prepare and plan as init containers, verify as the main one). Without it, all of "
                   "them run in this process.")
@click.option("--input", "input_path", metavar="PATH", envvar=ENV_INPUT, default=DEFAULT_INPUT, show_default=True,
              help=f"The job input (input.json, version 2); also ${ENV_INPUT}.")
def run(step: str | None, input_path: str) -> None:
    """Run an attempt: clone, run the coding agent, commit, check policy, push, open the PR.

    \b
    Steps:
      prepare  clone the base branch (a remediation: the run's branch) into
               the pristine git directory and check out the work tree
      agent    write the prompt and run the CLI (claude-code, codex, aider or
               a command) in the work tree, under a time limit and output cap
      publish  build one commit from the work tree's files, check it against
               policy, push it without force, open or update the draft PR
      plan     (input.json mode "plan", after prepare) run the CLI read-only
               and record its answer
      verify   (a plan, last) check the work tree is unchanged, validate the
               plan in the answer, report it and its hash; a plan never pushes
               and refuses to start if the push token is mounted

    \b
    Environment:
      FOUNDRY_JOB_INPUT          input.json (default /foundry/input/input.json)
      FOUNDRY_GITHUB_TOKEN_FILE  the push token (default /foundry/credentials/token)
      FOUNDRY_GITHUB_READ_TOKEN_FILE  a plan's read-only clone token
                                 (default /foundry/credentials/read-token)
      FOUNDRY_WORK_DIR           work tree, CLI home, state (default /foundry/work,
                                 outside a pod ./work)
      FOUNDRY_PUBLISH_DIR        pristine git directory (default /foundry/publish,
                                 outside a pod ./publish)
      FOUNDRY_RESULT_PATH        where the result JSON goes (default /dev/termination-log)

    \b
    Exit codes: 0 pushed, planned (or a step done), 1 failed, 2 no changes, 3 refused by policy.
    The transcript goes to stdout; the result JSON (at most 4 KiB) to the result path.
    """
    from foundry.runner.jobinput import JobInputError, load
    from foundry.runner.steps import Context, run_all, run_step

    layout = Layout.from_env()
    secrets = _token(layout)

    def emit(res: R.Result) -> None:
        R.write(res, secrets=secrets)

    try:
        job = load(input_path)
    except JobInputError as err:
        res = R.Result(step=step or "prepare", outcome=R.FAILED, reason=str(err))
        click.echo(f"[foundry] {err}", err=True)
        emit(res)
        sys.exit(res.exit_code)
    ctx = Context(job=job, layout=layout, env=dict(os.environ))
    signal.signal(signal.SIGTERM, _terminated)
    try:
        res = run_step(ctx, step) if step else run_all(ctx, on_result=emit)
    except Terminated as stop:
        killed = _kill_descendants()
        res = R.Result(step=ctx.current or step or "prepare", outcome=R.FAILED, branch=job.branch,
                       reason=f"stopped by {stop} during the {ctx.current or step} step (the attempt was cancelled "
                              f"or ran past its deadline); {killed} process(es) it had started were killed")
        emit(res)
        click.echo(f"[foundry] {res.step}: failed: {res.reason}")
        sys.exit(res.exit_code)
    except Exception as err:  # the last line of defence: a result, not only a traceback
        res = R.Result(step=step or "prepare", outcome=R.FAILED, branch=job.branch,
                       reason=f"internal error in the runner: {type(err).__name__}: {err}")
        emit(res)
        raise
    if step:
        emit(res)
    line = f"[foundry] {res.step}: {res.outcome}" + (f": {res.reason}" if res.reason else "")
    for secret in secrets:
        line = line.replace(secret, "***")
    click.echo(line)
    sys.exit(res.exit_code)


class Terminated(BaseException):
    """SIGTERM arrived (Kubernetes stopping the pod). A BaseException, so no step's handler swallows it."""


def _terminated(signum: int, frame: object) -> None:
    # As a container's PID 1 the runner would otherwise ignore SIGTERM and wait for SIGKILL.
    raise Terminated(signal.Signals(signum).name)


def _kill_descendants() -> int:
    """SIGKILL everything this process started (the CLI runs in a session of its own)."""
    from foundry.runner.agents import proctree

    me = os.getpid()
    procs = [p for p in proctree.related(me) if p.pid != me]
    return proctree.signal_all(procs, signal.SIGKILL)


def _token(layout: Layout) -> list[str]:
    found = []
    for path in (layout.token_file, layout.read_token_file):
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if token:
            found.append(token)
    return found
