"""`foundry dev demo|up|down`: the whole of Foundry on one machine.

`demo` plays one ticket to a merged PR and exits 0 only if the run reached
Complete. `up` keeps the same stack running in the background for
exploration and prints how to reach it; `down` stops it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from foundry.paths import state_dir

STACK_FILE = "stack.json"


def _cluster_choice(use_current_context: bool, kubeconfig: str | None) -> Path | None:
    """Which existing cluster to use, or None to start a local control plane."""
    if kubeconfig:
        if not Path(kubeconfig).is_file():
            raise click.BadParameter(f"no such file: {kubeconfig}", param_hint="--kubeconfig")
        return Path(kubeconfig)
    if not use_current_context:
        return None
    candidate = (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
    if not Path(candidate).is_file():
        raise click.UsageError(f"--use-current-context: no kubeconfig at {candidate} (set KUBECONFIG)")
    return Path(candidate)


cluster_options = [
    click.option("--use-current-context", is_flag=True,
                 help="Use the cluster of the current kube context instead of starting a local control plane."),
    click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None,
                 help="Use the cluster of this kubeconfig instead of starting a local control plane."),
    click.option("-n", "--namespace", default=None, help="Namespace for the runs (default: foundry-demo[-<pid>])."),
]


def _with_cluster_options(func: Any) -> Any:
    for option in reversed(cluster_options):
        func = option(func)
    return func


@click.command("demo")
@_with_cluster_options
@click.option("-y", "--yes", is_flag=True, help="Do not pause for Enter even on a terminal.")
@click.option("--keep", is_flag=True, help="On an existing cluster, leave the namespace and its runs behind.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False), default=None,
              help="Write what the story left in Linear, GitHub and the cluster to this JSON file.")
@click.option("--step-timeout", type=click.FloatRange(5, 3600), default=90.0, show_default=True,
              help="Seconds to wait for any one step before giving up.")
def demo(use_current_context: bool, kubeconfig: str | None, namespace: str | None, yes: bool, keep: bool,
         summary_path: str | None, step_timeout: float) -> None:
    """Run Foundry locally end to end: a Linear ticket becomes a merged pull request.

    Starts a local control plane (unless --use-current-context or --kubeconfig),
    installs the CRDs, uses SQLite in the state directory, starts the local Linear
    and GitHub servers, `foundry bridge`, `foundry operator` and a local agent that
    commits to a small example git repository, then plays one ticket through
    approval, a failed CI run, a retry and a merge. Everything it started is
    stopped on exit, failure or Ctrl-C. On a terminal it pauses before the human
    steps (approve, merge); with stdin not a terminal it runs unattended.

    Exit status: 0 the run reached Complete, 1 it did not, 130 interrupted.
    """
    from foundry.demo.run import DemoOptions, run_demo, stdin_is_interactive

    options = DemoOptions(
        state_dir=state_dir(),
        kubeconfig=_cluster_choice(use_current_context, kubeconfig),
        namespace=namespace,
        interactive=stdin_is_interactive() and not yes,
        keep_resources=keep,
        summary_path=Path(summary_path) if summary_path else None,
        step_timeout=step_timeout,
    )
    sys.exit(run_demo(options))


# ---- up / down -----------------------------------------------------------------


def _stack_dir() -> Path:
    return state_dir() / "dev-stack"


def running_stack() -> dict[str, Any] | None:
    """The description of a `foundry dev up` stack that is still running, if any."""
    from foundry.demo.processes import pid_alive

    path = _stack_dir() / STACK_FILE
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
    except ValueError:
        return None
    return info if pid_alive(int(info.get("pid", 0))) else None


def _print_stack(info: dict[str, Any]) -> None:
    click.echo(f"# Foundry dev stack (supervisor pid {info['pid']}); stop it with: foundry dev down", err=True)
    click.echo(f"export KUBECONFIG={info['kubeconfig']}")
    click.echo(f"export FOUNDRY_NAMESPACE={info['namespace']}")
    click.echo(f"export FOUNDRY_DATABASE_URL={info['database_url']}")
    rows = [
        ("bridge", info["bridge"]),
        ("Linear (GraphQL)", info["linear_graphql"]),
        ("Linear webhook secret", info["linear_webhook_secret"]),
        ("Linear API key", info["linear_api_key"]),
        ("GitHub (REST)", info["github"]),
        ("GitHub webhook secret", info["github_webhook_secret"]),
        ("GitHub token", info["github_token"]),
        ("config", info["config"]),
        ("example repository", info["example_repo"]),
        ("logs", info["logs"]),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"# {key.ljust(width)}  {value}", err=True)
    linear = info["linear_graphql"].rsplit("/graphql", 1)[0]
    click.echo("# start a run:  curl -s -X POST " + linear + "/_control/create_issue -H 'Content-Type: application/json' "
               "-d '{\"team_key\": \"ACME\", \"title\": \"Greet people politely\", \"description\": "
               "\"## Acceptance criteria\\n- greet(\\\"\\\") says Hello, there!\", "
               "\"labels\": [\"foundry\", \"repo:greeter\"]}'", err=True)
    click.echo("# then:         foundry runs list; foundry approve <run> --context alice", err=True)


@click.command("up")
@_with_cluster_options
@click.option("--foreground", is_flag=True, help="Run in this terminal until Ctrl-C instead of in the background.")
def up(use_current_context: bool, kubeconfig: str | None, namespace: str | None, foreground: bool) -> None:
    """Keep the local Foundry stack running for exploration.

    The same pieces as `foundry dev demo` (control plane, CRDs, SQLite, the local
    Linear and GitHub servers, bridge, operator, local agent) without the story.
    Prints the URLs, the webhook secrets and tokens, and the KUBECONFIG to export.
    """
    existing = running_stack()
    if existing:
        _print_stack(existing)
        return
    cluster = _cluster_choice(use_current_context, kubeconfig)
    if foreground:
        _serve(cluster, namespace)
        return
    directory = _stack_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STACK_FILE).unlink(missing_ok=True)
    args = [sys.executable, "-m", "foundry.cli.main", "dev", "up", "--foreground"]
    if cluster is not None:
        args += ["--kubeconfig", str(cluster)]
    if namespace:
        args += ["--namespace", namespace]
    log_path = directory / "supervisor.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    click.echo("starting the local Foundry stack ...", err=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        info = running_stack()
        if info:
            _print_stack(info)
            return
        if proc.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise click.ClickException(f"the stack did not start (exit {proc.returncode}); {log_path}:\n{tail}")
        time.sleep(0.3)
    raise click.ClickException(f"the stack was not ready within 300 s; see {log_path}")


def _serve(cluster: Path | None, namespace: str | None) -> None:
    from foundry.demo.stack import LocalStack, StackError

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    directory = _stack_dir()
    stack = LocalStack(directory / "run", kubeconfig=cluster, namespace=namespace or "foundry-dev",
                       announce=lambda text: click.echo(f"  {text}", err=True))
    info_path = directory / STACK_FILE
    try:
        stack.start()
        info = {"pid": os.getpid(), **stack.info()}
        info_path.write_text(json.dumps(info, indent=2))
        _print_stack(info)
        click.echo("# press Ctrl-C to stop", err=True)
        while not stop.wait(1.0):
            stack.check_alive()
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        info_path.unlink(missing_ok=True)
        stack.stop()
        click.echo("stack stopped", err=True)


@click.command("down")
def down() -> None:
    """Stop the stack started by `foundry dev up` (exit 1 if none is running)."""
    from foundry.demo.processes import stop_pid

    info = running_stack()
    if info is None:
        click.echo("no Foundry dev stack is running", err=True)
        sys.exit(1)
    stop_pid(int(info["pid"]), timeout=60)
    click.echo("Foundry dev stack stopped")
