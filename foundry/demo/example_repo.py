"""The small example repository the demo agent changes.

Its files seed the GitHub stand-in's repository, a real bare git repository
served over smart HTTP; Foundry's runner clones it, and the demo clones it
again at the end to show what was really pushed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = "acme/greeter"
BASE_BRANCH = "main"
GIT_IDENTITY = ("-c", "user.name=Foundry Demo", "-c", "user.email=demo@foundry.invalid", "-c", "commit.gpgsign=false")

INITIAL_FILES: dict[str, str] = {
    "README.md": "# greeter\n\nSays hello. The example repository of the Foundry demo.\n",
    "greeter.py": (
        '"""Greetings for the people who use our product."""\n\n\n'
        "def greet(name: str) -> str:\n"
        '    return f"Hello, {name}!"\n'
    ),
    "test_greeter.py": (
        "import unittest\n\n"
        "from greeter import greet\n\n\n"
        "class GreetTest(unittest.TestCase):\n"
        "    def test_greets_by_name(self):\n"
        '        self.assertEqual(greet("Ada"), "Hello, Ada!")\n\n\n'
        'if __name__ == "__main__":\n'
        "    unittest.main()\n"
    ),
}

TICKET_TITLE = "Greet people politely when their name is messy"
TICKET_DESCRIPTION = """\
The greeting looks broken when the sign-up form sends a name with spaces around it
or no name at all.

## Acceptance criteria
- [ ] `greet("  Ada ")` returns `Hello, Ada!` (surrounding spaces are ignored)
- [ ] `greet("")` and `greet("   ")` return `Hello, there!`
- [ ] Tests cover both cases

Touches only `greeter.py` and its tests.
"""


class GitError(RuntimeError):
    """A git command failed; the message carries git's own words."""


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GitError(f"git {' '.join(args)} in {repo}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.strip()


def clone(url: str, token: str, path: Path) -> Path:
    """A fresh clone of `url` at `path` (replacing it), all branches fetched; the token goes in an
    HTTP header given through the environment, never into the clone's config."""
    import base64
    import os
    import shutil

    if path.exists():
        shutil.rmtree(path)
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    env = dict(os.environ, GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
               GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}", GIT_TERMINAL_PROMPT="0")
    proc = subprocess.run(["git", "clone", "--quiet", "--no-checkout", url, str(path)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise GitError(f"git clone {url}: {(proc.stderr or proc.stdout).strip()}")
    proc = subprocess.run(["git", "-C", str(path), "fetch", "--quiet", "origin", "+refs/heads/*:refs/heads/*",
                           "--update-head-ok"], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise GitError(f"git fetch {url}: {(proc.stderr or proc.stdout).strip()}")
    git(path, "checkout", "--quiet", BASE_BRANCH)
    return path


def agent_commits(path: Path, run: str) -> list[str]:
    """Subjects of the commits Foundry's runner made for `run` on `foundry/<run>`, oldest first
    (found by their trailer, so they count whether or not the branch has been merged)."""
    out = git(path, "log", "--reverse", "--format=%s", "--fixed-strings", f"--grep=Foundry-Run: {run}",
              f"foundry/{run}")
    return [line for line in out.splitlines() if line]
