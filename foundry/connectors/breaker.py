"""Fail fast on a service that has stopped answering (a circuit breaker, as an httpx transport).

A service that accepts connections and never answers costs each caller a
full timeout, and each retry another. In the operator that means a reconcile
thread per waiting run: a few runs that need a silent GitHub would occupy
every worker, and runs that need only Linear and the API server would queue
behind them. With this transport, the first request that times out opens the
circuit: for `cooldown` seconds every request to the service fails at once
(`CircuitOpen`, which the clients raise as `Paused`, retried later by the
operator); then one request at a time probes it, and the first answer closes
the circuit again.

Only silence trips it (httpx timeouts). A refused connection fails fast by
itself, and an HTTP error is an answer: the clients' own retry policy handles
both.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import httpx

DEFAULT_COOLDOWN = 15.0


class CircuitOpen(httpx.TransportError):
    """Not sent: the service timed out recently and is being left alone for a while."""


class BreakerTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport | None = None, *, cooldown: float = DEFAULT_COOLDOWN,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._inner = inner if inner is not None else httpx.HTTPTransport()
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None  # None: closed (calls go through)
        self._probing = False
        self._tripped_by = ""

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        probe = self._admit(request)
        try:
            response = self._inner.handle_request(request)
        except httpx.TimeoutException as err:
            self._trip(f"{type(err).__name__} on {request.method} {request.url.path}")
            raise
        except BaseException:
            if probe:
                with self._lock:
                    self._probing = False  # no verdict: the next request probes again
            raise
        with self._lock:
            self._open_until, self._probing = None, False
        return response

    def close(self) -> None:
        self._inner.close()

    def _admit(self, request: httpx.Request) -> bool:
        """True if this request is the probe of an open circuit; raises if it may not be sent."""
        with self._lock:
            if self._open_until is None:
                return False
            now = self._clock()
            host = request.url.host
            if now < self._open_until:
                raise CircuitOpen(f"{host} did not answer in time ({self._tripped_by}); not calling it for "
                                  f"another {self._open_until - now:.0f}s", request=request)
            if self._probing:
                raise CircuitOpen(f"{host} did not answer in time ({self._tripped_by}); one request is "
                                  "checking whether it answers again", request=request)
            self._probing = True
            return True

    def _trip(self, why: str) -> None:
        with self._lock:
            self._open_until = self._clock() + self.cooldown
            self._probing = False
            self._tripped_by = why
