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
    """A real git commit in the repository's bare store (git_store.py), with its files at hand."""

    sha: str
    parent: str | None  # the first parent
    tree: dict[str, str]  # path -> content: the full snapshot at this commit
    message: str
    author: str
    at: str
    tree_id: str = ""  # the git tree object's sha
    parents: tuple[str, ...] = ()

    @property
    def tree_sha(self) -> str:
        if self.tree_id:
            return self.tree_id
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
    review_comments: int = 0


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
    output: dict[str, str | None] = field(default_factory=lambda: {"title": None, "summary": None, "text": None})
    # GitHub's annotation fields: path, start_line, end_line, annotation_level, title, message, raw_details, ...
    annotations: list[dict[str, object]] = field(default_factory=list)


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
class ReviewComment:
    """A comment on a line of a pull request's diff (GitHub's "pull request review comment")."""

    id: int
    repo: str
    number: int
    review_id: int | None
    user: str
    path: str
    line: int | None
    side: str
    start_line: int | None
    body: str
    commit_id: str
    created_at: str
    in_reply_to: int | None = None


@dataclass(frozen=True)
class RefUpdate:
    """One ref update a push (or the control API) asked for, and whether it was applied."""

    repo: str
    ref: str
    old: str
    new: str
    forced: bool  # new does not descend from old
    accepted: bool
    reason: str  # accepted | non-fast-forward | protected | failed (allowed, but a concurrent push won)
    actor: str
    via: str  # git | control
    at: str

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


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


def diff_hunk(patch: str, line: int | None) -> str:
    """GitHub's `diff_hunk` of a review comment: the hunk holding new-side `line`, up to that line."""
    if not patch:
        return ""
    hunks: list[list[str]] = []
    for text in patch.split("\n"):
        if text.startswith("@@"):
            hunks.append([text])
        elif hunks:
            hunks[-1].append(text)
    for hunk in hunks:
        header = hunk[0].split(" ")
        try:
            new = header[2].lstrip("+").split(",")
            current = int(new[0])
        except (IndexError, ValueError):
            continue
        for i, text in enumerate(hunk[1:], start=1):
            if text.startswith("-") or text.startswith("\\"):
                continue
            if line is not None and current == line:
                return "\n".join(hunk[:i + 1])
            current += 1
    return "\n".join(hunks[0]) if hunks and line is None else (hunks[-1][0] if hunks else "")
