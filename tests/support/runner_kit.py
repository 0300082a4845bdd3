"""Helpers for the runner's tests and benchmark: an origin repository, an input.json, read-backs.

    origin = make_origin(tmp / "origin.git", {"greeter.py": "..."})
    raw = job_input(run="linear-acme-42-1", git_url=origin.as_uri(), api_url="http://127.0.0.1:1")
    clone = fresh_clone(origin.as_uri(), "foundry/linear-acme-42-1", tmp / "check")

Everything is real git run as a subprocess with no user or system config.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0",
           "GIT_AUTHOR_NAME": "Repo Owner", "GIT_AUTHOR_EMAIL": "owner@example.com",
           "GIT_COMMITTER_NAME": "Repo Owner", "GIT_COMMITTER_EMAIL": "owner@example.com"}

BASE_FILES = {
    "README.md": "# api\n",
    "greeter.py": 'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n',
    "deploy/prod.yaml": "replicas: 3\n",
    ".github/workflows/ci.yml": "on: push\njobs: {}\n",
}

PLAN_TEXT = "### Plan\n\n1. Strip the name in `greet`.\n2. Add a test.\n"

# A `command` runner: applies the edits in the JSON file named by argv[1] to the work tree (cwd).
EDIT_SCRIPT = r'''
import json, os, pathlib, subprocess, sys
ops = json.loads(pathlib.Path(sys.argv[1]).read_text())
for path, text in ops.get("write", {}).items():
    p = pathlib.Path(path); p.parent.mkdir(parents=True, exist_ok=True); p.write_text(text)
for path in ops.get("delete", []):
    os.remove(path)
for old, new in ops.get("rename", []):
    pathlib.Path(new).parent.mkdir(parents=True, exist_ok=True); os.rename(old, new)
for argv in ops.get("run", []):
    subprocess.run(argv, check=True)
print(ops.get("say", "edited the work tree"))
'''


def git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", **GIT_ENV}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def make_origin(path: Path, files: dict[str, str] | None = None, branch: str = "main") -> Path:
    """A bare repository at `path` with one commit of `files` on `branch`; force pushes refused like GitHub's
    protected branches would, so a test sees any force as an error."""
    seed = path.with_name(path.name + ".seed")
    git("init", "--quiet", f"--initial-branch={branch}", str(seed))
    for name, text in (files or BASE_FILES).items():
        target = seed / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git("add", "--all", cwd=seed)
    git("commit", "--quiet", "-m", "Initial commit", cwd=seed)
    git("clone", "--quiet", "--bare", str(seed), str(path))
    git("config", "receive.denyNonFastForwards", "true", cwd=path)
    git("config", "receive.denyDeletes", "true", cwd=path)
    return path


def write_edit_script(directory: Path) -> Path:
    path = directory / "edit_agent.py"
    path.write_text(EDIT_SCRIPT)
    return path


def command_runner(script: Path, ops: dict[str, Any], directory: Path, **extra: Any) -> dict[str, Any]:
    """input.json's runner object for the edit script applying `ops`."""
    ops_file = directory / f"ops-{abs(hash(json.dumps(ops, sort_keys=True)))}.json"
    ops_file.write_text(json.dumps(ops))
    return {"name": "command", "command": [sys.executable, str(script), str(ops_file)], "timeoutSeconds": 60,
            **extra}


def job_input(*, run: str = "linear-acme-42-1", issue: str = "ACME-42", attempt: int = 1, repo: str = "acme/api",
              git_url: str, api_url: str, runner: dict[str, Any], pr: int | None = None,
              feedback: dict[str, Any] | None = None, description: str = "Names come with spaces.",
              constraints: dict[str, Any] | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "version": 2, "run": run, "issue": issue, "attempt": attempt, "repo": repo,
        "baseBranch": "main", "branch": f"foundry/{run}",
        "git": {"url": git_url, "apiUrl": api_url},
        "ticket": {"key": issue, "title": "Greet people by name",
                   "url": f"https://linear.app/acme/issue/{issue}", "description": description},
        "plan": {"goal": "greet people by name", "steps": ["strip the name"], "files": ["greeter.py"],
                 "tests": [], "outOfScope": []},
        "planText": PLAN_TEXT,
        "instructions": description,
        "constraints": constraints if constraints is not None else {
            "forbiddenPaths": ["deploy/prod.yaml", "secrets/**"], "maxChangedFiles": 20,
            "maxChangedLines": 1000, "allowWorkflows": False},
        "runner": runner,
    }
    if pr is not None:
        raw["pr"] = {"number": pr}
    if feedback is not None:
        raw["feedback"] = feedback
    return raw


def fresh_clone(url: str, branch: str, dest: Path, env: dict[str, str] | None = None) -> Path:
    """`git clone --branch` into `dest`: what anyone reading the remote sees."""
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", **GIT_ENV, **(env or {})}
    done = subprocess.run(["git", "clone", "--quiet", "--branch", branch, url, str(dest)], env=run_env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git clone of {branch} failed: {done.stderr.strip()}")
    return dest


def remote_sha(url: str, branch: str, env: dict[str, str] | None = None) -> str | None:
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", **GIT_ENV, **(env or {})}
    out = subprocess.run(["git", "ls-remote", "--heads", url, f"refs/heads/{branch}"], env=run_env,
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] if out else None


def trailers(clone: Path, rev: str = "HEAD") -> dict[str, str]:
    text = git("log", "-1", "--format=%(trailers:only,unfold)", rev, cwd=clone)
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def basic_auth(token: str) -> dict[str, str]:
    """Environment that gives a test's own git the token as an HTTP header (for reading back what the
    runner pushed; the runner itself authenticates through its credential helper)."""
    value = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {value}"}
