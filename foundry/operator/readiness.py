"""The operator's /readyz: ready means able to act now or to take over.

A leader answers 200 `leading`; a standby whose view of the Lease is fresh
answers 200 `standby` (naming the leader): it watches and would take over, so
a rolling update may proceed past it. A process that cannot read the Lease
answers 503, saying why. Without election (one process) it answers 200
`leading (standalone)`. Served on its own port by a small thread: kopf's
liveness endpoint answers only its one path.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

log = logging.getLogger(__name__)

PATH = "/readyz"


def verdict(elector: Any | None) -> tuple[int, str]:
    """(HTTP status, body) for the elector's state (None: no election)."""
    if elector is None:
        return 200, "leading (standalone)\n"
    if elector.leading():
        return 200, f"leading: {elector.me} holds the Lease\n"
    if elector.healthy():
        return 200, f"standby: {elector.holder() or 'nobody'} holds the Lease; {elector.me} takes over if it lapses\n"
    return 503, f"not ready: {elector.me} has not read the Lease within the renew deadline\n"


class ReadinessServer:
    def __init__(self, port: int, state: Callable[[], tuple[int, str]], addr: str = "0.0.0.0") -> None:
        handler = _handler(state)
        self.httpd = ThreadingHTTPServer((addr, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="foundry-readyz", daemon=True)

    def start(self) -> "ReadinessServer":
        self._thread.start()
        log.info("readiness on :%s%s", self.port, PATH)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(state: Callable[[], tuple[int, str]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?", 1)[0] != PATH:
                code, body = 404, f"not found; the readiness probe is {PATH}\n"
            else:
                try:
                    code, body = state()
                except Exception as err:  # noqa: BLE001 - a probe answers, whatever happened
                    code, body = 503, f"not ready: {type(err).__name__}: {err}\n"
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the probe every few seconds is noise
            return

    return Handler
