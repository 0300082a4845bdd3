"""The model stand-in: the three wire formats the agent CLIs speak, its request log, its faults.

The CLIs themselves run against it in tests/test_runner_agents.py; here a plain HTTP
client checks the bytes, so a format regression shows up as a named event or field.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from foundry.dev.model_server import Final, ModelServer, Patch, ToolCall, Usage
from foundry.dev.model_wire import EXHAUSTED

SCRIPT = [
    ToolCall("Write", {"file_path": "/repo/a.txt", "content": "a long enough content to be split over deltas\n"}),
    Patch("*** Begin Patch\n*** Add File: b.txt\n+b\n*** End Patch\n"),
    Final("All done: a.txt and b.txt exist."),
]


def sse_events(text: str) -> list[tuple[str | None, object]]:
    events = []
    for block in text.strip().split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                raw = line[len("data: "):]
                data = raw if raw == "[DONE]" else json.loads(raw)
        events.append((name, data))
    return events


@pytest.fixture
def model():
    with ModelServer(SCRIPT, usage=Usage(input_tokens=1234, output_tokens=56)) as server:
        yield server


def anthropic(model, messages, stream=True):
    return httpx.post(f"{model.url}/v1/messages?beta=true", json={"model": "claude-x", "stream": stream,
                      "max_tokens": 100, "messages": messages},
                      headers={"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}, timeout=10)


def test_messages_stream_is_the_event_sequence_claude_code_accepts(model):
    resp = anthropic(model, [{"role": "user", "content": "do it"}])
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    names = [n for n, _ in events]
    deltas = [d for n, d in events if n == "content_block_delta"]
    assert names == ["message_start", "ping", "content_block_start", *["content_block_delta"] * len(deltas),
                     "content_block_stop", "message_delta", "message_stop"]
    assert all(d["type"] == n for n, d in events)  # each event's name matches its data's type
    start = dict(events)["message_start"]["message"]
    assert start["role"] == "assistant" and start["usage"]["input_tokens"] == 1234
    block = dict(events)["content_block_start"]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "Write" and block["input"] == {}
    assert len(deltas) > 1, "the tool input JSON should arrive split over several deltas"
    joined = "".join(d["delta"]["partial_json"] for d in deltas)
    assert json.loads(joined) == SCRIPT[0].input
    delta = dict(events)["message_delta"]
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] == 56


def test_messages_step_follows_the_assistant_turns_in_the_history(model):
    history = [{"role": "user", "content": "do it"},
               {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Write", "input": {}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
               {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "apply_patch",
                                                  "input": {}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2",
                                             "content": [{"type": "text", "text": "patched"}], "is_error": True}]}]
    events = sse_events(anthropic(model, history).text)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == SCRIPT[2].text
    assert dict(events)["message_delta"]["delta"]["stop_reason"] == "end_turn"
    # The same history asked again gets the same answer: the step is worked out from the request.
    again = sse_events(anthropic(model, history).text)
    assert "".join(d["delta"]["text"] for n, d in again if n == "content_block_delta") == SCRIPT[2].text
    assert model.served_steps() == [2, 2]
    results = model.tool_results()
    assert [(r.call_id, r.text, r.is_error) for r in results] == [("toolu_1", "ok", False),
                                                                   ("toolu_2", "patched", True)]


def test_messages_not_streamed_and_past_the_script(model):
    body = anthropic(model, [{"role": "user", "content": "x"}], stream=False).json()
    assert body["content"][0] == {"type": "tool_use", "id": body["content"][0]["id"], "name": "Write",
                                  "input": SCRIPT[0].input}
    assert body["stop_reason"] == "tool_use" and body["usage"] == {"input_tokens": 1234, "output_tokens": 56}
    history = [{"role": "user", "content": "x"}] + [{"role": "assistant", "content": "t"}, {"role": "user",
                                                                                            "content": "u"}] * 3
    past = anthropic(model, history, stream=False).json()
    assert past["content"] == [{"type": "text", "text": EXHAUSTED.text}]
    assert model.requests[-1].step is None


def responses(model, items, stream=True):
    return httpx.post(f"{model.url}/v1/responses", json={"model": "gpt-5.5", "stream": stream, "input": items,
                      "instructions": "be codex"}, headers={"authorization": "Bearer sk-oai"}, timeout=10)


def test_responses_stream_items_and_usage(model):
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "PROMPT-MARK please"}]}
    first = sse_events(responses(model, [user]).text)
    done = [d["item"] for n, d in first if n == "response.output_item.done"]
    assert len(done) == 1 and done[0]["type"] == "function_call" and done[0]["name"] == "Write"
    assert json.loads(done[0]["arguments"]) == SCRIPT[0].input  # a JSON string, as the API sends it
    completed = [d for n, d in first if n == "response.completed"]
    assert [n for n, _ in first][-1] == "response.completed"
    assert completed[0]["response"]["id"] and completed[0]["response"]["usage"]["input_tokens"] == 1234
    assert completed[0]["response"]["usage"]["output_tokens"] == 56

    call = done[0]
    second = sse_events(responses(model, [user, call, {"type": "function_call_output", "call_id": call["call_id"],
                                                       "output": "written"}]).text)
    item = [d["item"] for n, d in second if n == "response.output_item.done"][0]
    assert item["type"] == "custom_tool_call" and item["name"] == "apply_patch" and item["input"] == SCRIPT[1].text

    third = responses(model, [user, call, {"type": "function_call_output", "call_id": call["call_id"],
                                           "output": "written"},
                              item, {"type": "custom_tool_call_output", "call_id": item["call_id"],
                                     "output": "Success"}], stream=False).json()
    assert third["output"][0]["type"] == "message"
    assert third["output"][0]["content"][0] == {"type": "output_text", "text": SCRIPT[2].text, "annotations": []}
    assert model.served_steps() == [0, 1, 2]
    assert "PROMPT-MARK" in model.prompt_text() and model.system_text() == "be codex"
    assert [(r.call_id, r.text) for r in model.tool_results()] == [(call["call_id"], "written"),
                                                                   (item["call_id"], "Success")]
    assert model.model_requests("responses")[0].headers["authorization"] == "Bearer sk-oai"


def test_chat_completions_count_requests_not_assistant_messages(model):
    # Aider's prompt carries few-shot assistant messages: they must not move the script on.
    few_shot = [{"role": "system", "content": "rules"}, {"role": "user", "content": "example"},
                {"role": "assistant", "content": "example answer"}, {"role": "user", "content": "CHAT-MARK"}]
    streamed = httpx.post(f"{model.url}/v1/chat/completions", json={"model": "gpt-4o", "stream": True,
                          "messages": few_shot}, timeout=10)
    events = sse_events(streamed.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [d for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if c["choices"]
             and "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0]["function"]["name"] == "Write" and json.loads(calls[0]["function"]["arguments"]) == SCRIPT[0].input
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"] == {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}

    plain = httpx.post(f"{model.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": few_shot},
                       timeout=10).json()
    # A Patch step is plain text for a tool-less client.
    assert plain["choices"][0]["message"]["content"] == SCRIPT[1].text
    assert plain["choices"][0]["finish_reason"] == "stop" and plain["usage"]["prompt_tokens"] == 1234
    assert model.served_steps() == [0, 1]
    assert "CHAT-MARK" in model.prompt_text() and "example answer" not in model.prompt_text()


def test_request_log_keeps_headers_and_bodies_and_rejects_bad_bodies(model):
    assert httpx.head(model.url + "/", timeout=5).status_code == 200
    bad = httpx.post(f"{model.url}/v1/messages", content=b"not json", timeout=5)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    anthropic(model, [{"role": "user", "content": "LOG-MARK"}])
    log = model.requests[:3]
    assert [(r.method, r.path, r.api) for r in log] == [("HEAD", "/", None), ("POST", "/v1/messages", None),
                                                         ("POST", "/v1/messages", "messages")]
    assert log[2].query == "beta=true" and log[2].headers["x-api-key"] == "sk-test"
    assert log[2].body["messages"][0]["content"] == "LOG-MARK"
    assert httpx.post(f"{model.url}/v1/messages/count_tokens", json={}, timeout=5).status_code == 404
    assert model.requests[-1].path == "/v1/messages/count_tokens"  # unserved calls are logged too
    model.set_script([Final("fresh")])
    assert model.requests == []
    assert sse_events(anthropic(model, [{"role": "user", "content": "x"}]).text)[3][1]["delta"]["text"] == "fresh"


def test_down_answers_503_to_everything(model):
    model.set_fault("down")
    assert httpx.head(model.url + "/", timeout=5).status_code == 503
    resp = anthropic(model, [{"role": "user", "content": "x"}])
    assert resp.status_code == 503 and resp.json()["error"]["type"] == "overloaded_error"
    assert responses(model, []).status_code == 503
    assert model.model_requests() == [] and len(model.requests) == 3
    model.set_fault(None)
    assert anthropic(model, [{"role": "user", "content": "x"}]).status_code == 200


def test_hang_holds_model_calls_until_cleared(model):
    model.set_fault("hang")
    assert httpx.head(model.url + "/", timeout=5).status_code == 200  # preflight passes, the model call hangs
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        anthropic_client = httpx.Client(timeout=httpx.Timeout(5, read=1.0))
        anthropic_client.post(f"{model.url}/v1/messages", json={"messages": [], "stream": True})
    assert time.monotonic() - started < 5
    assert [r.path for r in model.requests] == ["/", "/v1/messages"]
    model.set_fault(None)
    assert anthropic(model, [{"role": "user", "content": "x"}]).status_code == 200
    with pytest.raises(ValueError, match="unknown fault"):
        model.set_fault("slow")


def test_binds_the_host_it_is_given():
    # A pod on the real node reaches the stand-in through the node IP, not 127.0.0.1.
    with ModelServer([Final("hi")], host="127.0.0.2") as server:
        assert server.url.startswith("http://127.0.0.2:")
        assert httpx.head(server.url + "/", timeout=5).status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.head(f"http://127.0.0.1:{server.port}/", timeout=5)


def test_a_plan_script_answers_the_requests_that_declare_a_read_only_mode():
    plan_mode = {"type": "text", "text": "<system-reminder>\nPlan mode is active. The user indicated that they do "
                                         "not want you to execute yet\n</system-reminder>"}
    with ModelServer(SCRIPT, plan_script=[Final("PLAN-ANSWER")]) as server:
        planning = sse_events(anthropic(server, [{"role": "user", "content": [plan_mode,
                                                                              {"type": "text", "text": "plan"}]}]).text)
        applying = sse_events(anthropic(server, [{"role": "user", "content": "do it"}]).text)
    said = ["".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
            for events in (planning, applying)]
    assert said[0] == "PLAN-ANSWER"
    assert said[1] != "PLAN-ANSWER"  # the apply script's first step (a tool call), not the plan's
    assert [n for n, d in applying if n == "content_block_start"
            and d["content_block"]["type"] == "tool_use"]
