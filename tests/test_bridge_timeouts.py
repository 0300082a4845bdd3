"""The bridge answers within the senders' limits when a dependency hangs.

Linear gives a webhook 5 s and GitHub 10 s. A hung dependency here is a real
TCP server that accepts connections and never answers (SilentServer), put where
the API server or PostgreSQL should be; the bridges are real processes and the
other dependency is real. Every answer must be a 503 with Retry-After, in well
under 5 s, on both the lean path and the threaded one. Then the dependency
comes back and the sender's retry (a fresh send of the same delivery id, as
Linear retries) completes the intake the 503 left half done.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from foundry.bridge.deadlines import (
    DELIVERY_DEADLINE_SECONDS,
    KUBE_CONNECT_SECONDS,
    KUBE_REQUEST_SECONDS,
    SENDER_LIMIT_SECONDS,
    SQL_CONNECT_SECONDS,
)
from foundry.bridge.pgpool import PgPool
from tests.support.bridge_kit import (
    BridgeProcess,
    encode,
    github_headers,
    github_pull_request,
    linear_comment,
    linear_headers,
    linear_issue,
)
from foundry.db.engine import create_schema, make_engine
from foundry.db.models import Run
from tests.support.silent_server import SilentServer

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

SECRET = "timeouts-linear"
GH_SECRET = "timeouts-github"
# What "well under 5 s" means here: the answer arrives by the bridge's own
# deadline at the latest (plus scheduling on a busy machine), which leaves the
# sender a second of network.
WELL_UNDER = DELIVERY_DEADLINE_SECONDS + 0.5


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


def _env(kubeconfig: Path, namespace: str, database_url: str, lean: bool) -> dict[str, str]:
    return {
        "KUBECONFIG": str(kubeconfig),
        "FOUNDRY_NAMESPACE": namespace,
        "FOUNDRY_DATABASE_URL": database_url,
        "FOUNDRY_LINEAR_WEBHOOK_SECRET": SECRET,
        "FOUNDRY_GITHUB_WEBHOOK_SECRET": GH_SECRET,
        "FOUNDRY_BRIDGE_WORKERS": "4",
        "FOUNDRY_BRIDGE_LEAN": "true" if lean else "false",
    }


def _hung_kubeconfig(real: Path, silent: SilentServer, scheme: str, where: Path) -> Path:
    """The real kubeconfig (CA, token) with the server moved to the silent one.

    https: the TLS handshake never completes (the connect timeout ends it);
    http: the request is sent and no answer comes (the request timeout ends it).
    """
    config = yaml.safe_load(real.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"{scheme}://127.0.0.1:{silent.port}"
    where.write_text(yaml.safe_dump(config))
    return where


def _post(http: httpx.Client, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any], float, httpx.Headers]:
    started = time.monotonic()
    response = http.post(path, content=body, headers=headers)
    return response.status_code, response.json(), time.monotonic() - started, response.headers


def _linear(payload: dict[str, Any], delivery_id: str) -> tuple[bytes, dict[str, str]]:
    payload = {**payload, "webhookTimestamp": int(time.time() * 1000)}  # each send is stamped afresh
    body = encode(payload)
    return body, linear_headers(body, SECRET, delivery_id)


def _assert_prompt_503(answer: tuple[int, dict[str, Any], float, httpx.Headers], what: str) -> float:
    status, body, seconds, headers = answer
    assert status == 503, (what, status, body)
    assert headers["Retry-After"].isdigit() and "retry later" in body["error"], (what, body)
    assert seconds < WELL_UNDER < SENDER_LIMIT_SECONDS["linear"], (what, seconds)
    return seconds


def _active_rows(database_url: str, issue_id: str) -> list[tuple[str, str]]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(select(Run.name, Run.phase).where(Run.issue_id == issue_id))]
    finally:
        engine.dispose()


@pytest.mark.parametrize("lean, scheme", [(True, "https"), (False, "http"), (True, "http")],
                         ids=["lean-tls-hangs", "threaded-request-hangs", "lean-request-hangs"])
def test_a_hung_api_server_is_a_prompt_503_and_the_retry_completes_the_intake(
    lean: bool, scheme: str, control_plane, crds, kube_client, namespace: str, pg_url: str, silent: SilentServer, tmp_path: Path
) -> None:
    engine = make_engine(pg_url)
    create_schema(engine)
    engine.dispose()
    hung = _hung_kubeconfig(control_plane.kubeconfig, silent, scheme, tmp_path / "hung-kubeconfig")
    issue_id = str(uuid.uuid4())
    intake = linear_issue(issue_id, "ACME-31")
    delivery_id = str(uuid.uuid4())
    timings: dict[str, float] = {}
    with BridgeProcess(_env(hung, namespace, pg_url, lean), log_path=tmp_path / "hung.log") as bridge, \
            httpx.Client(base_url=bridge.url, timeout=30) as http:
        timings["intake"] = _assert_prompt_503(_post(http, "/webhooks/linear", *_linear(intake, delivery_id)), "intake")
        # The claim was made before the API server was asked: the issue now has an
        # active (Pending) row, so a decision finds a run and goes to the API server too.
        [(run, phase)] = _active_rows(pg_url, issue_id)
        assert phase == "Pending"
        comment = linear_comment(issue_id, "/foundry approve")
        timings["decision"] = _assert_prompt_503(
            _post(http, "/webhooks/linear", *_linear(comment, str(uuid.uuid4()))), "decision")
        pr = encode(github_pull_request(f"foundry/{run}", "Fix"))
        timings["pr hint"] = _assert_prompt_503(
            _post(http, "/webhooks/github", pr, github_headers(pr, GH_SECRET, str(uuid.uuid4()), "pull_request")),
            "pr hint")
        started = time.monotonic()
        ready = http.get("/readyz")
        timings["readyz"] = time.monotonic() - started
        assert ready.status_code == 503 and ready.json()["checks"]["kubernetes"] != "ok"
        assert ready.json()["checks"]["database"] == "ok" and timings["readyz"] < WELL_UNDER
    # The intake waited for the call's timeout (no sooner: the server did accept
    # the connection); the upper bound is the deadline, asserted above.
    waited = KUBE_CONNECT_SECONDS if scheme == "https" else KUBE_REQUEST_SECONDS
    assert waited - 0.1 <= timings["intake"], timings
    print(f"answers with a hung API server ({'lean' if lean else 'threaded'}, {scheme}): {timings}")

    # The API server is back. The half-done intake is a Pending claim and no
    # FoundryRun; Linear's retry (same delivery id, fresh timestamp) attaches to
    # the claim and creates the run it names: one row, one run.
    with BridgeProcess(_env(control_plane.kubeconfig, namespace, pg_url, lean), log_path=tmp_path / "ok.log") as bridge, \
            httpx.Client(base_url=bridge.url, timeout=30) as http:
        status, body, _, _ = _post(http, "/webhooks/linear", *_linear(intake, delivery_id))
    assert (status, body["status"], body["run"]) == (200, "created", run)
    assert _active_rows(pg_url, issue_id) == [(run, "Pending")]
    from kubernetes import client

    runs = client.CustomObjectsApi(kube_client).list_namespaced_custom_object(
        "foundry.dev", "v1alpha1", namespace, "foundryruns")["items"]
    assert [r["metadata"]["name"] for r in runs] == [run]


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "threaded"])
def test_a_hung_database_is_a_prompt_503(
    lean: bool, control_plane, crds, kube_client, namespace: str, silent: SilentServer, tmp_path: Path
) -> None:
    database_url = f"postgresql+psycopg://foundry:secret@127.0.0.1:{silent.port}/foundry"
    issue_id = str(uuid.uuid4())
    timings: dict[str, float] = {}
    with BridgeProcess(_env(control_plane.kubeconfig, namespace, database_url, lean),
                       log_path=tmp_path / "bridge.log") as bridge, httpx.Client(base_url=bridge.url, timeout=30) as http:
        timings["intake"] = _assert_prompt_503(
            _post(http, "/webhooks/linear", *_linear(linear_issue(issue_id, "ACME-32"), str(uuid.uuid4()))), "intake")
        timings["decision"] = _assert_prompt_503(
            _post(http, "/webhooks/linear", *_linear(linear_comment(issue_id, "/foundry stop"), str(uuid.uuid4()))),
            "decision")
        pr = encode(github_pull_request("acme-32-fix", "ACME-32 fix"))  # an issue key: found through the database
        timings["pr hint"] = _assert_prompt_503(
            _post(http, "/webhooks/github", pr, github_headers(pr, GH_SECRET, str(uuid.uuid4()), "pull_request")),
            "pr hint")
        # Several at once: the deadline holds for each, not just for the first.
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            storm = list(pool.map(
                lambda i: _post(http, "/webhooks/linear", *_linear(linear_issue(str(uuid.uuid4()), f"ACME-{40 + i}"),
                                                                   str(uuid.uuid4()))),
                range(8)))
        timings["storm of 8, slowest"] = max(_assert_prompt_503(a, "storm") for a in storm)
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"
    assert timings["intake"] >= SQL_CONNECT_SECONDS - 0.1, timings  # it waited for the connect timeout, no less
    print(f"answers with a hung database ({'lean' if lean else 'threaded'}): {timings}")
    from kubernetes import client

    assert client.CustomObjectsApi(kube_client).list_namespaced_custom_object(
        "foundry.dev", "v1alpha1", namespace, "foundryruns")["items"] == []


def test_statements_and_connects_have_timeouts(pg_url: str, silent: SilentServer) -> None:
    """The engine and the lean pool as the bridge builds them: the server enforces statement_timeout,
    the client the connect timeout."""
    engine = make_engine(pg_url, connect_timeout=2, statement_timeout=0.3)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar_one() == "300ms"
            started = time.monotonic()
            with pytest.raises(OperationalError, match="statement timeout"):
                connection.execute(text("SELECT pg_sleep(5)"))
            assert time.monotonic() - started < 2.0
    finally:
        engine.dispose()

    hung = make_engine(f"postgresql+psycopg://u:p@127.0.0.1:{silent.port}/db", connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(OperationalError):
        hung.connect()
    assert 1.5 <= time.monotonic() - started < 4.0
    hung.dispose()

    import asyncio

    from foundry.bridge.lean import libpq_conninfo
    from foundry.db.engine import normalise_url

    async def pool_calls() -> list[float]:
        pool = PgPool(libpq_conninfo(normalise_url(pg_url)), 1, connect_timeout=2, statement_timeout=0.3)
        took = []
        try:
            async def sleep(connection: psycopg.AsyncConnection[Any]) -> None:
                await connection.execute("SELECT pg_sleep(5)")

            started = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                await pool.run(sleep)
            took.append(time.monotonic() - started)

            async def show(connection: psycopg.AsyncConnection[Any]) -> str:
                return (await (await connection.execute("SHOW statement_timeout")).fetchone())[0]

            assert await pool.run(show) == "300ms"
        finally:
            await pool.close()
        silent_pool = PgPool(f"postgresql://u:p@127.0.0.1:{silent.port}/db", 1, connect_timeout=2,
                             statement_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            await silent_pool.run(show)
        took.append(time.monotonic() - started)
        return took

    statement, connect = asyncio.run(pool_calls())
    assert statement < 2.0 and 1.5 <= connect < 4.0, (statement, connect)
