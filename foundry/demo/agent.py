"""The demo's local coding agent: `python -m foundry.demo.agent [INPUT.json]`.

Started by the operator's `local` agent provider once per attempt. It reads the
job input (the run, branch `foundry/<run>`, plan, feedback from a failed
attempt), really changes the example git repository, commits on the branch,
pushes the commit to the GitHub stand-in and opens the pull request there.

It is scripted, not clever: the first attempt handles the spaces around a name
but forgets the empty name, so the demo's CI fails once and Foundry's retry
(attempt 2, with the CI failure as feedback) fixes it.

Job input, first found wins: the file named by argv[1], the file named by
$FOUNDRY_JOB_INPUT, or JSON on stdin. Settings: $FOUNDRY_DEMO_REPO (the
example repository) and $FOUNDRY_DEMO_GITHUB_URL (the stand-in's base URL).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from foundry.demo.example_repo import BASE_BRANCH, GitError, git

FIRST_TRY = (
    '"""Greetings for the people who use our product."""\n\n\n'
    "def greet(name: str) -> str:\n"
    "    # Sign-up sends names with stray spaces around them.\n"
    '    return f"Hello, {name.strip()}!"\n'
)
FIXED = (
    '"""Greetings for the people who use our product."""\n\n\n'
    "def greet(name: str) -> str:\n"
    "    # Sign-up sends names with stray spaces around them, or no name at all.\n"
    "    name = name.strip()\n"
    '    return f"Hello, {name or \'there\'}!"\n'
)
TESTS = (
    "import unittest\n\n"
    "from greeter import greet\n\n\n"
    "class GreetTest(unittest.TestCase):\n"
    "    def test_greets_by_name(self):\n"
    '        self.assertEqual(greet("Ada"), "Hello, Ada!")\n\n'
    "    def test_ignores_surrounding_spaces(self):\n"
    '        self.assertEqual(greet("  Ada "), "Hello, Ada!")\n\n'
    "    def test_greets_someone_without_a_name(self):\n"
    '        self.assertEqual(greet(""), "Hello, there!")\n'
    '        self.assertEqual(greet("   "), "Hello, there!")\n\n\n'
    'if __name__ == "__main__":\n'
    "    unittest.main()\n"
)


class AgentError(RuntimeError):
    pass


def read_input(argv: list[str], env: dict[str, str], stdin: Any) -> dict[str, Any]:
    path = argv[1] if len(argv) > 1 else env.get("FOUNDRY_JOB_INPUT")
    try:
        raw = Path(path).read_text() if path else stdin.read()
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise AgentError(f"cannot read the job input ({path or 'stdin'}): {exc}") from None
    missing = [k for k in ("run", "repo", "branch") if not data.get(k)]
    if missing:
        raise AgentError(f"job input lacks {', '.join(missing)}")
    return data


def changes_for(job: dict[str, Any]) -> dict[str, str]:
    """The files this attempt writes (pure): the fix once there is feedback or a later attempt."""
    retrying = bool(job.get("feedback")) or int(job.get("attempt") or 1) > 1
    return {"greeter.py": FIXED if retrying else FIRST_TRY, "test_greeter.py": TESTS}


def commit_locally(repo: Path, job: dict[str, Any], files: dict[str, str]) -> str | None:
    """Commit `files` on the run's branch; the new commit's sha, or None if nothing changed."""
    branch = job["branch"]
    if git(repo, "branch", "--list", branch):
        git(repo, "checkout", "--quiet", branch)
    else:
        git(repo, "checkout", "--quiet", "-b", branch, job.get("baseBranch") or BASE_BRANCH)
    for name, content in files.items():
        (repo / name).write_text(content)
    # Only what the agent wrote: nothing else that happens to lie in the checkout.
    git(repo, "add", "--", *files)
    if not git(repo, "diff", "--cached", "--name-only"):
        return None  # the same attempt run again: its work is already committed
    subject = f"{job.get('issue') or job['run']}: handle messy names (attempt {job.get('attempt', 1)})"
    git(repo, "commit", "--quiet", "-m", subject)
    return git(repo, "rev-parse", "HEAD")


def publish(github_url: str, job: dict[str, Any], files: dict[str, str], local_sha: str | None) -> int | None:
    """Push the change to the GitHub stand-in and open the PR if none is open; the PR number if opened."""
    repo, branch = job["repo"], job["branch"]
    with httpx.Client(base_url=github_url, timeout=30) as http:
        message = f"Handle messy names (attempt {job.get('attempt', 1)})"
        if local_sha:
            message += f"\n\nlocal commit {local_sha}"
        _control(http, "commit", repo=repo, branch=branch, files=files, message=message)
        title = f"{job.get('issue') or job['run']}: greet people politely when their name is messy"
        body = f"Foundry run `{job['run']}`.\n\nPlan: {json.dumps(job.get('plan') or {}, indent=2)}"
        answer = http.post("/_control/open_pr", json={"repo": repo, "head": branch, "title": title, "body": body,
                                                      "base": job.get("baseBranch") or BASE_BRANCH})
        if answer.status_code == 200:
            return int(answer.json()["result"])
        if "already open" in answer.text:
            return None  # a retry pushes to the PR the first attempt opened
        raise AgentError(f"opening the pull request failed: HTTP {answer.status_code} {answer.text}")


def _control(http: httpx.Client, method: str, **kwargs: Any) -> Any:
    answer = http.post(f"/_control/{method}", json=kwargs)
    if answer.status_code != 200:
        raise AgentError(f"GitHub stand-in refused {method}: HTTP {answer.status_code} {answer.text}")
    return answer.json()["result"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    env = dict(os.environ)
    try:
        job = read_input(argv, env, sys.stdin)
        repo = Path(env.get("FOUNDRY_DEMO_REPO") or ".")
        github_url = env.get("FOUNDRY_DEMO_GITHUB_URL")
        if not github_url:
            raise AgentError("FOUNDRY_DEMO_GITHUB_URL is not set")
        files = changes_for(job)
        sha = commit_locally(repo, job, files)
        number = publish(github_url, job, files, sha)
    except (AgentError, GitError, httpx.HTTPError) as exc:
        print(f"demo agent: {exc}", file=sys.stderr)
        return 1
    print(f"demo agent: attempt {job.get('attempt', 1)} of {job['run']} committed "
          f"{sha[:12] if sha else 'nothing new'} on {job['branch']}"
          + (f", opened PR #{number}" if number else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
