"""The scripted conversation a model stand-in replays, and the three wire formats it speaks.

Pure functions only (no I/O): a script is a list of steps; `*_events` render one step
as the server-sent events of one API; the `history_*` functions read what a CLI sent
back (how many assistant turns, the prompt text, the tool results).

    script = [ToolCall("Write", {"file_path": "/repo/a.txt", "content": "hi\\n"}),
              Final("Created a.txt.")]
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Union


@dataclass(frozen=True)
class ToolCall:
    """The model calls a JSON-argument tool (Claude's Write/Bash, Codex's exec_command)."""

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Patch:
    """Codex's freeform `apply_patch` tool, given the patch text ("*** Begin Patch ...")."""

    text: str
    name: str = "apply_patch"


@dataclass(frozen=True)
class Final:
    """A text answer that ends the turn (for Aider: where its SEARCH/REPLACE blocks go)."""

    text: str


Step = Union[ToolCall, Patch, Final]
EXHAUSTED = Final("The scripted conversation is over; there is nothing more to do.")


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 1000
    output_tokens: int = 50


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    text: str
    is_error: bool = False


def sse(event: str | None, data: Any) -> bytes:
    head = f"event: {event}\n" if event else ""
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {body}\n\n".encode()


def _chunks(text: str, size: int) -> list[str]:
    # Splitting JSON and text over several deltas is what real streams do, and what a
    # client that parses only whole events would get wrong.
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


# --- Anthropic Messages -------------------------------------------------------------


def anthropic_events(step: Step, *, n: int, model: str, usage: Usage) -> Iterator[bytes]:
    """One streamed Messages response: message_start, one content block, message_delta, message_stop."""
    yield sse("message_start", {"type": "message_start", "message": {
        "id": f"msg_{n:04d}", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": 1,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}})
    yield sse("ping", {"type": "ping"})
    if isinstance(step, Final):
        yield sse("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})
        for part in _chunks(step.text, 40):
            yield sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": part}})
        stop = "end_turn"
    else:
        tool_input = step.input if isinstance(step, ToolCall) else {"patch": step.text}
        yield sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": f"toolu_{n:04d}", "name": step.name, "input": {}}})
        for part in _chunks(json.dumps(tool_input), 24):
            yield sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "input_json_delta", "partial_json": part}})
        stop = "tool_use"
    yield sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                "usage": {"output_tokens": usage.output_tokens}})
    yield sse("message_stop", {"type": "message_stop"})


def anthropic_message(step: Step, *, n: int, model: str, usage: Usage) -> dict[str, Any]:
    """The same answer, not streamed."""
    if isinstance(step, Final):
        content: list[dict[str, Any]] = [{"type": "text", "text": step.text}]
        stop = "end_turn"
    else:
        tool_input = dict(step.input) if isinstance(step, ToolCall) else {"patch": step.text}
        content = [{"type": "tool_use", "id": f"toolu_{n:04d}", "name": step.name, "input": tool_input}]
        stop = "tool_use"
    return {"id": f"msg_{n:04d}", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}}


def anthropic_turns(body: Mapping[str, Any]) -> int:
    return sum(1 for m in body.get("messages") or () if isinstance(m, dict) and m.get("role") == "assistant")


def _block_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for block in content or ():
        if isinstance(block, dict):
            if block.get("type") in ("text", "input_text", "output_text") and isinstance(block.get("text"), str):
                out.append(block["text"])
        elif isinstance(block, str):
            out.append(block)
    return out


def anthropic_tool_results(body: Mapping[str, Any]) -> Iterator[ToolResult]:
    for message in body.get("messages") or ():
        if not isinstance(message, dict) or message.get("role") != "user" or isinstance(message.get("content"), str):
            continue
        for block in message.get("content") or ():
            if isinstance(block, dict) and block.get("type") == "tool_result":
                yield ToolResult(str(block.get("tool_use_id")), "\n".join(_block_texts(block.get("content"))),
                                 bool(block.get("is_error")))


# --- OpenAI Responses (Codex) ---------------------------------------------------------

_MODEL_ITEMS = frozenset({"function_call", "custom_tool_call", "local_shell_call"})


def responses_item(step: Step, *, n: int) -> dict[str, Any]:
    if isinstance(step, Final):
        return {"type": "message", "id": f"msg_{n:04d}", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": step.text, "annotations": []}]}
    if isinstance(step, Patch):
        return {"type": "custom_tool_call", "id": f"ctc_{n:04d}", "call_id": f"call_{n:04d}",
                "name": step.name, "input": step.text, "status": "completed"}
    return {"type": "function_call", "id": f"fc_{n:04d}", "call_id": f"call_{n:04d}", "name": step.name,
            "arguments": json.dumps(dict(step.input)), "status": "completed"}


def responses_events(step: Step, *, n: int, model: str, usage: Usage) -> Iterator[bytes]:
    """A streamed Responses answer: created, the one output item, completed (with usage)."""
    rid = f"resp_{n:04d}"
    created = int(time.time())
    yield sse("response.created", {"type": "response.created", "response": {
        "id": rid, "object": "response", "created_at": created, "status": "in_progress", "model": model,
        "output": []}})
    item = responses_item(step, n=n)
    yield sse("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                             "item": {**item, "status": "in_progress"}})
    if isinstance(step, Final):
        for part in _chunks(step.text, 40):
            yield sse("response.output_text.delta", {"type": "response.output_text.delta", "item_id": item["id"],
                                                     "output_index": 0, "content_index": 0, "delta": part})
    yield sse("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item})
    yield sse("response.completed", {"type": "response.completed", "response": {
        "id": rid, "object": "response", "created_at": created, "status": "completed", "model": model,
        "output": [item],
        "usage": {"input_tokens": usage.input_tokens, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": usage.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": usage.input_tokens + usage.output_tokens}}})


def responses_turns(body: Mapping[str, Any]) -> int:
    """Model turns already in a Responses request's input: each scripted step is one output item."""
    items = body.get("input")
    if not isinstance(items, list):
        return 0
    return sum(1 for it in items if isinstance(it, dict) and (
        it.get("type") in _MODEL_ITEMS or (it.get("type", "message") == "message" and it.get("role") == "assistant")))


def responses_tool_results(body: Mapping[str, Any]) -> Iterator[ToolResult]:
    items = body.get("input")
    for it in items if isinstance(items, list) else ():
        if isinstance(it, dict) and it.get("type") in ("function_call_output", "custom_tool_call_output"):
            out = it.get("output")
            if isinstance(out, dict):  # some versions send {"content": ..., "success": ...}
                text, ok = str(out.get("content", "")), out.get("success", True) is not False
            elif isinstance(out, list):
                text, ok = "\n".join(_block_texts(out)), True
            else:
                text, ok = str(out), True
            yield ToolResult(str(it.get("call_id")), text, not ok)


# --- OpenAI Chat Completions (Aider) ----------------------------------------------------


def _chat_tool_calls(step: ToolCall, n: int) -> list[dict[str, Any]]:
    return [{"id": f"call_{n:04d}", "type": "function",
             "function": {"name": step.name, "arguments": json.dumps(dict(step.input))}}]


def _chat_usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens}


def chat_completion(step: Step, *, n: int, model: str, usage: Usage) -> dict[str, Any]:
    if isinstance(step, Patch):
        step = Final(step.text)
    message: dict[str, Any] = {"role": "assistant", "content": step.text if isinstance(step, Final) else None}
    if isinstance(step, ToolCall):
        message["tool_calls"] = _chat_tool_calls(step, n)
    return {"id": f"chatcmpl-{n:04d}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if isinstance(step, ToolCall) else "stop"}],
            "usage": _chat_usage(usage)}


def chat_events(step: Step, *, n: int, model: str, usage: Usage) -> Iterator[bytes]:
    if isinstance(step, Patch):
        step = Final(step.text)
    head = {"id": f"chatcmpl-{n:04d}", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(None, {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    if isinstance(step, ToolCall):
        yield chunk({"tool_calls": [{"index": 0, **_chat_tool_calls(step, n)[0]}]})
        finish = "tool_calls"
    else:
        for part in _chunks(step.text, 40):
            yield chunk({"content": part})
        finish = "stop"
    yield chunk({}, finish)
    yield sse(None, {**head, "choices": [], "usage": _chat_usage(usage)})
    yield sse(None, "[DONE]")


def chat_tool_results(body: Mapping[str, Any]) -> Iterator[ToolResult]:
    for message in body.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "tool":
            yield ToolResult(str(message.get("tool_call_id")), "\n".join(_block_texts(message.get("content"))))


# --- whatever the API: the text a CLI sent ---------------------------------------------


def user_texts(body: Mapping[str, Any]) -> list[str]:
    """Every user-authored text in a request (Messages, Chat or Responses), in order."""
    texts: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, dict) and m.get("role") == "user":
                texts += _block_texts(m.get("content"))
    items = body.get("input")
    if isinstance(items, str):
        texts.append(items)
    elif isinstance(items, list):
        for it in items:
            if isinstance(it, dict) and it.get("type", "message") == "message" and it.get("role") == "user":
                texts += _block_texts(it.get("content"))
    return texts


def system_texts(body: Mapping[str, Any]) -> list[str]:
    """System/developer instructions: Messages' `system`, Responses' `instructions`, Chat's system role."""
    texts: list[str] = []
    if "system" in body:
        texts += _block_texts(body["system"])
    if isinstance(body.get("instructions"), str):
        texts.append(body["instructions"])
    for m in body.get("messages") or ():
        if isinstance(m, dict) and m.get("role") in ("system", "developer"):
            texts += _block_texts(m.get("content"))
    items = body.get("input")
    for it in items if isinstance(items, list) else ():
        if isinstance(it, dict) and it.get("role") in ("system", "developer"):
            texts += _block_texts(it.get("content"))
    return texts


# How each CLI tells the model it may not change anything (what its read-only mode puts on the wire):
# Claude Code's plan permission mode adds a system reminder to the user turn; Codex states its sandbox
# policy in its developer instructions.
_CLAUDE_PLAN_MODE = "Plan mode is active."
_CODEX_SANDBOX = re.compile(r"`sandbox_mode` is `([a-z-]+)`")


def declared_mode(body: Mapping[str, Any]) -> str | None:
    """The permission mode a request declares: "plan" (Claude Code's plan mode), Codex's sandbox mode
    ("read-only", "workspace-write", "danger-full-access"), or None when it declares neither."""
    texts = system_texts(body) + user_texts(body)
    if any(_CLAUDE_PLAN_MODE in t for t in texts):
        return "plan"
    for t in texts:
        m = _CODEX_SANDBOX.search(t)
        if m:
            return m.group(1)
    return None


def dedupe_results(results: Iterable[ToolResult]) -> list[ToolResult]:
    """Each request repeats the whole history: keep each call's result once, first seen first."""
    seen: dict[str, ToolResult] = {}
    for r in results:
        seen.setdefault(r.call_id, r)
    return list(seen.values())
