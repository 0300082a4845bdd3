"""Signed webhook delivery with the providers' retry schedule, shared by both stand-ins.

A delivery is one event with one id. It is attempted at once and, while the
target's answer is not accepted (`accepts`: Linear only 200, GitHub any 2xx) or
nothing arrives within `timeout`, again after each delay of the schedule
(Linear: 1 min, 1 h, 6 h), scaled by `retry_scale` for tests (the fast clock).
A retry sends what `resend` builds (Linear: the same delivery id with a fresh,
re-signed `webhookTimestamp`), else the first attempt's bytes. Every attempt is
recorded so tests can assert on status codes and latency.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp

RETRY_DELAYS = (60.0, 3600.0, 6 * 3600.0)

# (event, delivery id, raw body) -> headers, signature included
HeaderFn = Callable[[str, str, bytes], dict[str, str]]
# HTTP status -> whether the sender counts the delivery as done
AcceptFn = Callable[[int], bool]


def any_2xx(status: int) -> bool:
    """GitHub: any 2xx is a successful delivery."""
    return 200 <= status < 300


def only_200(status: int) -> bool:
    """Linear: anything but 200 (a 202 too) is a failed delivery."""
    return status == 200


def with_fresh_timestamp(body: bytes, now_ms: int) -> bytes:
    """A Linear body with `webhookTimestamp` set to the time of this send; every other byte as encoded before."""
    payload = json.loads(body)
    payload["webhookTimestamp"] = now_ms
    return encode(payload)


@dataclass(frozen=True)
class Attempt:
    number: int
    started_at: float
    status: int | None
    latency: float
    error: str | None = None
    accepted: bool = False  # the sender counted this answer as a successful delivery

    @property
    def ok(self) -> bool:
        return self.accepted


@dataclass
class Delivery:
    id: str
    event: str
    body: bytes
    headers: dict[str, str]
    redelivery: bool = False
    duplicate_of: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    finished: bool = False

    @property
    def delivered(self) -> bool:
        return any(a.ok for a in self.attempts)

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookSender:
    """Runs on `loop` (a stand-in's); every public method is safe from any thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        headers_for: HeaderFn,
        *,
        url: str | None = None,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        retry_scale: float = 1.0,
        timeout: float = 5.0,
        accepts: AcceptFn = any_2xx,
        resend: "Callable[[Delivery, int], tuple[bytes, dict[str, str]]] | None" = None,
    ) -> None:
        self.loop = loop
        self.url = url
        self.retry_delays = retry_delays
        self.retry_scale = retry_scale
        self.timeout = timeout
        self.accepts = accepts
        self._resend = resend
        self._headers_for = headers_for
        self._deliveries: list[Delivery] = []
        self._cond = threading.Condition()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    # -- control ------------------------------------------------------------

    def send(self, event: str, payload: dict[str, Any]) -> Delivery:
        body = encode(payload)
        delivery_id = str(uuid.uuid4())
        return self._start(Delivery(delivery_id, event, body, self._headers_for(event, delivery_id, body)))

    def redeliver(self, delivery_id: str) -> Delivery:
        """Resend a past delivery byte for byte: same id, body and signature."""
        first = self._first(delivery_id)
        return self._start(Delivery(first.id, first.event, first.body, dict(first.headers), redelivery=True))

    def duplicate(self, delivery_id: str) -> Delivery:
        """Send the same event again under a new delivery id."""
        first = self._first(delivery_id)
        new_id = str(uuid.uuid4())
        return self._start(Delivery(new_id, first.event, first.body, self._headers_for(first.event, new_id, first.body),
                                    duplicate_of=first.id))

    @property
    def deliveries(self) -> list[Delivery]:
        with self._cond:
            return list(self._deliveries)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every delivery has succeeded or exhausted its retries."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- delivery -------------------------------------------------------------

    def _first(self, delivery_id: str) -> Delivery:
        with self._cond:
            for d in self._deliveries:
                if d.id == delivery_id:
                    return d
        raise KeyError(f"no delivery with id {delivery_id!r}")

    def _start(self, delivery: Delivery) -> Delivery:
        with self._cond:
            self._deliveries.append(delivery)
            if self.url is None:
                delivery.finished = True
                return delivery
            self._in_flight += 1
        url = self.url
        self.loop.call_soon_threadsafe(self._spawn, delivery, url)
        return delivery

    def _spawn(self, delivery: Delivery, url: str) -> None:
        task = self.loop.create_task(self._run(delivery, url))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, delivery: Delivery, url: str) -> None:
        try:
            delays = (0.0,) + tuple(d * self.retry_scale for d in self.retry_delays)
            for number, delay in enumerate(delays, start=1):
                if delay:
                    await asyncio.sleep(delay)
                attempt = await self._attempt(delivery, url, number)
                with self._cond:
                    delivery.attempts.append(attempt)
                if attempt.ok:
                    break
        finally:
            with self._cond:
                delivery.finished = True
                self._in_flight -= 1
                self._cond.notify_all()

    async def _attempt(self, delivery: Delivery, url: str, number: int) -> Attempt:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body, headers = delivery.body, delivery.headers
        if number > 1 and self._resend is not None:
            body, headers = self._resend(delivery, number)
        started, t0 = time.time(), time.monotonic()
        try:
            async with self._session.post(url, data=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                await response.read()
                return Attempt(number, started, response.status, time.monotonic() - t0,
                               accepted=self.accepts(response.status))
        except asyncio.TimeoutError:
            return Attempt(number, started, None, time.monotonic() - t0, f"no answer within {self.timeout} s")
        except aiohttp.ClientError as err:
            return Attempt(number, started, None, time.monotonic() - t0, f"{type(err).__name__}: {err}")


class WebhookControls:
    """What a test can do with a stand-in's deliveries (mixed into the Linear and
    GitHub servers, which keep their sender in `self.webhooks` once started)."""

    webhooks: WebhookSender | None

    def _sender(self) -> WebhookSender:
        if self.webhooks is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self.webhooks

    def redeliver(self, delivery_id: str) -> str:
        """Send a past delivery again with the same id (what "Redeliver" in the UI does)."""
        return self._sender().redeliver(delivery_id).id

    def duplicate(self, delivery_id: str) -> str:
        """Send a past delivery's body again under a new delivery id."""
        return self._sender().duplicate(delivery_id).id

    @property
    def deliveries(self) -> list[Delivery]:
        return self._sender().deliveries

    def wait_webhooks(self, timeout: float = 10.0) -> bool:
        """Wait until no delivery is in flight; False on timeout."""
        return self._sender().wait_idle(timeout)
