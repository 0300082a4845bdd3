"""A throwaway PostgreSQL server for tests and benchmarks.

initdb into a temp dir, start `postgres` on a free localhost port with its
socket in that dir and durability switched off (the data is disposable), and
remove everything on stop(). Running as root, the server runs as the
`postgres` OS user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from foundry.db.engine import normalise_url
from foundry.paths import REPO_ROOT

ENSURE_SCRIPT = REPO_ROOT / "tools" / "ensure-postgres.sh"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    pass


def find_bin_dir(install: bool = True) -> Path:
    """Directory holding initdb and postgres; runs tools/ensure-postgres.sh (which may install) if needed."""
    override = os.environ.get("FOUNDRY_PG_BIN_DIR")
    if override:
        if (Path(override) / "initdb").exists():
            return Path(override)
        raise PostgresUnavailable(f"FOUNDRY_PG_BIN_DIR={override} holds no initdb")
    found = _installed_bin_dir()
    if found:
        return found
    if install and ENSURE_SCRIPT.exists():
        proc = subprocess.run(["bash", str(ENSURE_SCRIPT)], stdout=subprocess.PIPE, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines and (Path(lines[-1]) / "initdb").exists():
            return Path(lines[-1])
        raise PostgresUnavailable(f"{ENSURE_SCRIPT} could not provide PostgreSQL (exit {proc.returncode})")
    raise PostgresUnavailable(
        "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH); "
        "run tools/ensure-postgres.sh or set FOUNDRY_TEST_DATABASE_URL to a server you can create databases on"
    )


def _installed_bin_dir() -> Path | None:
    def version(path: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", Path(path).parent.parent.name))

    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if debian:
        return Path(debian[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # If the test process dies (even by SIGKILL) the server gets SIGQUIT, the
    # immediate shutdown, so no postgres outlives a crashed run.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGQUIT)  # PR_SET_PDEATHSIG


@dataclass
class PostgresServer:
    bin_dir: Path
    workdir: Path
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The maintenance database; create per-test databases from here."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgres.log"

    @classmethod
    def start(cls, bin_dir: Path | None = None) -> PostgresServer:
        workdir = Path(tempfile.mkdtemp(prefix="foundry-pg-"))
        server = cls(bin_dir=bin_dir or find_bin_dir(), workdir=workdir)
        try:
            server._initdb()
            server._launch()
        except BaseException:
            server.stop()
            raise
        return server

    def _as_postgres_user(self) -> dict[str, object]:
        if os.geteuid() != 0:
            return {}
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable(
                "running as root but there is no `postgres` OS user to run the server as "
                "(installing Debian's postgresql package creates it)"
            ) from None
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _chown_workdir(self) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for path in [self.workdir, *self.workdir.rglob("*")]:
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def _initdb(self) -> None:
        self._as_postgres_user()  # fail early with a clear message
        self._chown_workdir()
        proc = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D", str(self.workdir / "data"),
                "-U", "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            **self._as_postgres_user(),  # type: ignore[arg-type]
        )
        if proc.returncode != 0:
            raise PostgresUnavailable(f"initdb failed (exit {proc.returncode}):\n{proc.stdout.decode(errors='replace')}")

    def _launch(self, port: int | None = None) -> None:
        for _ in range(3):  # another process may grab the free port before we bind it
            self.port = port or free_port()
            args = [str(self.bin_dir / "postgres"), "-D", str(self.workdir / "data"), "-p", str(self.port),
                    "-k", str(self.workdir)]
            for key, value in SERVER_SETTINGS.items():
                args += ["-c", f"{key}={value}"]
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    args,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.workdir,
                    preexec_fn=_die_with_parent,
                    **self._as_postgres_user(),  # type: ignore[arg-type]
                )
            if self._wait_ready():
                return
            if "could not bind" not in self._log_tail():
                break
        raise PostgresUnavailable(f"PostgreSQL did not start; its log ({self.log_path}):\n{self._log_tail()}")

    def _wait_ready(self) -> bool:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False
            try:
                psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        self._terminate()
        return False

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # "fast" shutdown: disconnect clients, exit cleanly
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def outage(self) -> None:
        """Stop the server as a crash or a failover would, keeping its data (see `recover`)."""
        self._terminate()

    def recover(self) -> None:
        """Start it again on the same port with the same data: what clients see after an outage."""
        self._launch(port=self.port)

    def stop(self) -> None:
        try:
            self._terminate()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_database(server_url: str, name: str | None = None) -> str:
    """Create an empty database on the server and return its URL."""
    name = name or f"foundry_test_{uuid.uuid4().hex[:12]}"
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"unsafe database name {name!r}")
    admin = create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    finally:
        admin.dispose()
    return make_url(normalise_url(server_url)).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name_or_url: str) -> None:
    """Drop a database created by create_database, disconnecting anyone still using it."""
    name = make_url(name_or_url).database if "://" in name_or_url else name_or_url
    admin = create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
