#!/usr/bin/env python3
"""The agent runner's overhead next to bare git, on the same stand-in repository.

    .venv/bin/python tools/bench_runner.py             # 10 runs of each
    .venv/bin/python tools/bench_runner.py -n 20 --files 500

Both paths talk to the local GitHub stand-in (real git smart HTTP through
`git http-backend`, token authentication) and change the same file:
- bare:   `git clone` + edit + `git commit` + `git push` of a new branch;
- runner: `foundry agent run` (one process, all three steps) with the `command`
  runner making the same edit: clone into the pristine git directory, a work
  tree, the prompt, the command, one commit built from the work tree, the policy
  check, the push, and a draft PR through the REST API;
- runner (in-process): the same three steps as functions in this process, which
  leaves out the Python start-up of a fresh `foundry` process; its steps' medians
  are printed too.

Prints the median (and min/max) wall time of each, and runner ÷ bare.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# tests.support (the harnesses) is importable from the repository root only.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foundry.runner.jobinput import parse  # noqa: E402
from foundry.runner.layout import Layout  # noqa: E402
from foundry.runner.steps import Context, run_step  # noqa: E402
from foundry.dev.github_server import GitHubServer  # noqa: E402
from tests.support.runner_kit import command_runner, job_input, write_edit_script  # noqa: E402

REPO = "acme/api"
FIXED = 'def greet(name: str) -> str:\n    return f"Hello, {name.strip()}!"\n'


def seed_files(count: int) -> dict[str, str]:
    files = {"README.md": "# api\n", "greeter.py": 'def greet(name):\n    return f"Hello, {name}!"\n'}
    for i in range(count):
        files[f"pkg/mod{i:04d}.py"] = "".join(f"def f{j}(x):\n    return x + {j}\n" for j in range(20))
    return files


def bare_once(url: str, token_file: Path, workdir: Path, branch: str) -> float:
    """clone + edit + commit + push with plain git (token through a one-line credential helper)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(workdir), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0", "TOKEN_FILE": str(token_file)}
    helper = ["-c", "credential.helper=!f() { echo username=x-access-token; printf password=; cat \"$TOKEN_FILE\"; }; f"]
    dest = workdir / "clone"
    started = time.perf_counter()
    subprocess.run(["git", *helper, "clone", "--quiet", url, str(dest)], env=env, check=True)
    (dest / "greeter.py").write_text(FIXED)
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=b@x", "commit", "--quiet", "-am", "edit"],
                   cwd=dest, env=env, check=True)
    subprocess.run(["git", *helper, "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}"], cwd=dest, env=env,
                   check=True)
    return time.perf_counter() - started


def runner_input(gh: GitHubServer, script: Path, workdir: Path, run: str) -> dict:
    return job_input(run=run, repo=REPO, git_url=gh.git_url(REPO), api_url=gh.url,
                     runner=command_runner(script, {"write": {"greeter.py": FIXED}}, workdir))


def runner_cli_once(gh: GitHubServer, script: Path, token_file: Path, workdir: Path, run: str) -> float:
    (workdir / "input.json").write_text(json.dumps(runner_input(gh, script, workdir, run)))
    env = {**os.environ, "FOUNDRY_JOB_INPUT": str(workdir / "input.json"), "FOUNDRY_WORK_DIR": str(workdir / "w"),
           "FOUNDRY_PUBLISH_DIR": str(workdir / "p"), "FOUNDRY_GITHUB_TOKEN_FILE": str(token_file),
           "FOUNDRY_RESULT_PATH": str(workdir / "result.json")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "foundry.cli.main", "agent", "run"], env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    result = json.loads((workdir / "result.json").read_text())
    if done.returncode != 0 or result.get("outcome") != "pushed":
        raise SystemExit(f"runner run {run} did not push: {result.get('reason')}\n{done.stdout}{done.stderr}")
    return elapsed


STEP_TIMES: dict[str, list[float]] = {"prepare": [], "agent": [], "publish": []}


def runner_inproc_once(gh: GitHubServer, script: Path, token_file: Path, workdir: Path, run: str,
                       record: bool = True) -> float:
    job = parse(runner_input(gh, script, workdir, run))
    ctx = Context(job=job, layout=Layout(workdir / "w", workdir / "p", token_file), out=io.StringIO(),
                  env={"PATH": os.environ["PATH"]})
    started = time.perf_counter()
    for step in STEP_TIMES:
        t = time.perf_counter()
        res = run_step(ctx, step)
        if record:
            STEP_TIMES[step].append(time.perf_counter() - t)
        if res.outcome not in ("ok", "pushed"):
            raise SystemExit(f"in-process run {run} did not push: {res.reason}")
    return time.perf_counter() - started


def describe(name: str, times: list[float]) -> str:
    return (f"{name:<22} median {statistics.median(times) * 1000:7.1f} ms   "
            f"min {min(times) * 1000:7.1f}   max {max(times) * 1000:7.1f}   (n={len(times)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=10, help="runs of each path (default 10)")
    ap.add_argument("--files", type=int, default=200, help="extra files in the repository (default 200)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="foundry-bench-runner-"))
    try:
        token = "ghs_bench_runner_token_0123456789"
        token_file = root / "token"
        token_file.write_text(token)
        script = write_edit_script(root)
        with GitHubServer(token=token, require_auth=True, git_root=root / "github") as gh:
            gh.add_repo(REPO, files=seed_files(args.files))
            print(f"repository {REPO}: {args.files + 2} files; {args.runs} runs of each path, interleaved",
                  file=sys.stderr)
            times: dict[str, list[float]] = {"bare git": [], "runner (process)": [], "runner (in-process)": []}
            for i in range(args.runs + 1):  # round 0 warms caches and is not counted
                for key, name in enumerate(times):
                    work = root / f"path{key}-{i}"
                    work.mkdir()
                    if key == 0:
                        t = bare_once(gh.git_url(REPO), token_file, work, f"bench/bare-{i}")
                    elif key == 1:
                        t = runner_cli_once(gh, script, token_file, work, f"bench-cli-{i}")
                    else:
                        t = runner_inproc_once(gh, script, token_file, work, f"bench-fn-{i}", record=i > 0)
                    if i:
                        times[name].append(t)
                    shutil.rmtree(work, ignore_errors=True)
        print(f"load average during the runs: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores")
        for name, ts in times.items():
            print(describe(name, ts))
        print("  in-process steps: " + ", ".join(f"{k} {statistics.median(v) * 1000:.0f} ms"
                                                 for k, v in STEP_TIMES.items())
              + " (agent = the command runner: a Python script that edits one file)")
        bare = statistics.median(times["bare git"])
        for name in ("runner (process)", "runner (in-process)"):
            print(f"ratio {name} / bare git: {statistics.median(times[name]) / bare:.2f}")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
