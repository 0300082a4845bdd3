"""The small example repository the demo agent changes: a real git repository.

The same files seed the GitHub stand-in's repository, so the pull request the
agent opens shows the commits it made here.
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


def create(path: Path) -> Path:
    """A fresh git repository at `path` holding INITIAL_FILES on `main` (replaces whatever was there)."""
    if path.exists():
        import shutil

        shutil.rmtree(path)
    path.mkdir(parents=True)
    git(path, "init", "--quiet", "--initial-branch", BASE_BRANCH)
    for name, content in INITIAL_FILES.items():
        (path / name).write_text(content)
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", "Initial commit")
    return path


def branch_log(path: Path, branch: str, base: str = BASE_BRANCH) -> list[str]:
    """Subjects of the commits on `branch` that are not on `base`, oldest first."""
    out = git(path, "log", "--reverse", "--format=%s", f"{base}..{branch}")
    return [line for line in out.splitlines() if line]
