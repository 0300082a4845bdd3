"""A TCP server that accepts connections and never answers: a hung dependency.

Whatever protocol the client speaks (HTTP to GitHub or the API server, TLS,
PostgreSQL), the connection opens and then nothing comes back: the client
waits for its read timeout, or forever if it has none. The server reads and
discards what the client sends (so the client's writes never block), and
counts connections, so a test can see how many callers it is holding at once.

    with SilentServer() as silent:
        client = GitHubClient(token, base_url=silent.url, timeout=1.0)
        ...
        assert silent.peak <= 2
"""

from __future__ import annotations

import selectors
import socket
import threading


class SilentServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self._listener = socket.create_server((host, 0))
        self._listener.setblocking(False)
        self.host = host
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.accepted = 0  # connections ever accepted
        self.open = 0  # connections the peer has not closed yet
        self.peak = 0  # the most open at once
        self._thread = threading.Thread(target=self._serve, name="silent-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.open

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                sock = key.fileobj
                if sock is self._listener:
                    try:
                        conn, _ = self._listener.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(False)
                    self._selector.register(conn, selectors.EVENT_READ)
                    with self._lock:
                        self.accepted += 1
                        self.open += 1
                        self.peak = max(self.peak, self.open)
                    continue
                try:
                    data = sock.recv(65536)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # the client gave up and closed
                    self._selector.unregister(sock)
                    sock.close()  # type: ignore[union-attr]
                    with self._lock:
                        self.open -= 1
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> "SilentServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
