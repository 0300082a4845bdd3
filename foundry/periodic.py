"""A daemon thread that runs one round now, then again and again until stopped.

The bridge's Linear sweep and the operator's housekeeping both work in rounds
on a timer of their own, outside any event loop: this is that loop, once. A
round that raises is logged and the loop goes on (a bug must not end it for
good); `next_delay` says how long to wait after each round, given its result.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable


class Periodic:
    def __init__(self, name: str, round_: Callable[[], Any], next_delay: Callable[[Any], float],
                 log: logging.Logger) -> None:
        self.name = name
        self._round = round_
        self._next_delay = next_delay
        self._log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def start(self) -> "Periodic":
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop after the current round; whether the thread has ended within `timeout`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                result = self._round()
            except Exception:  # noqa: BLE001 - a last resort: rounds report their own failures
                self._log.exception("%s round raised", self.name)
                result = None
            self.rounds += 1
            self._stop.wait(self._next_delay(result))
