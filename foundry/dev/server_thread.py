"""An aiohttp application served from a background thread with its own event loop.

Tests and the demo are synchronous; the stand-ins run here so a test can drive
them with plain method calls while they serve HTTP and send webhooks.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Coroutine, TypeVar

from aiohttp import web

T = TypeVar("T")


class ServerThread:
    """Subclasses implement `build_app()`; `.url` is valid between start() and stop()."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def build_app(self) -> web.Application:  # pragma: no cover - abstract
        raise NotImplementedError

    async def on_stop(self) -> None:
        """Hook for subclasses: release resources owned by the loop."""

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServerThread":
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start within 10 s")
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} failed to bind")
        return self

    def _serve(self, ready: threading.Event) -> None:
        assert self.loop is not None
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._bind())
        finally:
            ready.set()
        if self.port is not None:
            self.loop.run_forever()
        self.loop.close()

    async def _bind(self) -> None:
        # A short shutdown grace: a request held by a "hang" fault must not hold up stop().
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        sockets = site._server.sockets if site._server else []  # aiohttp exposes no public getter
        self.port = sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._thread is None or self.loop is None:
            return
        loop = self.loop

        async def shutdown() -> None:
            await self.on_stop()
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
            self._thread = None
            self.port = None

    def run(self, coro: Coroutine[Any, Any, T] | Awaitable[T], timeout: float = 10) -> T:
        """Run a coroutine on the server's loop from another thread and return its result."""
        if self.loop is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def __enter__(self) -> Any:
        # Entering an already started server just scopes its stop().
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def control_routes(target: object, allowed: frozenset[str]) -> list[web.RouteDef]:
    """POST /_control/<method> with a JSON object of keyword arguments calls
    target.<method>(**kwargs) and answers its JSON-able result: lets a demo agent
    in another process drive a stand-in ("open a PR", "fail CI")."""

    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["method"]
        if name not in allowed:
            return web.json_response({"error": f"unknown control {name!r}", "allowed": sorted(allowed)}, status=404)
        try:
            kwargs = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        if not isinstance(kwargs, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, lambda: getattr(target, name)(**kwargs))
        except (TypeError, ValueError, KeyError) as err:
            return web.json_response({"error": f"{type(err).__name__}: {err}"}, status=400)
        return web.json_response({"result": result})

    return [web.post("/_control/{method}", handle)]
