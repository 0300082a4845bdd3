"""A Debian bookworm root filesystem (debootstrap, made once and cached) and commands run in copies of it.

The root filesystem is the base of every locally built image
(foundry.dev.images): debootstrap's minbase variant, from the same Debian
mirror this machine's apt uses, kept under ~/.cache/foundry/rootfs/. Making it
takes about two minutes once.

Commands run in a copy with `chroot`, inside a private mount namespace
(`unshare --mount`): /proc, /dev and the build's bind mounts vanish with the
namespace, so an interrupted build leaves no mount behind on the host.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from foundry.paths import cache_dir

SUITE = "bookworm"
VARIANT = "minbase"
# Where builds see their inputs inside the chroot; removed before an image is made.
BUILD_DIR = "run/foundry-build"
# What a Debian image's processes find on PATH (the official images' default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RootfsError(RuntimeError):
    pass


def say(what: str, msg: str) -> None:
    print(f"[{what}] {msg}", file=sys.stderr, flush=True)


@contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """An exclusive flock on path, saying so on stderr when another build holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(what, f"another build holds {path}; waiting")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# ---- the host's Debian mirror (pure) --------------------------------------------

@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_apt_sources(text: str) -> list[AptSource]:
    """Entries of a one-line `deb URI SUITE COMP...` list or a deb822 .sources file (deb only)."""
    out: list[AptSource] = []
    if re.search(r"^\s*Types:", text, re.M | re.I):
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.lstrip().startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                out.append(AptSource(uri.rstrip("/"), tuple(fields.get("suites", "").split()),
                                     tuple(fields.get("components", "").split())))
        return out
    for line in text.splitlines():
        line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(line) >= 3 and line[0] == "deb":
            out.append(AptSource(line[1].rstrip("/"), (line[2],), tuple(line[3:])))
    return out


def debian_sources(sources: list[AptSource], suite: str = SUITE) -> list[AptSource]:
    """The Debian archive entries for suite (main archive and security), nothing third-party."""
    return [s for s in sources
            if re.search(r"/debian(-security)?$", s.uri) and any(x.split("-")[0] == suite for x in s.suites)]


def main_mirror(sources: list[AptSource], suite: str = SUITE) -> str:
    for s in debian_sources(sources, suite):
        if s.uri.endswith("/debian") and suite in s.suites:
            return s.uri
    raise RootfsError(f"no Debian mirror for {suite} in /etc/apt/sources.list*: "
                      "add one (e.g. deb http://deb.debian.org/debian bookworm main)")


def image_sources_text(sources: list[AptSource], suite: str = SUITE) -> str:
    """The deb822 sources list an image gets: the host's Debian entries for suite, main only."""
    stanzas = []
    for s in debian_sources(sources, suite):
        suites = " ".join(x for x in s.suites if x.split("-")[0] == suite)
        stanzas.append(f"Types: deb\nURIs: {s.uri}\nSuites: {suites}\nComponents: main\n"
                       "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    return "\n".join(stanzas)


def host_apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list")),
             *sorted((etc_apt / "sources.list.d").glob("*.sources"))]
    out: list[AptSource] = []
    for f in files:
        if f.is_file():
            out.extend(parse_apt_sources(f.read_text()))
    return out


# ---- the cached root filesystem ----------------------------------------------------

def rootfs_cache() -> Path:
    return cache_dir() / "rootfs"


def _require_root_and_tools(*tools: str) -> None:
    if os.geteuid() != 0:
        raise RootfsError("building images needs root (debootstrap, chroot and file ownership); run as root")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise RootfsError(f"missing {', '.join(missing)}: apt-get install debootstrap umoci skopeo")


def rootfs_id(root: Path) -> str:
    """What the root filesystem holds: a hash of dpkg's package database (names, versions, state)."""
    return hashlib.sha256((root / "var/lib/dpkg/status").read_bytes()).hexdigest()[:16]


def ensure_rootfs() -> tuple[Path, str]:
    """The cached debootstrap root filesystem and its id; made (about 2 min) when absent."""
    base = rootfs_cache()
    root = base / f"{SUITE}-{VARIANT}"
    with locked(base / ".lock", "rootfs"):
        if (root / "var/lib/dpkg/status").is_file():
            return root, rootfs_id(root)
        _require_root_and_tools("debootstrap", "chroot", "unshare")
        mirror = main_mirror(host_apt_sources())
        partial = base / f"{SUITE}-{VARIANT}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        say("rootfs", f"debootstrap --variant={VARIANT} {SUITE} from {mirror} into {root} (about 2 min, once)")
        started = time.monotonic()
        log = base / "debootstrap.log"
        with open(log, "w") as fh:
            proc = subprocess.run(["debootstrap", f"--variant={VARIANT}", SUITE, str(partial), mirror],
                                  stdout=fh, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise RootfsError(f"debootstrap failed (exit {proc.returncode}); its log: {log}\n{_tail(log)}")
        partial.rename(root)
        say("rootfs", f"made in {time.monotonic() - started:.0f} s")
        return root, rootfs_id(root)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def copy_tree(src: Path, dst: Path) -> None:
    """cp -a (ownership, modes, links, device nodes): the image must keep what dpkg set."""
    dst.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--reflink=auto", f"{src}/.", str(dst)], check=True)


@dataclass(frozen=True)
class Bind:
    source: Path
    target: str  # inside the root, relative (under BUILD_DIR)
    read_only: bool = True


def run_in_root(root: Path, script: str, *, env: dict[str, str], binds: tuple[Bind, ...] = (),
                log: Path, what: str) -> None:
    """Run script with /bin/sh -e in a chroot of root, its output appended to log.

    The host's resolv.conf is bind-mounted so apt and pip can resolve names; the
    image keeps its own (emptied) file.
    """
    setup = ["set -e", f"r={shlex.quote(str(root))}",
             'mount -t proc proc "$r/proc"', 'mount --rbind /dev "$r/dev"',
             'mount --bind /etc/resolv.conf "$r/etc/resolv.conf"']
    for b in binds:
        target = root / b.target
        if b.source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        setup.append(f"mount --bind {shlex.quote(str(b.source))} {shlex.quote(str(target))}")
        if b.read_only:
            setup.append(f"mount -o remount,bind,ro {shlex.quote(str(target))}")
    (root / "etc/resolv.conf").touch()
    inner_env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
                 **env}
    setup.append("exec chroot \"$r\" /usr/bin/env -i " + " ".join(shlex.quote(f"{k}={v}") for k, v in inner_env.items())
                 + " /bin/sh -ec " + shlex.quote(script))
    with open(log, "a") as fh:
        fh.write(f"\n==== {what}\n")
        fh.flush()
        # Its own session, so an interrupted build can stop everything it started in the chroot.
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c",
                                 "\n".join(setup)], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if returncode != 0:
        raise RootfsError(f"{what} failed in the image's chroot (exit {returncode}); log {log}:\n{_tail(log)}")
