"""Git's object encoding (blobs, trees, commits) and a parser for trees: pure functions.

The GitHub stand-in writes the commits its control API makes straight into a bare
repository's object store with these, so they are ordinary git objects that
`git fsck`, `git clone` and `git http-backend` read like any other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

ZERO_SHA = "0" * 40
FILE_MODE = "100644"
TREE_MODE = "40000"

# path -> (mode, blob sha): a commit's files, flattened; modes keep executables and symlinks.
FlatTree = dict[str, tuple[str, str]]


def encode_object(kind: str, payload: bytes) -> tuple[str, bytes]:
    """(sha, raw): the object's id and the bytes git stores (before zlib)."""
    raw = b"%s %d\0" % (kind.encode(), len(payload)) + payload
    return hashlib.sha1(raw).hexdigest(), raw


def encode_tree(entries: dict[str, tuple[str, str]]) -> bytes:
    """One tree level: name -> (mode, sha). Git orders entries by name, a subtree's name
    compared as if it ended in '/'."""
    def key(name: str) -> bytes:
        return name.encode() + (b"/" if entries[name][0] == TREE_MODE else b"")

    out = bytearray()
    for name in sorted(entries, key=key):
        mode, sha = entries[name]
        out += mode.encode() + b" " + name.encode() + b"\0" + bytes.fromhex(sha)
    return bytes(out)


def decode_tree(payload: bytes) -> list[tuple[str, str, str]]:
    """A tree object's entries as (mode, name, sha)."""
    entries, i = [], 0
    while i < len(payload):
        space = payload.index(b" ", i)
        nul = payload.index(b"\0", space)
        mode = payload[i:space].decode()
        name = payload[space + 1:nul].decode("utf-8", "surrogateescape")
        sha = payload[nul + 1:nul + 21].hex()
        entries.append((mode, name, sha))
        i = nul + 21
    return entries


def nest(flat: FlatTree) -> dict[str, object]:
    """A flat path map as nested dicts (directories) with (mode, sha) leaves."""
    root: dict[str, object] = {}
    for path, leaf in flat.items():
        parts = path.split("/")
        if any(p in ("", ".", "..", ".git") for p in parts):
            raise ValueError(f"not a valid path in a git tree: {path!r}")
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{path!r}: {part!r} is a file, not a directory")
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise ValueError(f"{path!r} is a directory")
        node[parts[-1]] = leaf
    return root


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    epoch: int

    def encode(self) -> bytes:
        return f"{self.name} <{self.email}> {self.epoch} +0000".encode()


def encode_commit(tree: str, parents: tuple[str, ...], author: Person, committer: Person, message: str) -> bytes:
    lines = [b"tree " + tree.encode()]
    lines += [b"parent " + p.encode() for p in parents]
    lines += [b"author " + author.encode(), b"committer " + committer.encode()]
    body = message if message.endswith("\n") else message + "\n"
    return b"\n".join(lines) + b"\n\n" + body.encode()


@dataclass(frozen=True)
class CommitHeader:
    tree: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    epoch: int
    message: str


def decode_commit(payload: bytes) -> CommitHeader:
    head, _, message = payload.partition(b"\n\n")
    tree, parents, name, email, epoch = "", [], "", "", 0
    for line in head.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key == b"tree":
            tree = value.decode()
        elif key == b"parent":
            parents.append(value.decode())
        elif key == b"author":
            text = value.decode("utf-8", "replace")
            who, _, when = text.rpartition("> ")
            name, _, email = who.partition(" <")
            epoch = int(when.split(" ")[0]) if when else 0
    return CommitHeader(tree, tuple(parents), name.strip(), email, epoch, message.decode("utf-8", "replace"))
