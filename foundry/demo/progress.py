"""The demo's progress display: one line per step, with the time since start.

On a terminal the current wait shows a spinner (rich); piped, each line is
plain text, so a CI log of `make demo` reads like a story.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from collections.abc import Iterator
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, rich: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.rich = self.stream.isatty() if rich is None else rich
        self.started = time.monotonic()
        self._console = None
        if self.rich:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.started:5.1f}s]"

    def step(self, text: str) -> None:
        """Something happened."""
        self._emit(f"{self._stamp()} ✓ {text}", "green")

    def note(self, text: str) -> None:
        """Context for the reader (no state change)."""
        self._emit(f"{' ' * len(self._stamp())}   {text}", "dim")

    def fail(self, text: str) -> None:
        self._emit(f"{self._stamp()} ✗ {text}", "bold red")

    def heading(self, text: str) -> None:
        self._emit(f"\n{text}", "bold")

    @contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        """A step that takes a while: a spinner on a terminal, a `…` line when piped."""
        if self._console is None:
            self._emit(f"{self._stamp()} … {text}", None)
            yield
            return
        with self._console.status(text, spinner="dots"):
            yield

    def _emit(self, text: str, style: str | None) -> None:
        if self._console is not None:
            self._console.print(text, style=style, markup=False)
        else:
            print(text, file=self.stream, flush=True)
