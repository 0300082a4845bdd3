"""Helpers for driving bridges in tests and benchmarks: signed deliveries and bridge processes.

Payloads follow the shapes the real services (and the stand-ins in
foundry.dev) send, reduced to what a test varies. Signing here is the
documented algorithm; the bridge's own verification is tested against an
independent computation in the tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundry.bridge.server import READY_LINE


def encode(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def now_ms() -> int:
    return int(time.time() * 1000)


def linear_issue(
    issue_id: str,
    key: str,
    *,
    updated_at: str = "2025-01-01T10:00:00.000Z",
    title: str = "Fix the login redirect",
    description: str = "",
    labels: tuple[str, ...] = ("foundry",),
    state: str = "Todo",
    action: str = "update",
    actor_email: str = "alice@example.com",
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    team = key.split("-", 1)[0]
    return {
        "action": action,
        "type": "Issue",
        "actor": {"id": "user-alice", "name": "Alice", "email": actor_email, "type": "user"},
        "createdAt": updated_at,
        "organizationId": "org-1",
        "url": f"https://linear.app/acme/issue/{key}",
        "webhookId": "webhook-1",
        "webhookTimestamp": now_ms() if timestamp_ms is None else timestamp_ms,
        "data": {
            "id": issue_id,
            "identifier": key,
            "title": title,
            "description": description,
            "priority": 2,
            "url": f"https://linear.app/acme/issue/{key}",
            "updatedAt": updated_at,
            "createdAt": "2025-01-01T09:00:00.000Z",
            "state": {"id": "state-1", "name": state, "type": "unstarted"},
            "team": {"id": "team-1", "key": team, "name": team.title()},
            "labels": [{"id": f"label-{n}", "name": n} for n in labels],
        },
    }


def linear_comment(
    issue_id: str,
    body: str,
    *,
    user_id: str = "user-alice",
    email: str | None = "alice@example.com",
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    user: dict[str, Any] = {"id": user_id, "name": "Alice"}
    if email is not None:
        user["email"] = email
    return {
        "action": "create",
        "type": "Comment",
        "actor": {**user, "type": "user"},
        "createdAt": "2025-01-01T10:00:00.000Z",
        "organizationId": "org-1",
        "url": "https://linear.app/acme/issue/x#comment",
        "webhookId": "webhook-1",
        "webhookTimestamp": now_ms() if timestamp_ms is None else timestamp_ms,
        "data": {"id": str(uuid.uuid4()), "body": body, "issueId": issue_id, "userId": user_id, "user": user},
    }


def github_pull_request(branch: str, title: str, *, action: str = "synchronize", number: int = 7) -> dict[str, Any]:
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "title": title,
            "state": "open",
            "head": {"ref": branch, "sha": "a" * 40},
            "base": {"ref": "main", "sha": "b" * 40},
        },
        "repository": {"full_name": "acme/app"},
    }


def linear_headers(body: bytes, secret: str, delivery_id: str, *, event: str = "Issue") -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=utf-8",
        "Linear-Delivery": delivery_id,
        "Linear-Event": event,
        "Linear-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }


def github_headers(body: bytes, secret: str, delivery_id: str, event: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id,
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }


@dataclass
class BridgeProcess:
    """`foundry bridge` as a real process on a free port; stop() ends it (SIGTERM, then SIGKILL)."""

    env: Mapping[str, str]
    extra_args: tuple[str, ...] = ()
    log_path: Path | None = None
    url: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 30.0) -> "BridgeProcess":
        env = {**os.environ, **self.env}
        stderr = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "foundry.cli.bridge", "--host", "127.0.0.1", "--port", "0", *self.extra_args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        finally:
            if self.log_path:
                stderr.close()  # type: ignore[union-attr]
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buffered = b""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if selector.select(0.2):
                chunk = os.read(self.process.stdout.fileno(), 4096)
                buffered += chunk
                for line in buffered.decode(errors="replace").splitlines():
                    if line.startswith(READY_LINE):
                        self.url = line[len(READY_LINE):].strip()
                        selector.close()
                        return self
        selector.close()
        self.stop()
        where = f"; its log is {self.log_path}" if self.log_path else ""
        raise RuntimeError(f"bridge process did not report its address within {timeout} s{where}")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        code = self.process.returncode
        self.process = None
        return code

    def __enter__(self) -> "BridgeProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
