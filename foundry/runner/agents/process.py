"""Run one agent CLI: own process group, stdin from /dev/null, a wall-clock limit, an output cap.

Every stdout line goes to the adapter's parser (it reads usage and the summary even
past the cap); what is kept, in the transcript, stops at the cap with a note. On
timeout the whole tree gets SIGTERM, then SIGKILL after a short grace; after any
exit, whatever the CLI left running is killed, so nothing outlives the attempt: the
CLI runs under reaper.py (a child subreaper that inherits even processes that left
its session), and this module kills the group, the session and what it sampled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Sequence

from foundry.runner.agents import proctree

REAPER = Path(__file__).with_name("reaper.py")
READ_CHUNK = 64 << 10
LINE_MAX = 16 << 20  # longest stdout line handed to a parser (a JSON result); longer is dropped
TERM_GRACE_SECONDS = 2.0
SAMPLE_SECONDS = 0.2


@dataclass
class Outcome:
    exit_code: int | None = None
    timed_out: bool = False
    start_error: str | None = None
    duration: float = 0.0
    kept_bytes: int = 0
    dropped_bytes: int = 0
    pid: int | None = None
    leftovers_killed: int = 0
    aborted: str | None = None  # the parser's reason to stop the CLI early (e.g. it retries a dead API)
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))


class _Transcript:
    """The captured output: shared by the stdout and stderr readers, capped, written through."""

    def __init__(self, sink: IO[bytes] | None, cap: int, outcome: Outcome) -> None:
        self.sink, self.cap, self.outcome = sink, cap, outcome
        self.lock = threading.Lock()
        self.noted = False

    def note(self, text: str) -> None:
        if self.sink is not None:
            with self.lock:
                self.sink.write(f"[foundry] {text}\n".encode())
                self.sink.flush()

    def add(self, data: bytes) -> None:
        with self.lock:
            room = self.cap - self.outcome.kept_bytes
            keep = data[:max(room, 0)]
            self.outcome.kept_bytes += len(keep)
            self.outcome.dropped_bytes += len(data) - len(keep)
            if self.sink is None:
                return
            if keep:
                self.sink.write(keep)
            if len(keep) < len(data) and not self.noted:
                self.noted = True
                self.sink.write(f"\n[foundry] output cap of {self.cap} bytes reached; the rest is dropped\n".encode())
            self.sink.flush()


LineHandler = Callable[[str], "str | None"]


def _read_lines(pipe: IO[bytes], transcript: _Transcript, on_line: LineHandler | None,
                tail: deque[str] | None, abort: Callable[[str], None]) -> None:
    pending = bytearray()
    overflow = False
    while True:
        chunk = pipe.read1(READ_CHUNK) if hasattr(pipe, "read1") else pipe.read(READ_CHUNK)
        if not chunk:
            break
        transcript.add(chunk)
        pending += chunk
        while True:
            cut = pending.find(b"\n")
            if cut < 0:
                break
            line = bytes(pending[:cut])
            del pending[:cut + 1]
            if not overflow:
                _deliver(line, on_line, tail, abort)
            overflow = False
        if len(pending) > LINE_MAX:  # a runaway line: forget it, keep reading
            pending.clear()
            overflow = True
    if pending and not overflow:
        _deliver(bytes(pending), on_line, tail, abort)
    pipe.close()


def _deliver(line: bytes, on_line: LineHandler | None, tail: deque[str] | None,
             abort: Callable[[str], None]) -> None:
    text = line.decode("utf-8", "replace").rstrip("\r")
    if tail is not None and text.strip():
        tail.append(text)
    if on_line is not None:
        try:
            reason = on_line(text)
        except Exception:  # noqa: BLE001 - a parser bug must not stop the reading (the CLI would block)
            reason = None
        if reason:
            abort(reason)


def run_process(argv: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float, cap: int,
                on_stdout_line: LineHandler | None = None, on_stderr_line: LineHandler | None = None,
                transcript: IO[bytes] | None = None) -> Outcome:
    """Run argv to the end, the time limit, or the first abort reason a line handler returns."""
    outcome = Outcome()
    sink = _Transcript(transcript, cap, outcome)
    started = time.monotonic()
    name = Path(argv[0]).name
    if not os.access(argv[0], os.X_OK):
        outcome.start_error = f"{argv[0]}: not an executable file"
        return outcome
    # The CLI runs under reaper.py, a child subreaper that inherits and kills whatever the
    # CLI's tree leaves behind (even in sessions of their own); the sampling below is the
    # second line, for a reaper killed before it could sweep.
    wrapped = [sys.executable, "-I", "-S", str(REAPER), "--", *argv]
    try:
        proc = subprocess.Popen(wrapped, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as err:
        outcome.start_error = f"{argv[0]}: {err.strerror or err}"
        return outcome
    outcome.pid = proc.pid
    sink.note(f"started {name} (pid {proc.pid}, process group {proc.pid}), limit {timeout:g} s, "
              f"output cap {cap} bytes")
    assert proc.stdout is not None and proc.stderr is not None
    stop = threading.Event()

    def abort(reason: str) -> None:
        if outcome.aborted is None:
            outcome.aborted = reason
        stop.set()

    readers = [
        threading.Thread(target=_read_lines, args=(proc.stdout, sink, on_stdout_line, None, abort), daemon=True),
        threading.Thread(target=_read_lines, args=(proc.stderr, sink, on_stderr_line, outcome.stderr_tail, abort),
                         daemon=True),
    ]
    for r in readers:
        r.start()
    seen: set[tuple[int, int]] = set()
    deadline = started + timeout
    while True:
        for p in proctree.related(proc.pid, seen):
            seen.add((p.pid, p.start))
        left = deadline - time.monotonic()
        if left <= 0:
            outcome.timed_out = True
            break
        if stop.is_set():
            break
        try:
            proc.wait(timeout=min(SAMPLE_SECONDS, left))
            break
        except subprocess.TimeoutExpired:
            continue
    if outcome.timed_out or (stop.is_set() and proc.poll() is None):
        sink.note(f"time limit of {timeout:g} s reached: stopping the agent and everything it started"
                  if outcome.timed_out else f"stopping the agent: {outcome.aborted}")
        tree = proctree.related(proc.pid, seen)
        proctree.kill_group(proc.pid, signal.SIGTERM)
        proctree.signal_all(tree, signal.SIGTERM)
        try:
            proc.wait(timeout=TERM_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    outcome.leftovers_killed = _kill_leftovers(proc, seen)
    outcome.exit_code = None if outcome.timed_out or outcome.aborted else proc.returncode
    for r in readers:
        # A leftover that escaped every kill could hold a pipe open; never wait on it forever.
        r.join(timeout=5)
    outcome.duration = time.monotonic() - started
    if os.getpid() == 1:
        proctree.reap_orphans()
    if outcome.dropped_bytes:
        sink.note(f"dropped {outcome.dropped_bytes} bytes of output past the cap of {cap} bytes")
    sink.note(f"{name} " + ("timed out" if outcome.timed_out else
                                          "stopped" if outcome.aborted else f"exited {proc.returncode}")
              + f" after {outcome.duration:.1f} s")
    return outcome


def _kill_leftovers(proc: subprocess.Popen[bytes], seen: set[tuple[int, int]]) -> int:
    """SIGKILL the group, the session and every sampled descendant still alive; reap the CLI."""
    killed = 0
    for _ in range(5):
        tree = proctree.related(proc.pid, seen, root_alive=proc.poll() is None)
        proctree.kill_group(proc.pid)
        killed += proctree.signal_all(tree, signal.SIGKILL)
        if proc.poll() is None:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                continue
        if not tree:
            break
        time.sleep(0.05)
    return killed
