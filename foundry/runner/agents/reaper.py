"""python -I -S reaper.py -- ARGV...: run ARGV as a child subreaper, and leave nothing behind.

A tool command the agent starts with `setsid cmd &` from a shell that exits at once
leaves every process group and session of the CLI's, and its parent link is gone
before anyone can look. As a child subreaper (prctl PR_SET_CHILD_SUBREAPER) this
process inherits every such orphan of ARGV's tree, so once ARGV exits it can kill and
reap all of them, then exit with ARGV's status. SIGTERM (the runner's time limit) is
passed to the whole tree, followed by SIGKILL after a short grace.

Self-contained and run by path with -I -S: it must start fast and import nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
TERM_GRACE_SECONDS = 1.0


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2:].split()
        if rest[0] != "Z":
            kids.setdefault(int(rest[1]), []).append(int(entry))
    return kids


def descendants(root: int) -> list[int]:
    kids, found, stack = _children_map(), [], [root]
    while stack:
        for pid in kids.get(stack.pop(), ()):
            found.append(pid)
            stack.append(pid)
    return found


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def sweep(me: int, deadline: float) -> None:
    """SIGKILL and reap every descendant until none is left (or the deadline passes)."""
    while time.monotonic() < deadline:
        left = descendants(me)
        if not left:
            break
        _signal(left, signal.SIGKILL)
        time.sleep(0.02)
        _reap()
    _reap()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("reaper: no command given", file=sys.stderr)
        return 2
    me = os.getpid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            print(f"reaper: cannot become a child subreaper (errno {ctypes.get_errno()})", file=sys.stderr)
    except (OSError, AttributeError) as err:
        print(f"reaper: cannot become a child subreaper ({err})", file=sys.stderr)
    try:
        child = subprocess.Popen(argv)
    except OSError as err:
        print(f"cannot start {argv[0]}: {err.strerror or err}", file=sys.stderr)
        return 127 if isinstance(err, FileNotFoundError) else 126

    def stop(signum: int, _frame: object) -> None:
        _signal(descendants(me), signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_SECONDS
        # child.poll() cannot help here: the interrupted child.wait() holds its lock.
        while descendants(me) and time.monotonic() < deadline:
            time.sleep(0.05)
        sweep(me, time.monotonic() + 5)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = child.wait()
    sweep(me, time.monotonic() + 5)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
