"""A local model API that replays a scripted conversation, for the real agent CLIs.

It speaks Anthropic Messages (Claude Code), OpenAI Responses (Codex) and OpenAI Chat
Completions (Aider), streamed or not, and logs every request so a test can assert on
what the CLI was told and on the tool results it sent back (a CLI can exit 0 even when
a scripted tool call failed).

    with ModelServer([ToolCall("Write", {"file_path": f"{repo}/a.txt", "content": "hi\\n"}),
                      Final("Wrote a.txt.")]) as model:
        env = {"ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": "x"}
        ...
        assert "the plan" in model.prompt_text()
        assert model.tool_results()[0].is_error is False

Which step answers a request is worked out from the request itself, so a CLI that
retries or restarts gets the same answer: the number of assistant turns already in
its history (Messages, Responses). Aider's Chat Completions prompt carries few-shot
assistant messages, so there the step is the number of chat requests served so far.

Fault modes: `set_fault("down")` answers 503 to everything; `set_fault("hang")` never
answers a model request (HEAD/GET still answer, so a CLI gets past its preflight and
hangs in the model call, as it would on a stuck upstream).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from aiohttp import web

from foundry.dev import model_wire as W
from foundry.dev.model_wire import EXHAUSTED, Final, Patch, Step, ToolCall, ToolResult, Usage
from foundry.dev.server_thread import ServerThread

__all__ = ["ModelServer", "LoggedRequest", "Step", "ToolCall", "Patch", "Final", "Usage", "ToolResult"]

FAULTS = frozenset({"down", "hang"})
BODY: Any = web.RequestKey("json", object) if hasattr(web, "RequestKey") else "json"
MESSAGES, RESPONSES, CHAT = "messages", "responses", "chat"
READ_ONLY_MODES = frozenset({"plan", "read-only"})  # what a plan's CLI declares (model_wire.declared_mode)


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body, or None
    api: str | None  # messages | responses | chat | None (preflight, models list)
    step: int | None  # the script index answered, None when past the end or not a model call
    at: float = field(default_factory=time.monotonic)


class ModelServer(ServerThread):
    """`plan_script`, when given, answers the requests that declare a read-only mode (Claude Code's plan
    mode, Codex's read-only sandbox: a plan Job), `script` all others; so one stand-in serves a run's
    plan and its apply attempts, as one model API would."""

    def __init__(self, script: Sequence[Step] = (), *, host: str = "127.0.0.1",
                 usage: Usage = Usage(), model: str | None = None, plan_script: Sequence[Step] | None = None) -> None:
        super().__init__()
        self.host = host
        self.usage = usage
        self.model = model  # echoed in answers; None echoes the request's model
        self._lock = threading.Lock()
        self._script: list[Step] = list(script)
        self._plan_script: list[Step] | None = list(plan_script) if plan_script is not None else None
        self._requests: list[LoggedRequest] = []
        self._chat_served = 0
        self._counter = itertools.count(1)
        self._fault: str | None = None
        self._release: asyncio.Event | None = None

    # --- what a test drives --------------------------------------------------------

    def set_script(self, script: Sequence[Step]) -> None:
        """Replace the script and forget the requests served (one server, many runs)."""
        with self._lock:
            self._script = list(script)
            self._requests.clear()
            self._chat_served = 0

    def set_fault(self, kind: str | None) -> None:
        if kind is not None and kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {sorted(FAULTS)} or None")
        with self._lock:
            self._fault = kind
        if kind != "hang" and self.loop is not None:
            # Let requests held by an earlier "hang" go (they then answer 503).
            self.loop.call_soon_threadsafe(self._release_held)

    def _release_held(self) -> None:
        if self._release is not None:
            self._release.set()
        self._release = asyncio.Event()

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._requests)

    def model_requests(self, api: str | None = None) -> list[LoggedRequest]:
        """The requests that asked the model for a turn (optionally of one API)."""
        return [r for r in self.requests if r.api is not None and (api is None or r.api == api)]

    def prompt_text(self) -> str:
        """All user text of the first model request: where the CLI put the prompt it was given."""
        reqs = self.model_requests()
        return "\n".join(W.user_texts(reqs[0].body)) if reqs else ""

    def system_text(self) -> str:
        reqs = self.model_requests()
        return "\n".join(W.system_texts(reqs[0].body)) if reqs else ""

    def all_text(self) -> str:
        """Every request body as JSON text: for 'did this string ever reach the model'."""
        return "\n".join(json.dumps(r.body) for r in self.model_requests())

    def tool_results(self) -> list[ToolResult]:
        """The results of the scripted tool calls, as the CLI sent them back, in call order."""
        found: list[ToolResult] = []
        for r in self.model_requests():
            reader = {MESSAGES: W.anthropic_tool_results, RESPONSES: W.responses_tool_results,
                      CHAT: W.chat_tool_results}[r.api or CHAT]
            found += reader(r.body)
        return W.dedupe_results(found)

    def declared_modes(self) -> list[str | None]:
        """Per model request, the permission mode the CLI declared to the model (model_wire.declared_mode)."""
        return [W.declared_mode(r.body) for r in self.model_requests()]

    def served_steps(self) -> list[int]:
        return [r.step for r in self.model_requests() if r.step is not None]

    # --- the app ---------------------------------------------------------------------

    def build_app(self) -> web.Application:
        self._release = asyncio.Event()
        app = web.Application(client_max_size=64 << 20, middlewares=[self._log_and_fault])
        app.add_routes([
            web.get("/", self._ok),  # aiohttp answers HEAD through the GET route
            web.post("/v1/messages", self._messages),
            web.post("/v1/responses", self._responses),
            web.post("/v1/chat/completions", self._chat), web.post("/chat/completions", self._chat),
            web.get("/v1/models", self._models),
        ])
        return app

    async def on_stop(self) -> None:
        if self._release is not None:
            self._release.set()

    @web.middleware
    async def _log_and_fault(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request[BODY] = body
        with self._lock:
            fault = self._fault
        if fault == "down":
            self._log(request, body, None, None)
            return web.json_response({"type": "error", "error": {
                "type": "overloaded_error", "message": "model stand-in: API down (fault)"}}, status=503)
        if fault == "hang" and request.method == "POST":
            self._log(request, body, None, None)
            held = self._release
            assert held is not None
            await held.wait()
            return web.json_response({"type": "error", "error": {"type": "api_error", "message": "released"}},
                                     status=503)
        try:
            return await handler(request)
        except web.HTTPException:
            # A path or method the stand-in does not serve: log it, so a test sees the CLI asked.
            self._log(request, body, None, None)
            raise

    def _log(self, request: web.Request, body: Any, api: str | None, step: int | None) -> None:
        entry = LoggedRequest(request.method, request.path, request.query_string,
                              {k.lower(): v for k, v in request.headers.items()}, body, api, step)
        with self._lock:
            self._requests.append(entry)

    def _pick(self, api: str, body: Any) -> tuple[int | None, Step]:
        with self._lock:
            script = self._script
            if self._plan_script is not None and W.declared_mode(body) in READ_ONLY_MODES:
                script = self._plan_script
            if api == MESSAGES:
                index = W.anthropic_turns(body)
            elif api == RESPONSES:
                index = W.responses_turns(body)
            else:
                index = self._chat_served
                self._chat_served += 1
            if index < len(script):
                return index, script[index]
            return None, EXHAUSTED

    def _model_of(self, body: Any) -> str:
        return self.model or (body.get("model") if isinstance(body, dict) else None) or "stand-in"

    async def _ok(self, request: web.Request) -> web.Response:
        self._log(request, request[BODY], None, None)
        return web.Response(text="ok")

    async def _models(self, request: web.Request) -> web.Response:
        self._log(request, None, None, None)
        return web.json_response({"object": "list", "data": []})

    async def _bad(self, request: web.Request, message: str) -> web.Response:
        self._log(request, request[BODY], None, None)
        return web.json_response({"type": "error", "error": {"type": "invalid_request_error", "message": message}},
                                 status=400)

    async def _stream(self, request: web.Request, events: Iterator[bytes]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for chunk in events:
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return await self._bad(request, "body must be a JSON object with a messages list")
        step, answer = self._pick(MESSAGES, body)
        self._log(request, body, MESSAGES, step)
        n, model = next(self._counter), self._model_of(body)
        if body.get("stream"):
            return await self._stream(request, W.anthropic_events(answer, n=n, model=model, usage=self.usage))
        return web.json_response(W.anthropic_message(answer, n=n, model=model, usage=self.usage))

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        if not isinstance(body, dict) or "input" not in body:
            return await self._bad(request, "body must be a JSON object with an input")
        step, answer = self._pick(RESPONSES, body)
        self._log(request, body, RESPONSES, step)
        n, model = next(self._counter), self._model_of(body)
        events = W.responses_events(answer, n=n, model=model, usage=self.usage)
        if body.get("stream"):
            return await self._stream(request, events)
        # Not streamed: the completed response object carries everything.
        last = list(events)[-1].decode().split("data: ", 1)[1]
        return web.json_response(json.loads(last)["response"])

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return await self._bad(request, "body must be a JSON object with a messages list")
        step, answer = self._pick(CHAT, body)
        self._log(request, body, CHAT, step)
        n, model = next(self._counter), self._model_of(body)
        if body.get("stream"):
            return await self._stream(request, W.chat_events(answer, n=n, model=model, usage=self.usage))
        return web.json_response(W.chat_completion(answer, n=n, model=model, usage=self.usage))
