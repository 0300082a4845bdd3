"""git's smart HTTP protocol, served by the real `git http-backend` as a CGI program.

The request body is streamed to the backend's stdin and its answer streamed back,
so a large clone or push never sits in memory. A gzip request body (git sends
one for a large fetch negotiation) is inflated by aiohttp on the way in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from foundry.dev.git_store import GIT, git_env

log = logging.getLogger(__name__)

SERVICES = frozenset({"git-upload-pack", "git-receive-pack"})
CHUNK = 64 * 1024


class BackendFailed(RuntimeError):
    pass


def service_of(path: str, query_service: str | None) -> str | None:
    """Which git service a smart-HTTP request is for (None: not a smart-HTTP request)."""
    if path == "info/refs":
        return query_service if query_service in SERVICES else None
    return path if path in SERVICES else None


async def run_backend(request: web.Request, *, project_root: Path, path_info: str, remote_user: str,
                      extra_env: dict[str, str],
                      before_eof: Callable[[int], Awaitable[None]] | None = None,
                      ) -> tuple[web.StreamResponse, int, str]:
    """Run http-backend for this request; (response sent, exit code, stderr). `before_eof`
    runs once the backend has exited, before the response ends (the client still waits)."""
    env = git_env(
        GIT_PROJECT_ROOT=str(project_root), GIT_HTTP_EXPORT_ALL="1", PATH_INFO=path_info,
        REQUEST_METHOD=request.method, QUERY_STRING=request.query_string,
        CONTENT_TYPE=request.headers.get("Content-Type", ""), REMOTE_USER=remote_user,
        REMOTE_ADDR=request.remote or "", SERVER_PROTOCOL=f"HTTP/{request.version.major}.{request.version.minor}",
        GIT_COMMITTER_NAME=remote_user, GIT_COMMITTER_EMAIL=f"{remote_user}@users.noreply.github.com",
        **extra_env,
    )
    if "Git-Protocol" in request.headers:
        env["HTTP_GIT_PROTOCOL"] = request.headers["Git-Protocol"]
    # aiohttp inflates a gzip or deflate request body as it reads it, so the backend gets it
    # plain: no Content-Encoding for it, and no Content-Length (that counted the compressed bytes).
    if request.content_length is not None and "Content-Encoding" not in request.headers:
        env["CONTENT_LENGTH"] = str(request.content_length)
    proc = await asyncio.create_subprocess_exec(GIT, "http-backend", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=env)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    feeder = asyncio.ensure_future(_feed(request, proc.stdin))
    errors = asyncio.ensure_future(proc.stderr.read())
    try:
        try:
            status, headers = await _read_cgi_headers(proc.stdout)
        except BackendFailed as err:
            code = await proc.wait()
            stderr = (await errors).decode(errors="replace")
            failed = web.Response(status=500, text=f"{err}: {stderr.strip() or f'exit code {code}'}\n")
            await failed.prepare(request)
            await failed.write_eof()
            return failed, code, stderr
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        while chunk := await proc.stdout.read(CHUNK):
            await response.write(chunk)
        await feeder
        code = await proc.wait()
        if before_eof is not None:
            await before_eof(code)
        await response.write_eof()
        return response, code, (await errors).decode(errors="replace")
    finally:
        feeder.cancel()
        if proc.returncode is None:  # the client went away: stop the backend, leave no zombie
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        errors.cancel()


async def _feed(request: web.Request, stdin: asyncio.StreamWriter) -> None:
    try:
        async for chunk in request.content.iter_chunked(CHUNK):
            stdin.write(chunk)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the backend stopped reading (it refused the request); its answer says why
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.close()


async def _read_cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status, headers = 200, {}
    while True:
        raw = await stdout.readline()
        if not raw and not headers:
            raise BackendFailed("git http-backend answered nothing")
        line = raw.decode("latin-1").rstrip("\r\n")
        if not line:
            return status, headers
        name, _, value = line.partition(":")
        value = value.strip()
        if name.lower() == "status":
            status = int(value.split(" ")[0])
        else:
            headers[name] = value
