"""`foundry dev demo` end to end: start the stack, play the story, show the
result, clean up — on success, failure, Ctrl-C or SIGTERM alike."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry.demo import example_repo
from foundry.demo.progress import Progress
from foundry.demo.stack import LocalStack, StackError
from foundry.demo.story import Story, StoryFailed, StoryResult

KEEP_WORKDIRS = 3
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


@dataclass
class DemoOptions:
    state_dir: Path
    kubeconfig: Path | None = None  # None: the demo starts its own control plane
    namespace: str | None = None
    interactive: bool = False
    keep_resources: bool = False
    summary_path: Path | None = None
    step_timeout: float = 90.0


def new_workdir(state_dir: Path) -> Path:
    """A fresh directory per demo run (so running it twice never trips over the last one),
    keeping only the few most recent for their logs."""
    root = state_dir / "demo"
    root.mkdir(parents=True, exist_ok=True)
    old = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for stale in old[: max(0, len(old) - (KEEP_WORKDIRS - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    # mkdtemp: unique even for two demos started in the same second.
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=root))


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def run_demo(options: DemoOptions, progress: Progress | None = None) -> int:
    progress = progress or Progress()
    workdir = new_workdir(options.state_dir)
    namespace = options.namespace or ("foundry-demo" if options.kubeconfig is None else f"foundry-demo-{os.getpid()}")
    stack = LocalStack(workdir, kubeconfig=options.kubeconfig, namespace=namespace,
                       keep_resources=options.keep_resources, announce=progress.step)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    result = StoryResult()
    code = EXIT_FAILED
    try:
        progress.heading("Starting Foundry locally")
        with progress.waiting("starting the local stack"):
            stack.start()
        progress.heading(f"The story of one ticket (namespace {namespace})")
        confirm = _prompt if options.interactive else None
        story = Story(stack, progress, confirm=confirm, step_timeout=options.step_timeout)
        try:
            result = story.play()
        finally:
            result = story.result
            _write_summary(options.summary_path, stack, result)
        code = EXIT_OK if result.complete else EXIT_FAILED
        _show_result(stack, result)
    except (StackError, StoryFailed) as exc:
        progress.fail(str(exc))
        if result.run:
            _show_result(stack, result)
        progress.note(f"logs: {stack.logs_dir}")
    except KeyboardInterrupt:
        progress.fail("interrupted; cleaning up")
        code = EXIT_INTERRUPTED
    finally:
        # A second Ctrl-C during cleanup would leave processes behind; finish it first.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            with progress.waiting("stopping everything the demo started"):
                stack.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
        progress.step("stopped the operator, the bridge, the stand-ins" +
                      (" and the control plane" if options.kubeconfig is None else ""))
    return code


def _prompt(text: str) -> None:
    input(text)


def _show_result(stack: LocalStack, result: StoryResult) -> None:
    try:
        _print_result(stack, result)
    except Exception as exc:  # noqa: BLE001 - the story's outcome stands; say why the report is short
        print(f"(could not show the run's details: {exc})")


def _print_result(stack: LocalStack, result: StoryResult) -> None:
    from foundry.cli.output import Printer
    from foundry.cli.runs import approval_objects, find_run, read_timeline, render_run

    out = Printer()
    out.line()
    out.line(f"$ kubectl get foundryruns -n {stack.namespace}", style="bold")
    out.line(_kubectl_get_runs(stack))
    if not result.run or stack.api is None:
        return
    out.line()
    out.line(f"$ foundry runs show {result.run} -n {stack.namespace}", style="bold")
    obj = find_run(stack.api, stack.namespace, result.run)
    events, note = read_timeline(stack.namespace, result.run, stack.database_url)
    render_run(out, obj, approval_objects(stack.api, stack.namespace, result.run), events, note)
    out.line()
    out.line("Where to look next:", style="bold")
    branch = f"foundry/{result.run}"
    try:
        commits = example_repo.agent_commits(stack.clone_example(), result.run)
    except example_repo.GitError:
        commits = []
    out.line(f"  the agent's commits:  git -C {stack.repo_dir} log --format=fuller {branch}"
             + (f"  ({len(commits)} commits)" if commits else ""))
    out.line(f"  operator log:         {stack.logs_dir / 'operator.log'}")
    out.line(f"  bridge log:           {stack.logs_dir / 'bridge.log'}")
    out.line(f"  database:             {stack.database_url}")
    out.line("  keep a stack running to explore: foundry dev up")


def _kubectl_get_runs(stack: LocalStack) -> str:
    """kubectl's own table when the binary is at hand, else ours (same printer columns)."""
    try:
        from foundry.dev.binaries import control_plane_bin_dir

        kubectl = control_plane_bin_dir(build=False) / "kubectl"
        proc = subprocess.run([str(kubectl), "--kubeconfig", str(stack.kubeconfig), "get", "foundryruns",
                               "-n", stack.namespace], capture_output=True, text=True, timeout=30)
        if proc.returncode == 0:
            return proc.stdout.rstrip()
    except Exception:  # noqa: BLE001 - no kubectl: fall back to our own listing
        pass
    from foundry.cli.output import plain_table
    from foundry.cli.runs import TABLE_HEADERS, list_run_objects, run_row, sort_runs

    return plain_table(TABLE_HEADERS, [run_row(o) for o in sort_runs(list_run_objects(stack.api, stack.namespace))])


def summary(stack: LocalStack, result: StoryResult) -> dict[str, Any]:
    """What the story left in the outside world, read from the stand-ins themselves."""
    from foundry.connectors.marked_comments import find_markers

    pulls = []
    if stack.github is not None:
        for (repo, number), pr in sorted(stack.github.pulls.items()):
            pulls.append({"repo": repo, "number": number, "state": pr.state, "merged": bool(pr.merged),
                          "head": pr.head_ref, "headSha": pr.head_sha})
    comments = []
    if stack.linear is not None and result.issue_id:
        for c in stack.linear.comments_json(result.issue_id):
            comments.append({"author": c["user"]["email"], "body": c["body"],
                             "purposes": [p for _, p in find_markers(c["body"])]})
    try:
        commits = (example_repo.agent_commits(stack.clone_example(), result.run)
                   if result.run and stack.github is not None else [])
    except example_repo.GitError:
        commits = []
    return {"namespace": stack.namespace, "run": result.run, "phase": result.phase, "issueId": result.issue_id,
            "issueKey": result.issue_key, "pullRequests": pulls, "linearComments": comments,
            "ci": [{"sha": s, "conclusion": c} for s, c in result.ci], "agentCommits": commits,
            "plan": {"hash": result.plan_hash, "files": result.plan_files, "approvedHash": result.approved_hash,
                     "attempts": {str(n): {"given": g, "recorded": r} for n, (g, r) in result.attempt_plans.items()}},
            "databaseUrl": stack.database_url, "logs": str(stack.logs_dir)}


def _write_summary(path: Path | None, stack: LocalStack, result: StoryResult) -> None:
    if path is None:
        return
    path.write_text(json.dumps(summary(stack, result), indent=2))


def stdin_is_interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()
