"""Running the bridge as a process: build the backend once, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from foundry.bridge.app import Bridge
from foundry.bridge.backend import RealBackend
from foundry.bridge.lean import open_lean_intake
from foundry.bridge.settings import Settings
from foundry.db.engine import database_url, normalise_url

READY_LINE = "foundry bridge listening on"


async def serve(settings: Settings, host: str, port: int, announce: Callable[[str], None]) -> None:
    """Serve until a termination signal; `announce` receives the bound URL (port 0 picks a free one)."""
    backend = RealBackend.from_settings(settings.database_url, settings.kubeconfig, settings.namespace, settings.workers)
    url = normalise_url(settings.database_url or database_url())
    lean = None
    if settings.lean and url.get_backend_name() == "postgresql":
        # Created inside the running loop: the aiohttp session and the pool belong to it.
        lean = open_lean_intake(url, backend.api_client.configuration, settings.namespace, connections=settings.workers)
    bridge = Bridge(settings, backend, lean=lean)
    from foundry.linear_sweep.loop import start_sweep

    sweep = start_sweep(settings, backend, bridge.metrics.registry)
    # No access log: the bridge writes its own structured line per delivery.
    runner = web.AppRunner(bridge.application(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
        # Handlers first, then the announcement: a SIGTERM right after "listening"
        # must stop the bridge cleanly, not kill it with the default action.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        announce(f"{READY_LINE} http://{shown}:{bound[1]}")
        await stop.wait()
    finally:
        if sweep is not None:
            await asyncio.to_thread(sweep.stop)
        await runner.cleanup()  # stops accepting, lets in-flight handlers finish, shuts the pool
        backend.close()


def run(settings: Settings, host: str, port: int) -> None:
    def announce(line: str) -> None:
        print(line, flush=True)

    asyncio.run(serve(settings, host, port, announce))
    print("foundry bridge stopped", file=sys.stderr, flush=True)
