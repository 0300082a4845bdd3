"""The local Linear (foundry.dev.linear_server) in a process of its own, for benchmarks.

In the benchmark's own process the stand-in shares one GIL with the threads that
create the tickets and poll the runs, so the operator's Linear requests queue
behind the tool's work: a limit of the harness, not of the operator. Here the
server runs in a child (`python -m tests.support.linear_process`) and this side
is a small proxy with the methods OperatorStack and the benchmarks call, sent
over the server's /_control routes (foundry.dev.server_thread.control_routes).

    with LinearProcess() as linear:
        team = linear.add_team("ACME")
        issue_id = linear.create_issue("ACME", "Add a health endpoint", "...")
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


class LinearProcess:
    """A LinearServer in a child process; the parts of its API the harnesses use."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        # stdin is the child's lifeline: it stops when this side closes it (or dies).
        self._proc = subprocess.Popen([sys.executable, "-m", "tests.support.linear_process"], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Linear process exited with {self._proc.wait(10)} before it served")
        ready = json.loads(line)
        self.url: str = ready["url"]
        self.api_key: str = ready["api_key"]
        self.graphql_url = f"{self.url}/graphql"
        self._http = httpx.Client(base_url=self.url, timeout=30,
                                  limits=httpx.Limits(max_connections=32, max_keepalive_connections=32))

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _call(self, method: str, **kwargs: Any) -> Any:
        response = self._http.post(f"/_control/{method}", json=kwargs)
        if response.status_code != 200:
            raise RuntimeError(f"Linear control {method}: {response.status_code} {response.text}")
        return response.json()["result"]

    def add_team(self, key: str, name: str | None = None) -> str:
        return self._call("add_team", key=key, name=name)

    def add_user(self, name: str, email: str) -> str:
        return self._call("add_user", name=name, email=email)

    def create_issue(self, team_key: str, title: str, description: str = "", **kwargs: Any) -> str:
        return self._call("create_issue", team_key=team_key, title=title, description=description, **kwargs)

    def issue_json(self, issue_id: str) -> dict[str, Any]:
        return self._call("issue_json", issue_id=issue_id)

    def comments_json(self, issue_id: str) -> list[dict[str, Any]]:
        return self._call("comments_json", issue_id=issue_id)

    def add_comment(self, issue_id: str, body: str, *, user_id: str | None = None) -> str:
        return self._call("add_comment", issue_id=issue_id, body=body, user_id=user_id)

    def stop(self) -> None:
        self._http.close()
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)

    def __enter__(self) -> "LinearProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve() -> None:
    from foundry.dev.linear_server import LinearServer

    with LinearServer() as server:
        print(json.dumps({"url": server.url, "api_key": server.api_key}), flush=True)
        sys.stdin.read()  # until the parent closes it


if __name__ == "__main__":
    _serve()
