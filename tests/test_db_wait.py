"""`foundry db upgrade --wait`: the chart's migration waits for a database that is still coming up,
and fails at once on an error that waiting cannot fix."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from foundry.cli.db import db as db_cli
from foundry.db import migrate

pytestmark = pytest.mark.postgres


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LateProxy:
    """Starts listening on `port` only after `delay` seconds, then forwards each connection to the real
    server: a database whose address exists before it accepts connections, as a starting pod's."""

    def __init__(self, port: int, target: tuple[str, int], delay: float) -> None:
        self.port, self.target, self.delay = port, target, delay
        self.accepted_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "LateProxy":
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _serve(self) -> None:
        if self._stop.wait(self.delay):
            return
        with socket.socket() as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen()
            listener.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except socket.timeout:
                    continue
                if self.accepted_at is None:
                    self.accepted_at = time.monotonic()
                upstream = socket.create_connection(self.target)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _via(url: str, port: int, **changes) -> str:
    return make_url(url).set(host="127.0.0.1", port=port, **changes).render_as_string(hide_password=False)


def test_upgrade_waits_for_a_database_that_comes_up_late(pg_url):
    real = make_url(pg_url)
    port = _free_port()
    with LateProxy(port, (real.host or "127.0.0.1", real.port or 5432), delay=2.5) as proxy:
        result = CliRunner().invoke(db_cli, ["upgrade", "--wait", "60", "--database-url", _via(pg_url, port)])
        assert result.exit_code == 0, result.output
        # It did wait: the migration succeeded only after the proxy began to accept.
        assert proxy.accepted_at is not None and proxy.accepted_at - proxy.started >= 2.5
    assert migrate.current_revision(pg_url) == migrate.head_revision()


def test_without_wait_a_late_database_fails_at_once(pg_url):
    port = _free_port()
    started = time.monotonic()
    result = CliRunner().invoke(db_cli, ["upgrade", "--database-url", _via(pg_url, port)])
    assert result.exit_code != 0 and "cannot use the database" in result.output, result.output
    assert time.monotonic() - started < 10


def test_wait_gives_up_after_its_deadline_naming_the_database(pg_url):
    port = _free_port()
    started = time.monotonic()
    result = CliRunner().invoke(db_cli, ["upgrade", "--wait", "3", "--database-url", _via(pg_url, port)])
    took = time.monotonic() - started
    assert result.exit_code != 0, result.output
    assert f"127.0.0.1:{port}" in result.output and "refused" in result.output.lower(), result.output
    assert 3 <= took < 15


def test_a_missing_database_is_not_waited_for(pg_url):
    # The server answers, so waiting cannot help: it fails at once (the test server trusts local
    # users, so a wrong password would not do; a database that does not exist is the same kind of error).
    started = time.monotonic()
    missing = make_url(pg_url).set(database="no_such_db_here").render_as_string(hide_password=False)
    result = CliRunner().invoke(db_cli, ["upgrade", "--wait", "60", "--database-url", missing])
    assert result.exit_code != 0 and "no_such_db_here" in result.output, result.output
    assert time.monotonic() - started < 10, "an error the server gave must not be retried until the deadline"
