"""Find and kill every process an agent CLI started, from /proc (Linux).

Killing the CLI's process group is not enough: CLIs run tool commands in process
groups or sessions of their own (so they can time them out), and those outlive the
CLI when it is killed. So the runner samples the CLI's descendants while it runs
(ppid links break once a parent dies, so a late look misses them) and, at the end,
kills the group, the session and every sampled process still alive; a process is
identified by (pid, start time) so a recycled pid is never killed by mistake.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    sid: int
    start: int  # clock ticks since boot: with pid, names one process for good
    state: str


def read_proc(pid: int) -> Proc | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    rest = raw[raw.rindex(")") + 2:].split()
    return Proc(pid=pid, state=rest[0], ppid=int(rest[1]), pgid=int(rest[2]), sid=int(rest[3]), start=int(rest[19]))


def all_procs() -> list[Proc]:
    procs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            p = read_proc(int(entry))
            if p is not None:
                procs.append(p)
    return procs


def related(root: int, known: set[tuple[int, int]] | None = None, *, root_alive: bool = True) -> list[Proc]:
    """Live processes tied to `root`: its descendants, its group, its session, and `known` ones.

    Once `root` has been reaped its pid may be reused, so its "children" are no longer
    looked for (`root_alive=False`); Linux never reuses a pid that still names a live
    group or session, so matching those stays safe.
    """
    procs = all_procs()
    children: dict[int, list[Proc]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    found: dict[int, Proc] = {}
    stack = [root] if root_alive else []
    while stack:
        for child in children.get(stack.pop(), ()):
            if child.pid not in found:
                found[child.pid] = child
                stack.append(child.pid)
    for p in procs:
        if p.pid != root and (p.pgid == root or p.sid == root or (known and (p.pid, p.start) in known)):
            found.setdefault(p.pid, p)
    root_proc = next((p for p in procs if p.pid == root), None) if root_alive else None
    if root_proc is not None:
        found[root] = root_proc
    return [p for p in found.values() if p.state != "Z"]


def signal_all(procs: list[Proc], sig: int) -> int:
    """Send `sig` to each process that is still the same one; the count of those signalled."""
    sent = 0
    for p in procs:
        now = read_proc(p.pid)
        if now is None or now.start != p.start or now.state == "Z":
            continue
        try:
            os.kill(p.pid, sig)
            sent += 1
        except (ProcessLookupError, PermissionError):
            pass
    return sent


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reap_orphans() -> None:
    """As PID 1 (a container's entrypoint) the runner inherits orphans: reap the dead ones."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
