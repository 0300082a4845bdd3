"""Bad input against a real bridge process: a table of known-bad deliveries and a hypothesis fuzz.

Whatever arrives, the answer is never a 5xx and nothing is created: no
FoundryRun in the namespace, no row in foundry_runs, no delivery recorded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from sqlalchemy import func, select

from tests.support.bridge_kit import (
    BridgeProcess,
    encode,
    github_headers,
    github_pull_request,
    linear_headers,
    linear_issue,
    now_ms,
)
from foundry.db.engine import create_schema, make_engine
from foundry.db.models import Run, WebhookDelivery

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

SECRET = "bad-input-linear"
GH_SECRET = "bad-input-github"


@pytest.fixture(scope="module")
def world(control_plane, crds, kube_client, postgres_url: str, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """One bridge process for the module (the fuzz sends hundreds of requests), its namespace and database."""
    from foundry.dev.postgres import create_database, drop_database

    namespace = f"t-bad-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    database_url = create_database(postgres_url)
    engine = make_engine(database_url)
    create_schema(engine)
    log = tmp_path_factory.mktemp("bridge") / "bridge.log"
    env = {
        "KUBECONFIG": str(control_plane.kubeconfig),
        "FOUNDRY_NAMESPACE": namespace,
        "FOUNDRY_DATABASE_URL": database_url,
        "FOUNDRY_LINEAR_WEBHOOK_SECRET": SECRET,
        "FOUNDRY_GITHUB_WEBHOOK_SECRET": GH_SECRET,
        "FOUNDRY_BRIDGE_WORKERS": "4",
    }
    bridge = BridgeProcess(env, log_path=log).start()
    http = httpx.Client(base_url=bridge.url, timeout=30)
    try:
        yield {"http": http, "namespace": namespace, "engine": engine, "log": log}
    finally:
        http.close()
        bridge.stop()
        engine.dispose()
        drop_database(postgres_url, database_url)
        core.delete_namespace(namespace)


def _nothing_created(world: dict[str, Any], kube_client) -> None:
    runs = client.CustomObjectsApi(kube_client).list_namespaced_custom_object(
        "foundry.dev", "v1alpha1", world["namespace"], "foundryruns"
    )["items"]
    assert runs == []
    with world["engine"].connect() as connection:
        assert connection.execute(select(func.count()).select_from(Run)).scalar_one() == 0
        # A signed event that correlates with nothing may be recorded, but only as ignored.
        outcomes = set(connection.execute(select(WebhookDelivery.outcome)).scalars())
        assert outcomes <= {"ignored"}, outcomes


def _issue(**overrides: Any) -> dict[str, Any]:
    payload = linear_issue(str(uuid.uuid4()), "ACME-5")
    payload.update(overrides)
    return payload


def _case(name: str) -> tuple[str, bytes, dict[str, str]]:
    """(endpoint, body, headers) for one named bad delivery; otherwise well-formed and signed."""
    payload = _issue()
    body = encode(payload)
    headers = linear_headers(body, SECRET, str(uuid.uuid4()))
    path = "/webhooks/linear"
    if name == "wrong signature":
        headers["Linear-Signature"] = linear_headers(body, "not-the-secret", "x")["Linear-Signature"]
    elif name == "no signature":
        del headers["Linear-Signature"]
    elif name in ("stale timestamp", "future timestamp"):
        shift = -120_000 if name.startswith("stale") else 120_000
        body = encode({**payload, "webhookTimestamp": now_ms() + shift})
        headers = linear_headers(body, SECRET, str(uuid.uuid4()))
    elif name == "no delivery id":
        del headers["Linear-Delivery"]
    elif name == "wrong content type":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif name == "6 MiB body":
        body = encode({**payload, "padding": "x" * (6 * 1024 * 1024)})
        headers = linear_headers(body, SECRET, str(uuid.uuid4()))
    elif name == "truncated JSON":
        body = body[:-7]
        headers = linear_headers(body, SECRET, str(uuid.uuid4()))
    elif name == "JSON of the wrong shape":
        body = encode({**payload, "data": {"id": 42, "identifier": ["ACME-5"]}})
        headers = linear_headers(body, SECRET, str(uuid.uuid4()))
    elif name == "JSON array":
        body = encode([payload])
        headers = linear_headers(body, SECRET, str(uuid.uuid4()))
    elif name.startswith("github"):
        path = "/webhooks/github"
        body = encode(github_pull_request("acme-5-fix", "ACME-5 fix"))
        headers = github_headers(body, GH_SECRET, str(uuid.uuid4()), "pull_request")
        if name == "github wrong signature":
            headers["X-Hub-Signature-256"] = github_headers(body, "nope", "x", "pull_request")["X-Hub-Signature-256"]
        elif name == "github sha1 signature":
            headers["X-Hub-Signature-256"] = headers["X-Hub-Signature-256"].replace("sha256=", "sha1=")
        elif name == "github no event":
            del headers["X-GitHub-Event"]
        elif name == "github no delivery":
            del headers["X-GitHub-Delivery"]
    return path, body, headers


BAD = [
    ("wrong signature", 401),
    ("no signature", 401),
    ("stale timestamp", 401),
    ("future timestamp", 401),
    ("no delivery id", 400),
    ("wrong content type", 415),
    ("6 MiB body", 413),
    ("truncated JSON", 400),
    ("JSON of the wrong shape", 400),
    ("JSON array", 400),
    ("github wrong signature", 401),
    ("github sha1 signature", 401),
    ("github no event", 400),
    ("github no delivery", 400),
]


def test_bad_deliveries_get_clear_4xx_and_create_nothing(world: dict[str, Any], kube_client) -> None:
    for name, expected in BAD:
        path, body, headers = _case(name)
        response = world["http"].post(path, content=body, headers=headers)
        assert response.status_code == expected, (name, response.text)
        assert response.json()["error"], name
    _nothing_created(world, kube_client)
    # The process is still healthy after all of it.
    assert world["http"].get("/healthz").status_code == 200


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
# Field names Foundry reads, so the fuzz reaches the mapping's validation. No
# "labels": without the trigger label a fuzzed issue can never start a run.
_fields = st.sampled_from(
    ["id", "identifier", "title", "updatedAt", "state", "team", "body", "issueId", "user", "userId", "priority",
     "description", "url", "pull_request", "head", "ref", "check_suite", "check_run", "pull_requests",
     "head_branch", "number", "title"]
)
_shaped = st.recursive(_json, lambda children: st.dictionaries(_fields, children, max_size=6), max_leaves=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(
    endpoint=st.sampled_from(["linear", "github"]),
    body=st.binary(max_size=300) | _json.map(lambda v: json.dumps(v).encode()),
    content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=utf-8"]),
    headers=st.dictionaries(
        st.sampled_from(["Linear-Signature", "Linear-Delivery", "X-GitHub-Event", "X-GitHub-Delivery",
                         "X-Hub-Signature-256"]),
        st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=70),
        max_size=5,
    ),
)
def test_fuzz_unsigned_input_is_never_5xx(world: dict[str, Any], endpoint, body, content_type, headers) -> None:
    response = world["http"].post(f"/webhooks/{endpoint}", content=body, headers={**headers, "Content-Type": content_type})
    assert response.status_code < 500, response.text
    # The signature is checked before the body is parsed: whatever the body, not JSON is 415, else 401.
    assert response.status_code == (401 if content_type.startswith("application/json") else 415), response.text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["Issue", "Comment", "pull_request", "check_suite", "check_run", "pull_request_review"]),
    action=st.sampled_from(["create", "update", "opened", "synchronize", "completed", "submitted"]),
    data=st.dictionaries(_fields, _shaped, max_size=8),
    actor=_shaped,
)
def test_fuzz_signed_but_malformed_events_are_never_5xx_and_create_nothing(
    world: dict[str, Any], kube_client, kind: str, action: str, data: dict[str, Any], actor: Any
) -> None:
    # Signed with the right secret and a fresh timestamp, so every request
    # reaches the mapping and, where it maps to a command, the backends.
    if kind in ("Issue", "Comment"):
        body = encode({"type": kind, "action": action, "data": data, "actor": actor, "webhookTimestamp": now_ms()})
        response = world["http"].post(
            "/webhooks/linear", content=body, headers=linear_headers(body, SECRET, str(uuid.uuid4()))
        )
    else:
        body = encode({"action": action, kind: data, "pull_request": data, "sender": actor})
        response = world["http"].post(
            "/webhooks/github", content=body, headers=github_headers(body, GH_SECRET, str(uuid.uuid4()), kind)
        )
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        assert response.json()["status"] == "ignored" and response.json()["run"] is None


def test_after_the_fuzz_nothing_was_created(world: dict[str, Any], kube_client) -> None:
    # Runs after the fuzz tests in this module (file order): all of it left no trace.
    _nothing_created(world, kube_client)
    log_lines = [json.loads(line) for line in Path(world["log"]).read_text().splitlines() if line.startswith("{")]
    assert log_lines and not [line for line in log_lines if line.get("http_status", 0) >= 500]
