"""The bare git repositories behind the GitHub stand-in.

One bare repository per stand-in repository, under a directory the server owns.
The control API writes commits into it (git_objects encodes them); pushes arrive
through `git http-backend` (git_http.py). An `update` hook installed in every
repository refuses non-fast-forward updates and protected branches, and logs
every ref update it was asked for to the file named by $FOUNDRY_PUSH_LOG, so
the server learns exactly what a push tried and what it changed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from foundry.dev.git_objects import (
    FILE_MODE, TREE_MODE, ZERO_SHA, CommitHeader, FlatTree, Person, decode_commit, decode_tree, encode_commit,
    encode_object, encode_tree, nest,
)

GIT = "git"
PUSH_LOG_ENV = "FOUNDRY_PUSH_LOG"
PROTECTED_ENV = "FOUNDRY_PROTECTED_REFS"

# Runs inside receive-pack, once per ref, with the pushed objects visible (quarantined).
# Exit non-zero refuses that ref only; what it prints reaches the pusher as "remote: ...".
UPDATE_HOOK = """#!/bin/sh
ref="$1"; old="$2"; new="$3"
zero=0000000000000000000000000000000000000000
forced=false
verdict=accepted
if [ "$old" != "$zero" ] && [ "$new" != "$zero" ] && ! git merge-base --is-ancestor "$old" "$new" 2>/dev/null; then
  forced=true
  verdict=non-fast-forward
  echo "error: refusing to rewrite $ref: a non-fast-forward update (force-push) is not allowed here" >&2
fi
for p in $FOUNDRY_PROTECTED_REFS; do
  if [ "$p" = "$ref" ] && [ "$verdict" = accepted ]; then
    verdict=protected
    echo "error: GH006: Protected branch update failed for $ref." >&2
  fi
done
if [ -n "$FOUNDRY_PUSH_LOG" ]; then
  echo "update $ref $old $new $forced $verdict" >> "$FOUNDRY_PUSH_LOG"
fi
[ "$verdict" = accepted ]
"""
# Runs after receive-pack moved the refs, with the ones it really updated on stdin: a ref the
# update hook allowed can still fail (a concurrent push moved it first).
POST_RECEIVE_HOOK = """#!/bin/sh
while read -r old new ref; do
  if [ -n "$FOUNDRY_PUSH_LOG" ]; then
    echo "applied $ref $old $new" >> "$FOUNDRY_PUSH_LOG"
  fi
done
"""


class GitStoreError(RuntimeError):
    pass


def git_env(**extra: str) -> dict[str, str]:
    """A git environment that ignores the machine's and the user's config."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "HOME": tempfile.gettempdir(), "GIT_TERMINAL_PROMPT": "0"}
    env.update(extra)
    return env


def run_git(git_dir: Path, *args: str, input: bytes | None = None, check: bool = True) -> bytes:
    try:
        done = subprocess.run([GIT, f"--git-dir={git_dir}", *args], input=input, capture_output=True,
                              env=git_env(), timeout=60)
    except FileNotFoundError:
        raise GitStoreError("git is not installed: apt-get install git") from None
    if check and done.returncode != 0:
        raise GitStoreError(f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


@dataclass(frozen=True)
class LoadedCommit:
    sha: str
    header: CommitHeader
    flat: FlatTree
    files: dict[str, str]  # path -> content (bytes decoded with surrogateescape: lossless)


@dataclass(frozen=True)
class LoggedUpdate:
    """One line of the update hook's log: what a push asked for, and the verdict."""

    ref: str
    old: str
    new: str
    forced: bool
    verdict: str  # accepted | non-fast-forward | protected | failed (allowed, but git could not apply it)

    @property
    def accepted(self) -> bool:
        return self.verdict == "accepted"


def read_push_log(path: Path) -> list[LoggedUpdate]:
    """The updates a push asked for, each accepted only if git really applied it."""
    if not path.exists():
        return []
    asked: list[LoggedUpdate] = []
    applied: set[tuple[str, str, str]] = set()
    for line in path.read_text().splitlines():
        parts = line.split(" ")
        if parts[0] == "update" and len(parts) == 6:
            _, ref, old, new, forced, verdict = parts
            asked.append(LoggedUpdate(ref, old, new, forced == "true", verdict))
        elif parts[0] == "applied" and len(parts) == 4:
            applied.add((parts[1], parts[2], parts[3]))
    return [u if not u.accepted or (u.ref, u.old, u.new) in applied
            else LoggedUpdate(u.ref, u.old, u.new, u.forced, "failed") for u in asked]


class CatFile:
    """One `git cat-file --batch` process answering many object reads."""

    def __init__(self, git_dir: Path) -> None:
        self._proc = subprocess.Popen([GIT, f"--git-dir={git_dir}", "cat-file", "--batch"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=git_env())

    def read(self, sha: str) -> tuple[str, bytes]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(sha.encode() + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().decode().split()
        if len(header) != 3:
            raise GitStoreError(f"object {sha} is missing: {' '.join(header)}")
        size = int(header[2])
        data = self._proc.stdout.read(size)
        self._proc.stdout.read(1)  # the newline after each object
        return header[1], data

    def close(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        self._proc.wait(10)
        if self._proc.stdout:
            self._proc.stdout.close()

    def __enter__(self) -> "CatFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BareRepo:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._flat: dict[str, FlatTree] = {}  # commit sha -> its files, for commits this process knows
        self._diffs: dict[tuple[str, str], list[dict[str, object]]] = {}
        self._fanouts: set[str] = set()  # objects/xx directories known to exist

    @classmethod
    def create(cls, path: Path, default_branch: str) -> "BareRepo":
        path.parent.mkdir(parents=True, exist_ok=True)
        # No template: git's sample hooks are dead weight, and copying them is most of init's time.
        run_git(path, "init", "--quiet", "--bare", "--template=", f"--initial-branch={default_branch}")
        (path / "hooks").mkdir(exist_ok=True)
        with open(path / "config", "a", encoding="utf-8") as config:  # one process fewer than `git config` x5
            config.write("[http]\n\treceivepack = true\n\tuploadpack = true\n[gc]\n\tauto = 0\n"
                         "[receive]\n\tfsckObjects = true\n[core]\n\tlogAllRefUpdates = true\n")
        for name, script in (("update", UPDATE_HOOK), ("post-receive", POST_RECEIVE_HOOK)):
            hook = path / "hooks" / name
            hook.write_text(script)
            hook.chmod(0o755)
        return cls(path)

    # -- writing ------------------------------------------------------------------

    def _write_object(self, kind: str, payload: bytes) -> str:
        """A loose object, written under a temporary name and renamed into place (as git does),
        so a reader never sees half an object. Few syscalls: this is most of a control commit."""
        sha, raw = encode_object(kind, payload)
        fanout = self.path / "objects" / sha[:2]
        target = fanout / sha[2:]
        if sha[:2] not in self._fanouts:
            fanout.mkdir(exist_ok=True)
            self._fanouts.add(sha[:2])
        elif target.exists():
            return sha
        tmp = fanout / f"tmp_obj_{os.getpid()}_{threading.get_ident()}_{sha[2:8]}"
        with open(tmp, "wb") as f:
            f.write(zlib.compress(raw, 1))
        os.replace(tmp, target)
        return sha

    def _write_tree(self, node: dict[str, object]) -> str:
        entries: dict[str, tuple[str, str]] = {}
        for name, child in node.items():
            if isinstance(child, dict):
                entries[name] = (TREE_MODE, self._write_tree(child))
            else:
                entries[name] = child  # type: ignore[assignment]
        return self._write_object("tree", encode_tree(entries))

    def write_commit(self, parents: tuple[str, ...], changes: dict[str, str | None], message: str,
                     author: Person, *, base: str | None = None) -> tuple[str, str, FlatTree]:
        """Write a commit whose files are `base`'s (default: the first parent's) with `changes`
        applied (None deletes). Returns (commit sha, tree sha, files)."""
        start = base if base is not None else (parents[0] if parents else None)
        flat: FlatTree = dict(self.flat_tree(start)) if start else {}
        for path, content in changes.items():
            if content is None:
                flat.pop(path, None)
            else:
                mode = flat[path][0] if path in flat else FILE_MODE
                flat[path] = (mode, self._write_object("blob", content.encode("utf-8", "surrogateescape")))
        tree = self._write_tree(nest(flat))
        sha = self._write_object("commit", encode_commit(tree, parents, author, author, message))
        self._flat[sha] = flat
        return sha, tree, flat

    def update_ref(self, ref: str, new: str, old: str | None) -> None:
        """Move `ref` to `new` only if it still points at `old` (None: it must not exist)."""
        try:
            run_git(self.path, "update-ref", "-m", "foundry control API", ref, new, old or ZERO_SHA)
        except GitStoreError as err:
            raise GitStoreError(f"{ref} moved under us (a concurrent push?): {err}") from None

    # -- reading ------------------------------------------------------------------

    def refs(self, prefix: str = "refs/heads/") -> dict[str, str]:
        out = run_git(self.path, "for-each-ref", "--format=%(objectname) %(refname)", prefix).decode()
        refs = {}
        for line in out.splitlines():
            sha, _, name = line.partition(" ")
            refs[name] = sha
        return refs

    def new_commits(self, heads: list[str], known: list[str]) -> list[str]:
        """Commits reachable from `heads` but not from `known`, parents first."""
        if not heads:
            return []
        args = ["rev-list", "--topo-order", "--reverse", *heads, *(f"^{k}" for k in known)]
        return run_git(self.path, *args).decode().split()

    def load(self, shas: list[str]) -> list[LoadedCommit]:
        """Read commits and all their files from the object store."""
        loaded = []
        trees: dict[str, FlatTree] = {}
        blobs: dict[str, str] = {}
        with CatFile(self.path) as cat:
            for sha in shas:
                kind, payload = cat.read(sha)
                if kind != "commit":
                    raise GitStoreError(f"{sha} is a {kind}, not a commit")
                header = decode_commit(payload)
                flat = self._read_tree(cat, header.tree, "", trees)
                files = {}
                for path, (mode, blob) in flat.items():
                    if mode == "160000":  # a submodule: no content here
                        continue
                    if blob not in blobs:
                        blobs[blob] = cat.read(blob)[1].decode("utf-8", "surrogateescape")
                    files[path] = blobs[blob]
                self._flat[sha] = flat
                loaded.append(LoadedCommit(sha, header, flat, files))
        return loaded

    def _read_tree(self, cat: CatFile, sha: str, prefix: str, cache: dict[str, FlatTree]) -> FlatTree:
        if sha in cache:
            return {prefix + p: leaf for p, leaf in cache[sha].items()}
        flat: FlatTree = {}
        for mode, name, child in decode_tree(cat.read(sha)[1]):
            if mode == TREE_MODE:
                flat.update(self._read_tree(cat, child, f"{name}/", cache))
            else:
                flat[name] = (mode, child)
        cache[sha] = flat
        return {prefix + p: leaf for p, leaf in flat.items()}

    def flat_tree(self, commit: str) -> FlatTree:
        if commit not in self._flat:
            self.load([commit])
        return self._flat[commit]

    def diff(self, base: str, head: str) -> list[dict[str, object]]:
        """The files changed from `base` to `head` in the fields GitHub's pulls/files returns,
        renames detected the way git does (status `renamed` with `previous_filename`)."""
        key = (base, head)
        if key not in self._diffs:
            self._diffs[key] = self._diff(base, head)
        return [dict(c) for c in self._diffs[key]]

    def _diff(self, base: str, head: str) -> list[dict[str, object]]:
        raw = run_git(self.path, "diff", "--raw", "--numstat", "-z", "-M", "--no-color", base, head)
        entries, stats = _parse_raw_numstat(raw)
        patches = _split_patch(run_git(self.path, "diff", "-M", "--no-color", "--no-ext-diff", base, head))
        changes = []
        head_flat = self.flat_tree(head)
        base_flat = self.flat_tree(base)
        for i, (status, old_path, new_path) in enumerate(entries):
            added, deleted = stats[i] if i < len(stats) else (0, 0)
            path = new_path or old_path
            leaf = head_flat.get(path) if status != "removed" else base_flat.get(old_path)
            change: dict[str, object] = {
                "sha": leaf[1] if leaf else ZERO_SHA, "filename": path, "status": status,
                "additions": added, "deletions": deleted, "changes": added + deleted,
                "patch": patches[i] if i < len(patches) else "",
            }
            if status == "renamed":
                change["previous_filename"] = old_path
            if not change["patch"]:
                del change["patch"]  # GitHub omits it for pure renames and binary files
            changes.append(change)
        return changes

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


_STATUS = {"A": "added", "D": "removed", "M": "modified", "T": "changed", "R": "renamed", "C": "copied"}


def _parse_raw_numstat(raw: bytes) -> tuple[list[tuple[str, str, str]], list[tuple[int, int]]]:
    """`git diff --raw --numstat -z`: raw records (":modes shas status\\0path[\\0path]\\0")
    then numstat records ("add\\tdel\\tpath\\0" or "add\\tdel\\t\\0old\\0new\\0")."""
    fields = raw.split(b"\0")
    entries: list[tuple[str, str, str]] = []
    stats: list[tuple[int, int]] = []
    i = 0
    while i < len(fields):
        f = fields[i]
        if not f:
            i += 1
            continue
        if f.startswith(b":"):
            letter = f.split(b" ")[-1][:1].decode()
            status = _STATUS.get(letter, "modified")
            if letter in ("R", "C"):
                entries.append((status, fields[i + 1].decode("utf-8", "replace"), fields[i + 2].decode("utf-8", "replace")))
                i += 3
            else:
                path = fields[i + 1].decode("utf-8", "replace")
                entries.append((status, path, path))
                i += 2
            continue
        add, _, rest = f.partition(b"\t")
        dele, _, path = rest.partition(b"\t")
        stats.append((int(add) if add.isdigit() else 0, int(dele) if dele.isdigit() else 0))
        i += 3 if path == b"" else 1  # a rename's numstat names both paths in the next two fields
    return entries, stats


_HUNK = re.compile(r"^@@ ")


def _split_patch(patch: bytes) -> list[str]:
    """Per-file hunks of a `git diff` in output order, headers cut (GitHub's `patch` starts at '@@')."""
    text = patch.decode("utf-8", "replace")
    files: list[str] = []
    current: list[str] | None = None
    in_hunks = False
    for line in text.split("\n"):
        if line.startswith("diff --git "):
            if current is not None:
                files.append("\n".join(current).rstrip("\n"))
            current, in_hunks = [], False
            continue
        if current is None:
            continue
        if not in_hunks and _HUNK.match(line):
            in_hunks = True
        if in_hunks:
            current.append(line)
    if current is not None:
        files.append("\n".join(current).rstrip("\n"))
    return files
