"""Publishing an attempt: one commit built from the work tree's files, checked, pushed, PR'd.

Nothing in the work tree's .git is trusted (the agent could have committed,
rewritten history, planted hooks or config there): the commit is built in the
pristine git directory prepare cloned, from the work tree's *files*, on top of
the commit prepare cloned. The policy check runs on that commit's changes
before anything leaves the pod; then one push, fast-forward only; then the
draft PR is opened, or the existing one's body is updated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from foundry.domain.changes import Change, ChangeVerdict, Violation, check_changes
from foundry.runner import gitops
from foundry.runner.jobinput import JobInput
from foundry.runner.layout import Layout
from foundry.runner.prompt import strip_html_comments
from foundry.runner.pulls import PullRef, PullsApi, open_or_update

SUBJECT_CAP = 72
SUMMARY_CAP = 4000
PR_TITLE_CAP = 200
# GitHub refuses a PR body over 65,536 characters; keep clear of it.
PR_BODY_CAP = 60000
RULE_NESTED_REPO = "nested-repository"
_TRAILER_LIKE = re.compile(r"^\s*foundry-[a-z-]+\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class Built:
    """The attempt's change as publish sees it, before anything is pushed."""

    base: str
    tree: str
    changes: list[Change]
    verdict: ChangeVerdict

    @property
    def empty(self) -> bool:
        return not self.changes

    @property
    def added(self) -> int:
        return sum(c.additions for c in self.changes)

    @property
    def removed(self) -> int:
        return sum(c.deletions for c in self.changes)


def build(git: gitops.Git, layout: Layout, job: JobInput, base: str, base_tree: str) -> Built:
    """Snapshot the work tree's files onto `base` and judge the change (no commit, no push yet)."""
    tree = gitops.snapshot_tree(git, layout.git_dir, base, layout.repo, layout.index)
    changes, gitlinks = ([], []) if tree == base_tree else gitops.diff_changes(git, layout.git_dir, base_tree, tree)
    verdict = check_changes(changes, job.constraints)
    if gitlinks:  # git would commit a pointer to a repository nobody can fetch: never what a plan asks for
        nested = tuple(Violation(RULE_NESTED_REPO, f"{path} is a nested git repository (the runner commits files, "
                                                   "not submodules)", path) for path in gitlinks)
        verdict = ChangeVerdict(False, nested + verdict.violations, verdict.files, verdict.lines)
    return Built(base, tree, changes, verdict)


def commit_message(job: JobInput, summary: str) -> str:
    """Subject, the agent's summary (no trailer imitations), then the trailers Foundry owns."""
    title = " ".join((job.ticket.title or f"run {job.run}").split())
    subject = f"{job.issue}: {title}"
    if len(subject) > SUBJECT_CAP:
        subject = subject[: SUBJECT_CAP - 1].rstrip() + "…"
    body = "\n".join(ln for ln in summary.strip().splitlines() if not _TRAILER_LIKE.match(ln)).strip()
    if len(body) > SUMMARY_CAP:
        body = body[:SUMMARY_CAP].rstrip() + "…"
    trailers = f"Foundry-Run: {job.run}\nFoundry-Attempt: {job.attempt}\nFoundry-Issue: {job.issue}"
    return f"{subject}\n\n{body}\n\n{trailers}\n" if body else f"{subject}\n\n{trailers}\n"


def pr_title(job: JobInput) -> str:
    title = " ".join((job.ticket.title or f"run {job.run}").split())
    full = f"{job.issue}: {title}"
    return full if len(full) <= PR_TITLE_CAP else full[: PR_TITLE_CAP - 1].rstrip() + "…"


def pr_body(job: JobInput, summary: str) -> str:
    """The ticket link, the approved plan (as approved), and what the agent says it did."""
    t = job.ticket
    link = f"[{job.issue}: {' '.join(t.title.split())}]({t.url})" if t.url else f"{job.issue}: {' '.join(t.title.split())}"
    plan = job.plan_text.strip() or "(no plan text was given)"
    said = strip_html_comments(summary).strip() or "(the agent gave no summary)"
    if len(said) > SUMMARY_CAP:
        said = said[:SUMMARY_CAP].rstrip() + "…"
    head = (f"Foundry run `{job.run}` for {link}. Attempt {job.attempt}; this pull request stays a draft "
            "until a person marks it ready.\n\n## Approved plan\n\n")
    tail = f"\n\n## What the agent did (attempt {job.attempt})\n\n{said}\n"
    room = PR_BODY_CAP - len(head) - len(tail)
    if len(plan) > room:
        plan = plan[: max(0, room - 40)].rstrip() + "\n\n… (the plan is cut here)"
    return head + plan + tail


def commit_and_push(git: gitops.Git, layout: Layout, job: JobInput, built: Built, summary: str,
                    remote: gitops.Remote) -> str:
    """The one commit (parent: the cloned commit), pushed to the run's branch without force; its SHA."""
    sha = gitops.commit_tree(git, layout.git_dir, built.tree, built.base, commit_message(job, summary))
    gitops.push(git, layout.git_dir, remote, sha, job.branch)
    return sha


def open_pull(api: PullsApi, job: JobInput, summary: str) -> PullRef:
    """Open the draft PR, or update the attempt's PR; closes `api` either way."""
    try:
        return open_or_update(api, job.repo, number=job.pr_number, branch=job.branch, base=job.base_branch,
                              title=pr_title(job), body=pr_body(job, summary))
    finally:
        api.close()
