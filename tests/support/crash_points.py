"""What the tests do at the operator's checkpoints (foundry.operator.checkpoints).

Crash injection for the kill -9 tests: `FOUNDRY_FAULT=<point>` makes the
process die with `os._exit(137)` (what a SIGKILL looks like to a parent) right
after the named side effect and before its result is recorded in the run's
status. Several points may be given comma-separated; `FOUNDRY_FAULT_ONCE_DIR=<dir>`
makes each point fire once per directory (a marker file), so a restarted
operator with the same environment runs on instead of dying again. The
operator child (`python -m tests.support.operator_kit`) installs this before it
starts; a deployed operator never does.

In-process tests can instead hang an action on a point (`on_point`): it runs
at that moment in the reconciling thread, which makes an interleaving with
another writer (a status change landing between the database write and the
status write) happen exactly there, every time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from foundry.operator import checkpoints
from foundry.operator.checkpoints import POINTS

_hooks: dict[str, Callable[[], None]] = {}
_hooks_guard = threading.Lock()


def _armed(point: str) -> bool:
    wanted = {p.strip() for p in os.environ.get("FOUNDRY_FAULT", "").split(",") if p.strip()}
    unknown = wanted - POINTS
    if unknown:
        raise ValueError(f"FOUNDRY_FAULT names unknown fault points {sorted(unknown)}; known: {sorted(POINTS)}")
    return point in wanted


def at_checkpoint(point: str) -> None:
    """The handler: run the hung action, then die if the environment asks for it.

    A partition of the leader election: while the file named by
    FOUNDRY_FAULT_BLOCK_LEASE exists, every request about the Lease fails as
    if the API server could not be reached (everything else still reaches it)."""
    if point == "before-lease-request":
        blocked = os.environ.get("FOUNDRY_FAULT_BLOCK_LEASE")
        if blocked and os.path.exists(blocked):
            raise ConnectionError(f"Lease requests blocked while {blocked} exists")
    action = _hooks.get(point)
    if action is not None:
        action()
    if not _armed(point):
        return
    once_dir = os.environ.get("FOUNDRY_FAULT_ONCE_DIR")
    if once_dir:
        marker = Path(once_dir) / f"fired-{point}"
        try:
            # O_EXCL: exactly one process ever fires a given point.
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
    os._exit(137)


def install() -> None:
    """Make the operator's checkpoints run `at_checkpoint` in this process."""
    checkpoints.install(at_checkpoint)


@contextmanager
def on_point(point: str, action: Callable[[], None]) -> Iterator[None]:
    """Run `action` each time `point` is passed while the block runs."""
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; known: {sorted(POINTS)}")
    with _hooks_guard:
        if point in _hooks:
            raise RuntimeError(f"fault point {point!r} already has an action")
        _hooks[point] = action
    previous = checkpoints.install(at_checkpoint)
    try:
        yield
    finally:
        with _hooks_guard:
            _hooks.pop(point, None)
        checkpoints.install(previous)
