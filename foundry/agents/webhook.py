"""The `webhook` provider: POST the attempt's input to an agent service, signed.

The body is JSON {"event": "dispatch", "delivery": "<run>-a<attempt>",
"run", "namespace", "attempt", "input"}; the header
`X-Foundry-Signature-256: sha256=<hex HMAC-SHA256 of the body>` is keyed by the
secret in the environment variable agent.webhook_secret_env. The receiver
dedups by `X-Foundry-Delivery` (= the attempt name), so a re-send after an
ambiguous failure or an operator crash starts nothing twice.

The service reports back through its pull request, so state() knows only
"sent, and how long ago": running until timeouts.agent_seconds have passed,
then failed (DeadlineExceeded).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import httpx

from foundry.agents.provider import (FAILED, MISSING, RUNNING, AgentError, AgentUnavailable, attempt_name, record,
                                 recorded_job, run_identity, utc_iso)
from foundry.config import FoundryConfig

SIGNATURE_HEADER = "X-Foundry-Signature-256"
DELIVERY_HEADER = "X-Foundry-Delivery"
EVENT_HEADER = "X-Foundry-Event"


def sign(body: bytes, secret: str) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """Constant-time check of a signature header (for agent services written in Python, and tests)."""
    return bool(header) and hmac.compare_digest(sign(body, secret), header)


def build_request(run: Mapping[str, Any], attempt: int, job_input: Mapping[str, Any], secret: str,
                  event: str = "dispatch") -> tuple[bytes, dict[str, str]]:
    """The exact body bytes and headers of one signed delivery (pure)."""
    name, namespace, _ = run_identity(run)
    delivery = attempt_name(name, attempt)
    payload = {"event": event, "delivery": delivery, "run": name, "namespace": namespace, "attempt": attempt,
               "input": dict(job_input)}
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret),
               DELIVERY_HEADER: delivery, EVENT_HEADER: event}
    return body, headers


class WebhookProvider:
    """Agent attempts as signed POSTs to agent.webhook_url."""

    def __init__(self, cfg: FoundryConfig, *, http: httpx.Client | None = None,
                 env: Mapping[str, str] | None = None, clock: Callable[[], datetime] | None = None) -> None:
        if not cfg.agent.webhook_url:
            raise AgentError("agent.webhook_url is required for the webhook provider")
        self.cfg = cfg
        self.url = cfg.agent.webhook_url
        self.http = http or httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0))
        self.env = env if env is not None else os.environ
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    def _secret(self) -> str:
        name = self.cfg.agent.webhook_secret_env
        secret = (self.env.get(name) or "").strip()
        if not secret:
            raise AgentError(f"{name} is not set; the webhook provider signs every request with it")
        return secret

    def _post(self, body: bytes, headers: dict[str, str], what: str) -> None:
        try:
            resp = self.http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as err:
            raise AgentUnavailable(f"{what}: {type(err).__name__}: {err}") from err
        if resp.status_code == 429 or resp.status_code >= 500:
            raise AgentUnavailable(f"{what}: agent service answered {resp.status_code}")
        if resp.status_code >= 400:
            raise AgentError(f"{what}: agent service refused with {resp.status_code}: {resp.text[:200]}")

    def dispatch(self, run: Mapping[str, Any], attempt: int, job_input: Mapping[str, Any]) -> dict[str, Any]:
        """Send the attempt once (an attempt the run already recorded is not re-sent)."""
        name, _, _ = run_identity(run)
        delivery = attempt_name(name, attempt)
        known = recorded_job(run, attempt)
        if known is not None:
            return dict(known)
        body, headers = build_request(run, attempt, job_input, self._secret())
        self._post(body, headers, f"sending attempt {delivery} to {self.url}")
        return record(delivery, attempt, RUNNING, utc_iso(self.clock()))

    def state(self, run: Mapping[str, Any], attempt: int) -> dict[str, Any]:
        known = recorded_job(run, attempt)
        if known is None or not known.get("startedAt"):
            return {"state": MISSING}
        started = datetime.fromisoformat(str(known["startedAt"]).replace("Z", "+00:00"))
        deadline = started + timedelta(seconds=self.cfg.timeouts.agent_seconds)
        if self.clock() >= deadline:
            return {"state": FAILED, "startedAt": known["startedAt"], "finishedAt": utc_iso(deadline),
                    "reason": "DeadlineExceeded"}
        return {"state": RUNNING, "startedAt": known["startedAt"]}

    def cancel(self, run: Mapping[str, Any], attempt: int) -> None:
        """Tell the service to stop (signed `cancel` event); unreachable → AgentUnavailable, so it is retried."""
        body, headers = build_request(run, attempt, {}, self._secret(), event="cancel")
        self._post(body, headers, f"cancelling attempt {attempt_name(run_identity(run)[0], attempt)}")

    # A webhook agent service speaks only the apply contract: config refuses plan.mode agent with it
    # (foundry.config.PLANNING_PROVIDERS), so these are reached only by a caller's mistake.

    def dispatch_plan(self, run: Mapping[str, Any], number: int, job_input: Mapping[str, Any]) -> dict[str, Any]:
        raise AgentError("the webhook provider cannot run a plan Job; use plan.mode heuristic with it")

    def plan_state(self, run: Mapping[str, Any], number: int) -> dict[str, Any]:
        return {"state": MISSING}

    def cancel_plan(self, run: Mapping[str, Any], number: int) -> None:
        return None  # it never started one

    def close(self) -> None:
        self.http.close()
