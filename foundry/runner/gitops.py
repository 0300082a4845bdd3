"""git as a subprocess, with nothing from the environment or a repository trusted.

Every git the runner starts gets:
- a clean environment (PATH, locale, a private empty HOME, no inherited GIT_*),
  GIT_CONFIG_NOSYSTEM=1 and GIT_CONFIG_GLOBAL=/dev/null, so no system or user
  config (aliases, hooks, credential stores, fsmonitor) applies;
- `core.hooksPath=/dev/null`: no hook runs, whoever planted it;
- only the http(s) and file transports (GIT_ALLOW_PROTOCOL), no redirects;
- when it talks to the remote, a credential helper (the shell script next to
  this file) scoped to the remote's origin, which reads the token from
  $FOUNDRY_GITHUB_TOKEN_FILE when git asks. The token is never in argv, a URL,
  the environment or a config file: git gets it on the helper's stdout.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from foundry.domain.changes import Change

CREDENTIAL_HELPER = Path(__file__).with_name("git-credential-foundry")
DEFAULT_TIMEOUT = 600.0
AUTHOR_NAME = "Foundry agent"
AUTHOR_EMAIL = "agent@foundry.dev"
# A stalled transfer fails after this long below 1 KB/s instead of hanging until the Job's deadline.
_LOW_SPEED = ("-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60")
_STATUS = {"A": "added", "M": "modified", "D": "deleted", "T": "modified", "R": "renamed", "C": "copied"}


class GitError(RuntimeError):
    """A git command failed; `summary` is the one-line reason for a result."""

    def __init__(self, what: str, stderr: str, code: int | None) -> None:
        detail = _last_line(stderr) or (f"exit code {code}" if code is not None else "timed out")
        super().__init__(f"{what}: {detail}")
        self.what = what
        self.stderr = stderr
        self.code = code

    @property
    def summary(self) -> str:
        return str(self)


def _last_line(text: str) -> str:
    """The most telling line of git's output: a rejected ref, else the first `fatal:`/`error:`, else the last."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for prefixes in (("! [",), ("remote: error", "fatal:", "error:")):
        for ln in lines:
            if ln.startswith(prefixes):
                return " ".join(ln.split())
    return lines[-1] if lines else ""


@dataclass(frozen=True)
class Remote:
    """Where to clone from and push to, and the file holding the token for it (None: no auth)."""

    url: str
    token_file: str | None = None

    def config(self) -> list[str]:
        """`-c` arguments that authenticate to this remote only, through the helper script."""
        if not self.token_file:
            return []
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https"):
            return []  # file:// needs no credentials
        origin = f"{parts.scheme}://{parts.netloc}"
        helper = f"!sh {shlex.quote(str(CREDENTIAL_HELPER))}"
        # The empty value resets any helper list; the scoped one answers for this origin alone.
        return ["-c", "credential.helper=", "-c", f"credential.{origin}.helper={helper}",
                "-c", f"credential.{origin}.username=x-access-token"]


class Git:
    """Runs git commands with the hardened environment (module doc)."""

    def __init__(self, *, scratch: Path | None = None, timeout: float = DEFAULT_TIMEOUT,
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="foundry-git-home-", dir=scratch))
        self.timeout = timeout
        self.extra_env = dict(extra_env or {})

    def env(self, remote: Remote | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(self.home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ALLOW_PROTOCOL": "https:http:file",
            "GIT_AUTHOR_NAME": AUTHOR_NAME,
            "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
            "GIT_COMMITTER_NAME": AUTHOR_NAME,
            "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
        }
        if "TMPDIR" in os.environ:
            env["TMPDIR"] = os.environ["TMPDIR"]
        if remote is not None and remote.token_file:
            env["FOUNDRY_GITHUB_TOKEN_FILE"] = remote.token_file
        env.update(self.extra_env)
        return env

    def argv(self, args: Sequence[str], remote: Remote | None = None) -> list[str]:
        return ["git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
                "-c", "http.followRedirects=false", "-c", "protocol.version=2", "-c", "advice.detachedHead=false",
                *_LOW_SPEED, *(remote.config() if remote else []), *args]

    def run(self, what: str, *args: str, remote: Remote | None = None, cwd: Path | None = None,
            env: Mapping[str, str] | None = None, input: str | None = None) -> str:
        """Run `git args...`; stdout on success, GitError(what: git's reason) otherwise."""
        full_env = {**self.env(remote), **(env or {})}
        try:
            done = subprocess.run(self.argv(args, remote), cwd=cwd, env=full_env, input=input,
                                  capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as err:
            stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
            raise GitError(f"{what} (timed out after {self.timeout:.0f} s)", stderr, None) from None
        except FileNotFoundError:
            raise GitError(what, "git is not installed (apt-get install git)", 127) from None
        if done.returncode != 0:
            raise GitError(what, done.stderr + done.stdout, done.returncode)
        return done.stdout


# ---------------------------------------------------------------- the steps' git work


def clone_pristine(git: Git, remote: Remote, branch: str, git_dir: Path) -> str:
    """Bare-clone `branch` of `remote` into `git_dir`; the cloned commit's SHA."""
    git.run(f"clone failed: {_public(remote.url)} (branch {branch})", "clone", "--bare", "--quiet",
            "--single-branch", "--no-tags", "--branch", branch, "--", remote.url, str(git_dir), remote=remote)
    return rev_parse(git, git_dir, f"refs/heads/{branch}")


def branch_exists(git: Git, remote: Remote, branch: str) -> bool:
    out = git.run(f"listing branches of {_public(remote.url)} failed", "ls-remote", "--heads", "--", remote.url,
                  f"refs/heads/{branch}", remote=remote)
    return bool(out.strip())


def checkout_work_tree(git: Git, git_dir: Path, branch: str, work_tree: Path) -> None:
    """A work tree with its own .git, copied (never hard-linked) from the pristine directory.

    The copy has no remote (nothing to push to, no URL) and an identity so a
    CLI that insists on committing (Aider) can; publish ignores its commits.
    """
    git.run("checking out the work tree failed", "clone", "--quiet", "--no-hardlinks", "--no-tags",
            "--single-branch", "--branch", branch, "-c", f"user.name={AUTHOR_NAME}",
            "-c", f"user.email={AUTHOR_EMAIL}", "--", str(git_dir), str(work_tree))
    git.run("configuring the work tree failed", "-C", str(work_tree), "remote", "remove", "origin")


def rev_parse(git: Git, git_dir: Path, ref: str) -> str:
    return git.run(f"resolving {ref} failed", f"--git-dir={git_dir}", "rev-parse", "--verify", "--quiet",
                   f"{ref}^{{commit}}").strip()


def snapshot_tree(git: Git, git_dir: Path, base: str, work_tree: Path, index_file: Path) -> str:
    """The tree of `work_tree`'s files on top of commit `base`, built in `git_dir` with a private index.

    The work tree's own .git (its commits, config, hooks, index) is never
    read: git skips any path named .git, and the index is ours.
    """
    try:
        st = os.lstat(work_tree)
    except OSError as err:
        raise GitError("reading the work tree's files failed", f"fatal: {work_tree}: {err.strerror}", None) from None
    if not stat.S_ISDIR(st.st_mode):
        # A work tree swapped for a symlink would make publish read (and commit) whatever it points at,
        # the credentials mounted in the publish container included.
        raise GitError("reading the work tree's files failed",
                       f"fatal: {work_tree} is not a directory (a symlink or a file was put in its place)", None)
    env = {"GIT_INDEX_FILE": str(index_file)}
    gd = f"--git-dir={git_dir}"
    git.run("reading the base tree failed", gd, "read-tree", base, env=env)
    git.run("reading the work tree's files failed", gd, f"--work-tree={work_tree}", "add", "--all", "--", ".",
            env=env, cwd=work_tree)
    return git.run("writing the tree failed", gd, "write-tree", env=env).strip()


def work_tree_changes(git: Git, git_dir: Path, base: str, work_tree: Path, index_file: Path) -> list[str]:
    """Every path of `work_tree` that differs from commit `base` (changed, new, deleted, ignored files too),
    as `git status --porcelain` lines, judged in `git_dir` with a private index: the work tree's own .git
    is never read, so a CLI that rewrote it cannot hide a change."""
    try:
        st = os.lstat(work_tree)
    except OSError as err:
        raise GitError("reading the work tree's files failed", f"fatal: {work_tree}: {err.strerror}", None) from None
    if not stat.S_ISDIR(st.st_mode):
        return [f"?? {work_tree.name} (the work tree was replaced by a symlink or a file)"]
    env = {"GIT_INDEX_FILE": str(index_file)}
    gd = f"--git-dir={git_dir}"
    git.run("reading the base tree failed", gd, "read-tree", base, env=env)
    out = git.run("comparing the work tree with its base failed", gd, f"--work-tree={work_tree}", "status",
                  "--porcelain", "--untracked-files=all", "--ignored", "--no-renames", env=env, cwd=work_tree)
    return [line for line in out.splitlines() if line.strip()]


def work_tree_head(git: Git, work_tree: Path) -> str:
    """The commit the work tree's own HEAD names (its config and hooks are not honoured: hardened argv)."""
    return git.run("reading the work tree's HEAD failed", f"--git-dir={work_tree / '.git'}", "rev-parse",
                   "--verify", "--quiet", "HEAD^{commit}").strip()


def commit_and_tree(git: Git, git_dir: Path, ref: str) -> tuple[str, str]:
    """(commit SHA, its tree SHA) of `ref`, in one git call."""
    out = git.run(f"resolving {ref} failed", f"--git-dir={git_dir}", "rev-parse",
                  f"{ref}^{{commit}}", f"{ref}^{{tree}}").split()
    if len(out) != 2:
        raise GitError(f"resolving {ref} failed", "no such commit", None)
    return out[0], out[1]


GITLINK_MODE = "160000"


def diff_changes(git: Git, git_dir: Path, old_tree: str, new_tree: str) -> tuple[list[Change], list[str]]:
    """The file changes between two trees, renames detected, with line counts (binary files: 0),
    and the paths that became gitlinks (a nested repository the agent left in the work tree)."""
    out = git.run("diffing the change failed", f"--git-dir={git_dir}", "diff-tree", "-r", "-M", "-z",
                  "--no-commit-id", "--raw", "--numstat", old_tree, new_tree)
    return parse_raw_numstat(out), new_gitlinks(out)


def new_gitlinks(text: str) -> list[str]:
    """Paths whose new side is a gitlink (mode 160000) in `diff-tree -z --raw` output."""
    fields = text.split("\0")
    found = []
    for i, head in enumerate(fields):
        if head.startswith(":"):
            parts = head[1:].split()
            if len(parts) >= 5 and parts[1] == GITLINK_MODE:
                found.append(fields[i + 2] if parts[4][0] in "RC" else fields[i + 1])
    return found


def parse_raw_numstat(text: str) -> list[Change]:
    """`diff-tree -z --raw --numstat`: every raw entry (`:modes shas STATUS\0path[\0path]\0`), then
    every numstat entry (`added\tremoved\tpath\0`, or for a rename `added\tremoved\t\0old\0new\0`)."""
    fields = text.split("\0")
    entries: list[tuple[str, str | None, str]] = []  # (status letter, old path, new path)
    counts: dict[str, tuple[int, int]] = {}
    i = 0
    while i < len(fields) and fields[i]:
        head = fields[i]
        if head.startswith(":"):
            letter = head.split()[-1][0]
            if letter in "RC":
                entries.append((letter, fields[i + 1], fields[i + 2]))
                i += 3
            else:
                entries.append((letter, None, fields[i + 1]))
                i += 2
            continue
        added, removed, path = head.split("\t", 2)
        if path == "":  # a rename or copy: the two paths follow
            path = fields[i + 2]
            i += 3
        else:
            i += 1
        counts[path] = (int(added) if added.isdigit() else 0, int(removed) if removed.isdigit() else 0)
    changes = []
    for letter, old, new in entries:
        status = _STATUS.get(letter, "modified")
        added, removed = counts.get(new, (0, 0))
        changes.append(Change(path=new, status="removed" if status == "deleted" else status, previous_path=old,
                              additions=added, deletions=removed))
    return changes


def commit_tree(git: Git, git_dir: Path, tree: str, parent: str, message: str) -> str:
    """One commit, authored and committed by the Foundry agent identity."""
    return git.run("creating the commit failed", f"--git-dir={git_dir}", "commit-tree", tree, "-p", parent,
                   "-F", "-", input=message).strip()


def push(git: Git, git_dir: Path, remote: Remote, commit: str, branch: str) -> None:
    """Push `commit` to `branch`, fast-forward only (no force of any kind)."""
    git.run(f"push to {branch} refused", f"--git-dir={git_dir}", "push", "--quiet", "--",
            remote.url, f"{commit}:refs/heads/{branch}", remote=remote)


def _public(url: str) -> str:
    """A URL fit for a message (a URL never holds credentials here, but be sure)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        return parts._replace(netloc=parts.hostname or "").geturl()
    return url
