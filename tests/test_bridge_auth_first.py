"""The bridge authenticates the raw bytes before it parses anything.

A stranger without the webhook secret may send up to 5 MiB of JSON; the only
work that may cost the bridge is one HMAC over the bytes. These tests count
every call into the JSON parser and the event mapping while unsigned or
wrongly signed deliveries arrive over real HTTP, and require zero.
"""

from __future__ import annotations

import asyncio
import json
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from foundry.bridge import app as app_module
from foundry.bridge import verify
from foundry.bridge.app import Bridge
from foundry.bridge.mapping import TriggerRule
from foundry.bridge.settings import Settings
from tests.support.bridge_kit import encode, github_headers, github_pull_request, linear_headers, linear_issue

SECRET = "auth-first-linear"
GH_SECRET = "auth-first-github"


class BackendThatMustNotBeUsed:
    """No delivery in these tests may reach the database or the API server."""

    def __getattr__(self, name: str) -> Any:
        def call(*_args: Any) -> Any:
            raise AssertionError(f"backend.{name} called for a delivery that is not authentic")

        return call


def _settings() -> Settings:
    return Settings(
        namespace="ns",
        linear_secrets=(SECRET,),
        github_secrets=(GH_SECRET,),
        tolerance_seconds=60.0,
        trigger=TriggerRule(),
        workers=2,
        database_url=None,
        kubeconfig=None,
    )


@pytest.fixture
def parser_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every JSON parse the verifier does and every mapping the app does, by name."""
    calls: list[str] = []
    real_loads = json.loads

    def loads(*args: Any, **kwargs: Any) -> Any:
        calls.append("json.loads")
        return real_loads(*args, **kwargs)

    # The verifier's own view of the json module; the rest of the process keeps the real one.
    monkeypatch.setattr(verify, "json", types.SimpleNamespace(loads=loads, JSONDecodeError=json.JSONDecodeError))
    for name in ("parse_linear", "parse_github", "map_linear", "map_github"):
        real = getattr(app_module, name)

        def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
            calls.append(_name)
            return _real(*args)

        monkeypatch.setattr(app_module, name, counted)
    yield calls


def _big_issue() -> bytes:
    payload = linear_issue("issue-big", "ACME-7")
    payload["data"]["description"] = "x" * (4 * 1024 * 1024)  # under the 5 MiB limit
    return encode(payload)


def _unauthentic() -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(name, path, body, headers): bodies a parser would choke on or work hard at, none signed right."""
    issue = encode(linear_issue("issue-1", "ACME-1"))
    big = _big_issue()
    nested = b"[" * 100_000 + b"]" * 100_000
    pr = encode(github_pull_request("foundry/lin-x-1", "Fix"))
    cases: list[tuple[str, str, bytes, dict[str, str]]] = []
    for name, body in (("issue", issue), ("4 MiB issue", big), ("deeply nested", nested), ("not JSON", b"\xff\xfe{")):
        wrong = linear_headers(body, "not-the-secret", "d-1")
        cases.append((f"linear {name}, wrong secret", "/webhooks/linear", body, wrong))
        missing = dict(wrong)
        del missing["Linear-Signature"]
        cases.append((f"linear {name}, no signature", "/webhooks/linear", body, missing))
        cases.append((f"linear {name}, garbage signature", "/webhooks/linear", body,
                      {**wrong, "Linear-Signature": "zz" * 40}))
        # The signature of the GitHub secret on the Linear endpoint is still wrong.
        cases.append((f"linear {name}, other provider's secret", "/webhooks/linear", body,
                      linear_headers(body, GH_SECRET, "d-1")))
    for name, body in (("pull request", pr), ("4 MiB", big), ("deeply nested", nested)):
        wrong = github_headers(body, "nope", "g-1", "pull_request")
        cases.append((f"github {name}, wrong secret", "/webhooks/github", body, wrong))
        sha1 = {**github_headers(body, GH_SECRET, "g-1", "pull_request")}
        sha1["X-Hub-Signature-256"] = sha1["X-Hub-Signature-256"].replace("sha256=", "sha1=")
        cases.append((f"github {name}, sha1 prefix", "/webhooks/github", body, sha1))
        missing = dict(wrong)
        del missing["X-Hub-Signature-256"]
        cases.append((f"github {name}, no signature", "/webhooks/github", body, missing))
    return cases


def _run(test: Any) -> None:
    async def main() -> None:
        bridge = Bridge(_settings(), BackendThatMustNotBeUsed())  # type: ignore[arg-type]
        async with TestClient(TestServer(bridge.application())) as client:
            await test(client)

    asyncio.run(main())


def test_unauthentic_deliveries_are_401_without_one_parser_call(parser_calls: list[str]) -> None:
    cases = _unauthentic()
    answers: list[tuple[str, int]] = []

    async def test(client: TestClient) -> None:
        for name, path, body, headers in cases:
            response = await client.post(path, data=body, headers=headers)
            answers.append((name, response.status))

    _run(test)
    assert [a for a in answers if a[1] != 401] == []
    assert parser_calls == []


def test_a_wrongly_signed_big_body_costs_an_hmac_not_a_parse(parser_calls: list[str]) -> None:
    body = _big_issue()
    headers = linear_headers(body, "not-the-secret", "d-big")

    async def test(client: TestClient) -> None:
        for _ in range(5):
            response = await client.post("/webhooks/linear", data=body, headers=headers)
            assert response.status == 401

    _run(test)
    assert parser_calls == []


def test_the_counter_sees_parses_of_authentic_deliveries(parser_calls: list[str]) -> None:
    # The control: the same counting catches the parse and the mapping of a signed
    # delivery (an untriggered issue, so no backend is touched).
    body = encode(linear_issue("issue-1", "ACME-1", labels=("bug",)))
    pr = encode({"zen": "hi", "hook_id": 1})

    async def test(client: TestClient) -> None:
        response = await client.post("/webhooks/linear", data=body, headers=linear_headers(body, SECRET, "d-ok"))
        assert response.status == 200 and (await response.json())["status"] == "ignored"
        response = await client.post("/webhooks/github", data=pr, headers=github_headers(pr, GH_SECRET, "g-ok", "ping"))
        assert response.status == 200

    _run(test)
    assert parser_calls == ["parse_linear", "json.loads", "map_linear", "parse_github", "json.loads", "map_github"]


def test_a_signed_stale_delivery_is_refused_before_it_is_mapped(parser_calls: list[str]) -> None:
    payload = linear_issue("issue-1", "ACME-1", timestamp_ms=int(time.time() * 1000) - 120_000)
    body = encode(payload)

    async def test(client: TestClient) -> None:
        response = await client.post("/webhooks/linear", data=body, headers=linear_headers(body, SECRET, "d-old"))
        assert response.status == 401

    _run(test)
    # The timestamp lives in the (signed) body, so it is parsed, but never mapped.
    assert parser_calls == ["parse_linear", "json.loads"]
