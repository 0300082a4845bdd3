"""Every call the operator makes ends in bounded time, and waits what a service asks.

- A Kubernetes call to an API server that accepts and never answers ends
  with RetryLater within the Deps' timeouts (the client has no default).
- A GitHub that stops answering trips the breaker: the next calls fail at
  once (Paused, no request sent) instead of each costing a timeout, and the
  first answer after the cooldown closes it.
- A long Retry-After from GitHub is kept by the event-driven retries (it was
  cut to the local backoff step).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from kubernetes import client

from foundry.connectors.breaker import BreakerTransport
from foundry.connectors.errors import Paused, RateLimited, Timeout
from foundry.connectors.github import GitHubClient
from foundry.connectors.retry import RetryPolicy
from foundry.operator.deps import Deps
from foundry.operator.errors import RetryLater
from foundry.operator.kubeio import get_run
from foundry.operator.outside import outside_call
from foundry.dev.github_server import GitHubServer
from tests.support.silent_server import SilentServer

REPO = "acme/app"


def test_a_kube_call_to_a_silent_api_server_ends_within_its_timeout():
    with SilentServer() as silent:
        cfg = client.Configuration()
        cfg.host = silent.url
        api = client.ApiClient(cfg)
        deps = Deps(api=api, engine=None, linear=None, github=None, config=None, agents=None,
                    kube_timeouts=(1.0, 1.0))
        outcome: list[BaseException | None] = []

        def call() -> None:
            try:
                get_run(deps.api, "default", "run-1")
                outcome.append(None)
            except BaseException as err:  # noqa: BLE001 - handed to the test thread
                outcome.append(err)

        started = time.monotonic()
        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(15)
        took = time.monotonic() - started
        assert not worker.is_alive(), "the Kubernetes call to a silent server never returned"
        api.close()
    [err] = outcome
    assert isinstance(err, RetryLater), repr(err)
    assert "silent" in str(err) or "unreachable" in str(err), err
    # At most three 1 s waits (urllib3's total of two retries), with room for a busy machine;
    # without a timeout the call never returns.
    assert took < 6.0, (took, str(err))
    assert silent.accepted >= 1


def test_a_silent_github_trips_the_breaker_and_its_first_answer_closes_it():
    now = [1000.0]
    breaker = BreakerTransport(cooldown=30.0, clock=lambda: now[0])
    with GitHubServer() as github:
        github.add_repo(REPO)
        gh = GitHubClient(github.token, base_url=github.url, timeout=0.5, transport=breaker,
                          retry=RetryPolicy(max_attempts=4, base_delay=0.05, max_delay=0.1))
        try:
            github.faults.add("*", "hang", seconds=3.0)
            started = time.monotonic()
            with pytest.raises((Timeout, Paused)):
                gh.find_pull_by_branch(REPO, "foundry/run-1")
            # One timeout, then the retry is refused at once instead of waiting three more.
            assert time.monotonic() - started < 1.5
            assert breaker.is_open
            calls = sum(github.faults.calls.values())

            started = time.monotonic()
            with pytest.raises(Paused) as paused:
                gh.find_pull_by_branch(REPO, "foundry/run-1")
            assert time.monotonic() - started < 0.2
            assert sum(github.faults.calls.values()) == calls  # nothing was sent
            assert "did not answer in time" in str(paused.value)

            now[0] += 31.0  # the cooldown is over: one request probes, GitHub answers
            assert gh.find_pull_by_branch(REPO, "foundry/run-1") is None
            assert not breaker.is_open
            assert gh.find_pull_by_branch(REPO, "foundry/run-2") is None
        finally:
            gh.close()


def test_queue_retries_keep_a_long_retry_after_from_github(monkeypatch):
    from foundry.domain.phases import Phase
    from foundry.operator import runview
    from foundry.operator.controller import RunController
    from foundry.operator.leadership import AlwaysLeading
    from foundry.operator.metrics import OperatorMetrics
    from foundry.operator.pool import ReconcilePool
    from foundry.operator.reconcile import loop

    with GitHubServer() as github:
        github.add_repo(REPO)
        gh = GitHubClient(github.token, base_url=github.url, retry=RetryPolicy(max_attempts=2, base_delay=0.05))
        try:
            # GitHub's secondary limit asks for ten minutes: more than the client sleeps in a thread.
            github.faults.add("*", "ratelimit_secondary", seconds=600)
            with pytest.raises(RetryLater) as caught:
                with outside_call("reading the PR"):
                    gh.find_pull_by_branch(REPO, "foundry/run-1")
        finally:
            gh.close()
    assert isinstance(caught.value.__cause__, RateLimited)
    limited = caught.value

    calls: list[str] = []

    def reconcile(deps, namespace, name, body=None):  # the reconcile meets the limit once, then passes
        calls.append(name)
        if len(calls) == 1:
            raise limited
        return Phase.COMPLETE, None

    monkeypatch.setattr(loop, "reconcile", reconcile)

    class _Deps:  # what a worker uses on this path
        pool = ReconcilePool(1)
        leadership = AlwaysLeading()
        metrics = OperatorMetrics()

    now = [1000.0]
    key = ("default", "run-1")
    body = {"metadata": {"name": "run-1", "namespace": "default", "resourceVersion": "5",
                         "finalizers": [runview.FINALIZER]}, "status": {"phase": "PROpen"}}

    async def scenario() -> float:
        controller = RunController(_Deps(), workers=1, clock=lambda: now[0])
        await controller.start()
        try:
            controller.run_event(None, body)  # listed: due now
            while not calls:
                await asyncio.sleep(0.01)
            while controller.queue.is_working(key):
                await asyncio.sleep(0.01)
            held_for = controller.queue.due_at(key) - now[0]
            controller.nudge(*key, "a webhook")  # an event does not cut the wait short
            await asyncio.sleep(0.2)
            assert calls == ["run-1"]
            now[0] += held_for  # the wait is over
            controller.nudge(*key, "the clock")
            while len(calls) < 2:
                await asyncio.sleep(0.01)
            return held_for
        finally:
            await controller.stop()

    try:
        held_for = asyncio.run(scenario())
    finally:
        _Deps.pool.close()
    assert calls == ["run-1", "run-1"]
    assert held_for >= 600, held_for


def test_the_operators_database_calls_end_when_postgres_stops_answering(tmp_path, monkeypatch):
    import yaml
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from foundry.operator.deps import DB_CONNECT_TIMEOUT, build_deps

    (tmp_path / "foundry.yaml").write_text(yaml.safe_dump({"repositories": [{"name": "app", "github": REPO}]}))
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    with SilentServer() as silent:
        monkeypatch.setenv("FOUNDRY_CONFIG", str(tmp_path / "foundry.yaml"))
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        monkeypatch.setenv("FOUNDRY_DATABASE_URL", f"postgresql+psycopg://foundry@127.0.0.1:{silent.port}/foundry")
        deps = build_deps()
        try:
            started = time.monotonic()
            with pytest.raises(OperationalError):
                with deps.engine.connect() as conn:
                    conn.execute(text("select 1"))
            took = time.monotonic() - started
        finally:
            deps.close()
    assert silent.accepted >= 1
    assert took < DB_CONNECT_TIMEOUT + 3, took
