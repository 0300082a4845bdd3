"""Child processes of the demo: started with their output in a log file, tied
to the demo's life (they get SIGTERM if it dies, even by SIGKILL) and stopped
politely (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    # Our own process group: a Ctrl-C in the terminal reaches the demo, which
    # then stops its children in order, instead of killing them all at once.
    os.setpgid(0, 0)


class ChildFailed(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    args: list[str]
    env: Mapping[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, *, detach: bool = False) -> "Child":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, env=dict(self.env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=None if detach else _die_with_parent, start_new_session=detach,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        """The rest of the first log line starting with `prefix` (the address a server announces)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.exists():
                for line in self.log_path.read_text(errors="replace").splitlines():
                    if line.startswith(prefix):
                        return line[len(prefix):].strip()
            if not self.alive():
                raise ChildFailed(f"{self.name} exited with {self.process.returncode if self.process else '?'}; "
                                  f"last lines of {self.log_path}:\n{self.tail()}")
            time.sleep(0.1)
        raise ChildFailed(f"{self.name} did not start within {timeout:g}s; last lines of {self.log_path}:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "(no output)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def stop_pid(pid: int, timeout: float = 20.0) -> bool:
    """SIGTERM `pid`, wait for it to go, SIGKILL if it will not. False if it was not running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] != "Z"
