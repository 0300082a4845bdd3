"""State of the local GitHub: repositories, commits, pull requests, checks, reviews.

Plain data; github_payloads.py renders it in GitHub's JSON shapes and
github_server.py serves and mutates it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def blob_sha(content: str) -> str:
    data = content.encode()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    parent: str | None
    tree: dict[str, str]  # path -> content: a full snapshot keeps diffs trivial
    message: str
    author: str
    at: str

    @property
    def tree_sha(self) -> str:
        return hashlib.sha1(json.dumps(self.tree, sort_keys=True).encode()).hexdigest()


@dataclass
class Repo:
    id: int
    owner: str
    name: str
    default_branch: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)  # branch -> head sha

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Pull:
    id: int
    number: int
    repo: str
    title: str
    body: str
    user: str
    head_ref: str
    head_sha: str
    base_ref: str
    base_sha: str  # the base branch head when the PR was opened: files are diffed against it
    draft: bool
    created_at: str
    updated_at: str
    state: str = "open"
    merged: bool = False
    merged_at: str | None = None
    merged_by: str | None = None
    merge_commit_sha: str | None = None
    closed_at: str | None = None
    comments: int = 0


@dataclass
class CheckRun:
    id: int
    suite_id: int
    repo: str
    head_sha: str
    name: str
    status: str  # queued | in_progress | completed
    conclusion: str | None
    started_at: str
    completed_at: str | None


@dataclass
class CommitStatus:
    id: int
    repo: str
    sha: str
    state: str  # error | failure | pending | success
    context: str
    description: str
    created_at: str


@dataclass
class Review:
    id: int
    repo: str
    number: int
    user: str
    state: str  # APPROVED | CHANGES_REQUESTED | COMMENTED (REST spelling)
    body: str
    commit_id: str
    submitted_at: str


@dataclass
class IssueComment:
    id: int
    repo: str
    number: int
    user: str
    body: str
    created_at: str


def file_changes(base: dict[str, str], head: dict[str, str]) -> list[dict[str, object]]:
    """The changed files between two snapshots, in the fields GitHub's pulls/files returns."""
    changes: list[dict[str, object]] = []
    for path in sorted(set(base) | set(head)):
        old, new = base.get(path), head.get(path)
        if old == new:
            continue
        status = "added" if old is None else "removed" if new is None else "modified"
        diff = list(difflib.unified_diff((old or "").splitlines(), (new or "").splitlines(), lineterm="", n=3))[2:]
        additions = sum(1 for line in diff if line.startswith("+"))
        deletions = sum(1 for line in diff if line.startswith("-"))
        changes.append({
            "sha": blob_sha(new if new is not None else old or ""),
            "filename": path,
            "status": status,
            "additions": additions,
            "deletions": deletions,
            "changes": additions + deletions,
            "patch": "\n".join(diff),
        })
    return changes
