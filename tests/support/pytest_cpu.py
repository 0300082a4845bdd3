"""Where the suite's time and CPU go, per test module: `-p tests.support.pytest_cpu`.

With FOUNDRY_CPU_REPORT=<file> set, each worker appends one JSON line per test
module it ran: its wall time, the CPU of the worker's process tree over that
time (the worker itself and every process it started and still runs, such as its
control plane, PostgreSQL and node, plus the children it has reaped) and the
whole machine's busy CPU over the same time. The servers of a worker belong to
that worker only, so the tree's CPU is the cost of the module that ran while it
was spent, idle servers included. Containers are not in the tree (containerd's
shims leave it), which is why the machine's figure is there too; with two
workers it overlaps the other worker's modules.

`python -m tests.support.pytest_cpu <file>` prints the modules by tree CPU.
Without the variable the plugin does nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, own + reaped children's CPU seconds) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    # After the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / TICK


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and all its live descendants (each with its reaped children)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = _stat(int(entry))
            if s is not None:
                stats[int(entry)] = s
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (all but idle and iowait)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


class _Recorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.module: str | None = None
        self.marks = (0.0, 0.0, 0.0)

    def _mark(self) -> tuple[float, float, float]:
        return time.monotonic(), tree_cpu(os.getpid()), machine_busy()

    def enter(self, module: str) -> None:
        if module == self.module:
            return
        self.leave()
        self.module, self.marks = module, self._mark()

    def leave(self) -> None:
        if self.module is None:
            return
        now = self._mark()
        wall, tree, machine = (b - a for a, b in zip(self.marks, now))
        line = {"worker": self.worker, "module": self.module, "wall": round(wall, 2),
                "tree_cpu": round(tree, 2), "machine_cpu": round(machine, 2)}
        with self.path.open("a") as out:
            out.write(json.dumps(line) + "\n")
        self.module = None


_recorder: _Recorder | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _recorder
    target = os.environ.get("FOUNDRY_CPU_REPORT")
    if target:
        _recorder = _Recorder(Path(target))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if _recorder is not None:
        _recorder.enter(item.nodeid.split("::", 1)[0])


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _recorder is not None:
        _recorder.leave()


def report(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: -r["tree_cpu"])
    total = {k: sum(r[k] for r in rows) for k in ("wall", "tree_cpu")}
    lines = [f"{'module':60} {'worker':6} {'wall s':>8} {'tree CPU s':>10} {'machine CPU s':>13}"]
    lines += [f"{r['module'][:60]:60} {r['worker']:6} {r['wall']:8.1f} {r['tree_cpu']:10.1f} {r['machine_cpu']:13.1f}"
              for r in rows]
    lines.append(f"{'total (' + str(len(rows)) + ' modules)':60} {'':6} {total['wall']:8.1f} {total['tree_cpu']:10.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1])))
