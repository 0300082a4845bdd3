"""A pytest plugin: an operator test fails if the operator logged an unexpected error.

The operator tests assert phases; an ERROR log or a traceback from Foundry or
kopf on the way there (a handler that crashed and was retried, a resync that
failed) would otherwise pass unseen. For every test in a `test_operator_*`
module this plugin collects, while the test runs:

- log records at ERROR or above, or carrying a traceback, from the `foundry`
  and `kopf` loggers of this process (the operator threads of
  tests.support.operator_kit.operator_thread);
- ERROR/CRITICAL lines and tracebacks in the logs of operator child processes
  (tests.support.operator_process registers each log it writes, with
  `watch_log`).

If any remain after the test's allow-list, the test fails, listing them. A
test that provokes errors on purpose names them:

    @pytest.mark.allow_operator_errors(r"failed temporarily: .*database unavailable")

Each argument is a regular expression searched in the message (and its
traceback); a record matching any of them is allowed.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

MARKER = "allow_operator_errors"
WATCHED_LOGGERS = ("foundry", "kopf")
_LINE_LEVEL = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) ")
_TIMESTAMPED = re.compile(r"^\d{4}-\d{2}-\d{2} ")
TRACEBACK = "Traceback (most recent call last)"

_logs: list[tuple[Path, int]] = []  # (log file, its size when watching began)
_logs_lock = threading.Lock()


@dataclass(frozen=True)
class Found:
    where: str  # "this process" or a log file's path
    text: str


def watch_log(path: Path) -> None:
    """Have the running test's check also read the log file at `path` (from its current end)."""
    start = path.stat().st_size if path.exists() else 0
    with _logs_lock:
        _logs.append((path, start))


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: list[Found] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.split(".")[0] in WATCHED_LOGGERS:
            return
        if record.levelno < logging.ERROR and not record.exc_info:
            return
        try:
            text = f"{record.levelname} {record.name}: {record.getMessage()}"
        except Exception:  # noqa: BLE001 - a bad format string is itself worth reporting
            text = f"{record.levelname} {record.name}: {record.msg!r}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.found.append(Found("this process", text))


def errors_in_log(text: str) -> list[str]:
    """ERROR/CRITICAL entries and tracebacks in a child operator's log (format
    `%(asctime)s %(levelname)s %(name)s %(message)s`). An entry is a timestamped
    line with the lines below it up to the next one, so a traceback stays with
    the record that printed it (or, printed bare, with the record before it)."""
    entries: list[list[str]] = [[]]
    for line in text.splitlines():
        if _TIMESTAMPED.match(line):
            entries.append([line])
        else:
            entries[-1].append(line)
    return ["\n".join(e) for e in entries
            if e and (_LINE_LEVEL.match(e[0]) or any(line.startswith(TRACEBACK) for line in e))]


def _allowed(item: pytest.Item) -> list[re.Pattern[str]]:
    patterns: list[re.Pattern[str]] = []
    for mark in item.iter_markers(MARKER):
        patterns.extend(re.compile(p, re.S) for p in mark.args)
    return patterns


def _is_operator_test(item: pytest.Item) -> bool:
    return Path(str(item.fspath)).name.startswith("test_operator_")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(*patterns): regular expressions for operator errors this test expects "
                   "(tests.support.pytest_operator_errors)")


@pytest.fixture(autouse=True)
def _operator_errors_fail_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    if not _is_operator_test(request.node):
        yield
        return
    collector = _Collector()
    root = logging.getLogger()
    root.addHandler(collector)
    with _logs_lock:
        _logs.clear()
    try:
        yield
    finally:
        root.removeHandler(collector)
    found = list(collector.found)
    with _logs_lock:
        logs = list(_logs)
        _logs.clear()
    for path, start in logs:
        if path.exists():
            with open(path, "rb") as fh:
                fh.seek(start)
                text = fh.read().decode(errors="replace")
            found.extend(Found(str(path), entry) for entry in errors_in_log(text))
    allowed = _allowed(request.node)
    unexpected = [f for f in found if not any(p.search(f.text) for p in allowed)]
    if unexpected:
        shown = "\n\n".join(f"[{f.where}]\n{f.text}" for f in unexpected[:10])
        more = f"\n\n(and {len(unexpected) - 10} more)" if len(unexpected) > 10 else ""
        pytest.fail(f"the operator logged {len(unexpected)} unexpected error(s); fix them or allow them with "
                    f"@pytest.mark.{MARKER}(pattern):\n\n{shown}{more}", pytrace=False)
