"""A webhook target for tests: records every request and answers as scripted.

    with WebhookReceiver() as hook:
        hook.script(500, 500)          # the next two requests fail, then 200s
        hook.script(("hang", 1.0))     # or: answer only after a second
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass

from aiohttp import web

from foundry.dev.server_thread import ServerThread


@dataclass(frozen=True)
class Received:
    at: float
    headers: dict[str, str]
    body: bytes
    answered: int | None  # None: the receiver hung and the sender gave up


class WebhookReceiver(ServerThread):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._script: deque[int | tuple[str, float]] = deque()
        self.received: list[Received] = []
        self._arrived = threading.Condition(self._lock)

    def build_app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.post("/{tail:.*}", self._handle)])
        return app

    def script(self, *answers: int | tuple[str, float]) -> None:
        with self._lock:
            self._script.extend(answers)

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(left)
        return True

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.monotonic()
        with self._lock:
            answer = self._script.popleft() if self._script else 200
        status = answer if isinstance(answer, int) else None
        with self._arrived:
            self.received.append(Received(at, dict(request.headers), body, status))
            self._arrived.notify_all()
        if isinstance(answer, tuple):
            await asyncio.sleep(answer[1])
            return web.Response(status=200, text="late")
        return web.Response(status=answer, text="ok" if answer < 300 else "fail")
