"""The bridge's HTTP layer: aiohttp handlers that verify, map, execute and answer.

Handlers are async. The intake hot path (claim, create, record) runs on the
event loop itself when a lean path is given (foundry.bridge.lean: psycopg async
and raw aiohttp, PostgreSQL only); everything else blocking (the Kubernetes
client, SQLAlchemy) runs in one bounded thread pool per process, so a storm
cannot open more connections than the pools allow. The order per delivery is fixed:
size 413 → media type 415 → signature 401 (on the raw bytes: nothing unsigned
is parsed) → shape 400 → timestamp 401 → replay check → command → delivery
record. Anything a dependency cannot do right now is a 503 with Retry-After and
nothing recorded, and so is a delivery whose dependencies did not answer within
its deadline (foundry.bridge.deadlines).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from foundry.bridge import commands
from foundry.bridge.commands import AsyncIntakeBackend, Backend, Outcome, Refused, Unavailable
from foundry.bridge.deadlines import DELIVERY_DEADLINE_SECONDS, READY_TIMEOUT_SECONDS
from foundry.bridge.logs import LOGGER_NAME, delivery_fields
from foundry.bridge.mapping import BadPayload, Command, Decision, Ignore, Intake, Ping, PrHint, map_github, map_linear
from foundry.bridge.metrics import BridgeMetrics
from foundry.bridge.settings import Settings
from foundry.bridge.singleflight import SingleFlight
from foundry.bridge.verify import (
    MAX_BODY_BYTES,
    Envelope,
    Rejection,
    check_content_type,
    check_declared_size,
    check_read_size,
    parse_github,
    parse_linear,
    verify_github_signature,
    verify_linear_signature,
    verify_linear_timestamp,
)
from foundry.domain.triggers import Trigger

# Every success, duplicate or ignore is a 200: Linear counts any other status as a
# failed delivery and retries it; GitHub accepts any 2xx. The body says what happened.
ACCEPTED = 200
RETRY_AFTER_SECONDS = 5
_READ_CHUNK = 64 * 1024

T = TypeVar("T")
log = logging.getLogger(LOGGER_NAME)


@dataclass
class Answer:
    """What one delivery is answered, and what the log line and metrics say about it."""

    http_status: int
    outcome: str
    run: str | None = None
    reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    detail: str | None = None  # for the log only, never sent

    def body(self) -> dict[str, Any]:
        if self.http_status >= 400:
            return {"error": self.reason or self.outcome}
        body: dict[str, Any] = {"status": self.outcome, "run": self.run}
        if self.reason:
            body["reason"] = self.reason
        return body


_REJECTION_OUTCOME = {400: "bad_request", 401: "unauthorized", 413: "too_large", 415: "unsupported_media_type"}


class Bridge:
    """One process's bridge: settings, the shared backend, the thread pool and the metrics."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        *,
        lean: AsyncIntakeBackend | None = None,
        clock: Callable[[], float] = time.time,
        max_body_bytes: int = MAX_BODY_BYTES,
        deadline_seconds: float = DELIVERY_DEADLINE_SECONDS,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.lean = lean
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.deadline_seconds = deadline_seconds
        self.metrics = BridgeMetrics()
        self.executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="bridge")
        self.intakes: SingleFlight[Outcome] = SingleFlight()

    # ------------------------------------------------------------ plumbing

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    def application(self) -> web.Application:
        # client_max_size bounds request.read(); handlers read the body themselves with a cap.
        app = web.Application(client_max_size=self.max_body_bytes)
        app.add_routes(
            [
                web.post("/webhooks/linear", self.linear),
                web.post("/webhooks/github", self.github),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics_endpoint),
            ]
        )
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, _app: web.Application) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.lean is not None:
            await self.lean.close()

    # ------------------------------------------------------------ endpoints

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        try:
            checks = await asyncio.wait_for(self.blocking(self.backend.check_ready), READY_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            checks = {"kubernetes": "timeout", "database": "timeout"}
        ready = all(value == "ok" for value in checks.values())
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def metrics_endpoint(self, _request: web.Request) -> web.Response:
        payload, content_type = self.metrics.exposition()
        return web.Response(body=payload, headers={"Content-Type": content_type})

    async def linear(self, request: web.Request) -> web.Response:
        return await self._deliver(request, "linear")

    async def github(self, request: web.Request) -> web.Response:
        return await self._deliver(request, "github")

    # ------------------------------------------------------------ one delivery

    async def _deliver(self, request: web.Request, provider: str) -> web.Response:
        started = time.perf_counter()
        deadline = time.monotonic() + self.deadline_seconds
        seen: dict[str, str | None] = {"event": None, "delivery_id": None}
        self.metrics.in_flight.inc()
        try:
            answer = await self._process(request, provider, seen, deadline)
        except Exception:
            # Not foreseen: log everything we know, tell the sender nothing internal.
            log.exception(
                "delivery failed unexpectedly",
                extra={"fields": {"provider": provider, **seen}},
            )
            answer = Answer(500, "error", reason="internal error")
        finally:
            self.metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        self.metrics.observe(provider, seen["event"], answer.outcome, elapsed)
        level = logging.WARNING if answer.http_status >= 500 else logging.INFO
        log.log(
            level,
            "delivery",
            extra={
                "fields": delivery_fields(
                    provider,
                    seen["event"],
                    seen["delivery_id"],
                    answer.outcome,
                    answer.http_status,
                    answer.run,
                    elapsed,
                    answer.reason,
                    answer.detail,
                )
            },
        )
        return web.json_response(answer.body(), status=answer.http_status, headers=answer.headers)

    async def _read_body(self, request: web.Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = await request.content.read(_READ_CHUNK)
            except (ConnectionError, HttpProcessingError):
                # The sender went away mid-body, or framed it wrong (a bad chunk):
                # its mistake, not ours; a 400 if it still listens, and no error logged.
                raise Rejection(400, "the body ended before it was complete") from None
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            check_read_size(size, self.max_body_bytes)
            chunks.append(chunk)

    async def _verified(self, request: web.Request, provider: str, seen: dict[str, str | None]) -> tuple[Envelope, Command]:
        """Checks in the contract's order; raises Rejection."""
        check_declared_size(request.content_length, self.max_body_bytes)
        check_content_type(request.headers.get("Content-Type"))
        body = await self._read_body(request)
        # Authenticate the raw bytes before parsing anything: up to 5 MiB of
        # JSON from a stranger costs one HMAC, never a parse or a mapping.
        if provider == "linear":
            verify_linear_signature(body, request.headers, self.settings.linear_secrets)
            envelope = parse_linear(body, request.headers)
        else:
            verify_github_signature(body, request.headers, self.settings.github_secrets)
            envelope = parse_github(body, request.headers)
        seen["event"], seen["delivery_id"] = envelope.event, envelope.delivery_id
        if provider == "linear":
            verify_linear_timestamp(envelope, self.clock(), self.settings.tolerance_seconds)
        try:
            if provider == "linear":
                command = map_linear(envelope.event, envelope.payload, self.settings.trigger)
            else:
                command = map_github(envelope.event, envelope.payload)
        except BadPayload as exc:
            raise Rejection(400, str(exc)) from None
        return envelope, command

    async def _process(
        self, request: web.Request, provider: str, seen: dict[str, str | None], deadline: float
    ) -> Answer:
        try:
            envelope, command = await self._verified(request, provider, seen)
        except Rejection as rejection:
            return Answer(rejection.status, _REJECTION_OUTCOME.get(rejection.status, "rejected"), reason=rejection.reason)
        if isinstance(command, Ping):
            return Answer(ACCEPTED, "pong")
        if isinstance(command, Ignore):
            # Nothing to apply, so nothing to record or deduplicate.
            return Answer(ACCEPTED, "ignored", reason=command.reason)
        left = deadline - time.monotonic()
        try:
            # The sender stops listening at its own limit (Linear: 5 s); an answer
            # after that is lost however right it is. Work still under way goes on
            # in the background (each call has its own timeout), and every step is
            # idempotent, so the sender's retry finds whatever it finished.
            return await asyncio.wait_for(self._apply(command, envelope, provider), max(left, 0.001))
        except asyncio.TimeoutError:
            return Answer(
                503,
                "unavailable",
                reason="a dependency did not answer in time, retry later",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                detail=f"delivery deadline of {self.deadline_seconds} s",
            )

    async def _apply(self, command: Command, envelope: Envelope, provider: str) -> Answer:
        """Replay check, command, record: everything that needs the database or the API server."""
        try:
            # The replay pre-check matters where re-applying later could mean
            # something new (an old "/foundry approve" reaching a newer attempt).
            # An intake replay is harmless (the claim attaches or finds the ticket
            # unchanged) and is answered "duplicate" by the record below, so the
            # common path skips this round trip.
            if not isinstance(command, Intake) and await self.blocking(
                self.backend.delivery_recorded, provider, envelope.delivery_id
            ):
                return Answer(ACCEPTED, "duplicate")
            outcome = await self._execute(command, envelope)
            # Recorded only now that the command succeeded: a crash before this
            # line leaves the delivery unrecorded and the sender's retry re-applies it.
            fresh = await self._record(provider, envelope.delivery_id, outcome.status)
        except Unavailable as exc:
            return Answer(
                503,
                "unavailable",
                reason=f"{exc.what} unavailable, retry later",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                detail=exc.detail,
            )
        except Refused as exc:
            return Answer(exc.status, "refused", reason=exc.reason)
        if not fresh:
            # Another copy of this delivery (same id) finished first; ours had the same effect.
            return Answer(ACCEPTED, "duplicate", run=outcome.run)
        return Answer(ACCEPTED, outcome.status, run=outcome.run, reason=outcome.reason)

    async def _record(self, provider: str, delivery_id: str, outcome: str) -> bool:
        if self.lean is not None:
            return await self.lean.record_delivery(provider, delivery_id, outcome)
        return await self.blocking(self.backend.record_delivery, provider, delivery_id, outcome)

    def _intake(self, command: Intake, trigger: Trigger) -> Awaitable[Outcome]:
        if self.lean is not None:
            return commands.intake_async(self.lean, command, trigger)
        return self.blocking(commands.intake, self.backend, command, trigger)

    async def _execute(self, command: Command, envelope: Envelope) -> Outcome:
        if isinstance(command, Intake):
            trigger = Trigger("webhook", envelope.delivery_id, received_at=_utc(self.clock()))
            outcome, leader = await self.intakes.run(command.coalesce_key, lambda: self._intake(command, trigger))
            if not leader and outcome.status == "created":
                outcome = replace(outcome, status="attached")  # the leader created it; we joined
            return outcome
        if isinstance(command, Decision):
            return await self.blocking(commands.decide, self.backend, command)
        if isinstance(command, PrHint):
            value = f"{envelope.event}/{envelope.delivery_id}"
            return await self.blocking(commands.pr_hint, self.backend, command, value)
        raise AssertionError(f"unhandled command {command!r}")  # mapping returns only the types above


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)
