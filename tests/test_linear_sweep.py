"""The Linear sweep against real parts: the Linear stand-in (GraphQL, filters, pagination,
rate limits), the real API server and PostgreSQL, and the bridge's own Backend.

No webhook reaches a bridge here (the stand-in has no webhook URL): everything
a test sees was done by a sweep round feeding the webhooks' commands.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest
from kubernetes import client

from foundry.bridge.backend import RealBackend
from foundry.bridge.mapping import TriggerRule
from foundry.connectors.linear import LinearClient
from foundry.connectors.retry import RetryPolicy
from foundry.db import claims
from foundry.db.engine import create_schema
from foundry.domain.naming import run_name
from foundry.kube.crds import GROUP, VERSION
from foundry.linear_sweep import state
from foundry.linear_sweep.metrics import SweepMetrics
from foundry.linear_sweep.sweeper import SWEEP_NAME, Sweeper, SweepSettings
from foundry.dev.linear_ratelimit import RateLimits
from foundry.dev.linear_server import LinearServer
from prometheus_client import CollectorRegistry

pytestmark = [pytest.mark.kube, pytest.mark.postgres]

TEAM = "ACME"
READY = "The service needs a health endpoint.\n\n## Acceptance criteria\n- GET /healthz answers 200\n"


@contextmanager
def _scene(control_plane, engine, pg_url: str, namespace: str, *,
           rate_limits: RateLimits | None = None) -> Iterator[tuple[LinearServer, RealBackend, str]]:
    create_schema(engine)
    backend = RealBackend.from_settings(pg_url, str(control_plane.kubeconfig), namespace, 4)
    with LinearServer(rate_limits=rate_limits) as linear:
        linear.add_team(TEAM, "Acme")
        alice = linear.add_user("Alice", "alice@example.com")
        try:
            yield linear, backend, alice
        finally:
            backend.close()


def _sweeper(linear: LinearServer, backend: RealBackend, holder: str = "replica-a",
             registry: CollectorRegistry | None = None, name: str = SWEEP_NAME, **settings) -> Sweeper:
    client_ = LinearClient(linear.api_key, url=linear.graphql_url,
                           retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_rate_limit_wait=0.0))
    return Sweeper(client_, backend, backend.engine, TriggerRule(), SweepSettings(**settings),
                   SweepMetrics(registry or CollectorRegistry()), holder=holder, name=name)


def _runs(api, namespace: str) -> list[dict]:
    return client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                      "foundryruns")["items"]


def _approvals(api, namespace: str) -> list[dict]:
    return client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                      "foundryapprovals")["items"]


def _set_phase(engine, namespace: str, run: str, phase: str) -> None:
    from sqlalchemy import update

    from foundry.db.models import Run

    with engine.begin() as conn:
        conn.execute(update(Run).where(Run.namespace == namespace, Run.name == run).values(phase=phase))


# ---------------------------------------------------------------- intake


def test_a_labelled_ticket_whose_webhook_was_lost_gets_its_run_once(control_plane, kube_client, crds, namespace,
                                                                  engine, pg_url):
    with _scene(control_plane, engine, pg_url, namespace) as (linear, backend, alice):
        plain = linear.create_issue(TEAM, "Tidy the docs", READY, actor_id=alice)  # no label: nothing starts
        issue = linear.create_issue(TEAM, "Add a health endpoint", READY, actor_id=alice)
        linear.update_issue(issue, labels=["foundry"], priority=2, actor_id=alice)
        sweeper = _sweeper(linear, backend)

        first = sweeper.run_once()
        assert first.outcome == "swept", first
        runs = _runs(kube_client, namespace)
        assert [r["metadata"]["name"] for r in runs] == [run_name("linear", issue, 1)]
        spec = runs[0]["spec"]
        assert spec["issueKey"] == linear.issue_json(issue)["identifier"]
        assert spec["ticket"]["labels"] == ["foundry"] and spec["ticket"]["priority"] == 2
        assert spec["trigger"]["deliveryId"].startswith(f"linear-sweep/{issue}@")
        assert spec["trigger"]["source"] == "sweep"  # kubectl says the sweep, not a webhook, made it
        assert first.counts.get("intake_created") == 1

        # The next rounds read the same window (the overlap) and change nothing.
        for _ in range(2):
            again = sweeper.run_once()
            assert again.outcome == "swept" and "intake_created" not in again.counts, again
        assert len(_runs(kube_client, namespace)) == 1
        assert claims.active_run(engine, "linear", plain) is None
        swept = state.read(engine, SWEEP_NAME)
        assert swept.holder is None and swept.issues_after is not None and swept.covered_until is not None


def test_pages_are_followed_to_the_end(control_plane, kube_client, crds, namespace, engine, pg_url):
    with _scene(control_plane, engine, pg_url, namespace) as (linear, backend, alice):
        issues = [linear.create_issue(TEAM, f"Endpoint number {n}", READY, labels=["foundry"], actor_id=alice)
                  for n in range(31)]  # four pages of ten
        result = _sweeper(linear, backend).run_once()
        assert result.outcome == "swept" and result.counts["intake_created"] == 31, result
        assert linear.faults.calls["issues"] == 4  # every page, no more
        assert sorted(r["metadata"]["name"] for r in _runs(kube_client, namespace)) == sorted(
            run_name("linear", i, 1) for i in issues)


def test_an_ended_run_whose_ticket_only_moved_does_not_start_again(control_plane, kube_client, crds, namespace,
                                                                 engine, pg_url):
    with _scene(control_plane, engine, pg_url, namespace) as (linear, backend, alice):
        issue = linear.create_issue(TEAM, "Add a health endpoint", READY, labels=["foundry"], actor_id=alice)
        sweeper = _sweeper(linear, backend)
        assert sweeper.run_once().counts.get("intake_created") == 1
        first = run_name("linear", issue, 1)
        _set_phase(engine, namespace, first, "Blocked")
        # Foundry's own move (as at AgentRunning) bumps updatedAt; it is not a new ticket.
        linear._apply_update(issue, {"state_id": next(s.id for s in linear.teams[linear.issues[issue].team_id].states
                                                       if s.name == "In Progress")}, linear.bot)
        moved = sweeper.run_once()
        assert moved.outcome == "swept" and "intake_created" not in moved.counts, moved
        assert len(_runs(kube_client, namespace)) == 1
        # A person edits the description: that is a change, and attempt 2 starts.
        linear.update_issue(issue, description=READY + "- also HEAD\n", actor_id=alice)
        edited = sweeper.run_once()
        assert edited.counts.get("intake_created") == 1, edited
        assert sorted(r["metadata"]["name"] for r in _runs(kube_client, namespace)) == sorted(
            [first, run_name("linear", issue, 2)])


# ---------------------------------------------------------------- decisions


def test_a_lost_approval_comment_is_applied_once(control_plane, kube_client, crds, namespace, engine, pg_url):
    with _scene(control_plane, engine, pg_url, namespace) as (linear, backend, alice):
        issue = linear.create_issue(TEAM, "Add a health endpoint", READY, labels=["foundry"], actor_id=alice)
        sweeper = _sweeper(linear, backend)
        sweeper.run_once()
        run = run_name("linear", issue, 1)
        time.sleep(0.01)  # the comment comes after the run (as it must, to count for it)
        comment = linear.add_comment(issue, "/foundry approve", user_id=alice)
        linear.add_comment(issue, "Looks fine to me", user_id=alice)  # not a command
        result = sweeper.run_once()
        assert result.counts.get("decision_applied") == 1, result
        approvals = _approvals(kube_client, namespace)
        assert len(approvals) == 1
        spec = approvals[0]["spec"]
        assert (spec["run"], spec["decision"], spec["approver"], spec["source"]) == (
            run, "approve", "alice@example.com", "linear")
        assert spec["commentId"] == comment
        for _ in range(2):
            later = sweeper.run_once()
            # Read again (the overlap), but not sent again: this replica remembers what it fed.
            assert later.counts.get("decision_seen") == 1 and "decision_applied" not in later.counts, later
        assert len(_approvals(kube_client, namespace)) == 1


def test_a_comment_older_than_the_run_does_not_count_for_it(control_plane, kube_client, crds, namespace, engine,
                                                            pg_url):
    with _scene(control_plane, engine, pg_url, namespace) as (linear, backend, alice):
        issue = linear.create_issue(TEAM, "Add a health endpoint", READY, actor_id=alice)
        linear.add_comment(issue, "/foundry approve", user_id=alice)  # before any run exists
        time.sleep(0.01)
        linear.update_issue(issue, labels=["foundry"], actor_id=alice)
        sweeper = _sweeper(linear, backend)
        sweeper.run_once()  # creates the run
        result = sweeper.run_once()  # now the run is active: its comments are read
        assert result.outcome == "swept" and "decision_applied" not in result.counts, result
        assert _approvals(kube_client, namespace) == []


# ---------------------------------------------------------------- rate limits


def test_a_rate_limited_round_keeps_its_cursor_and_the_next_one_catches_up(control_plane, kube_client, crds,
                                                                         namespace, engine, pg_url):
    # Three requests per 3 s: the round needs two issue pages and a comments page. The
    # buckets' clock stands still until the first round is refused, so a slow setup
    # (a loaded machine) cannot refill them early; then it follows the wall clock.
    frozen: list[float | None] = [time.time()]
    limits = RateLimits(requests=3, complexity=1_000_000, period=3.0,
                        clock=lambda: frozen[0] if frozen[0] is not None else time.time())
    # A fresh client knows no budget yet, so it is Linear's refusal that stops the round.
    with _scene(control_plane, engine, pg_url, namespace, rate_limits=limits) as (linear, backend, alice):
        for n in range(15):
            linear.create_issue(TEAM, f"Endpoint number {n}", READY, labels=["foundry"], actor_id=alice)
        limits.requests.take(3)  # someone else (the operator) spent the budget
        sweeper = _sweeper(linear, backend, reserve_requests=0, reserve_complexity=0)
        first = sweeper.run_once()
        assert first.outcome == "rate_limited" and first.wait is not None and 0 < first.wait <= 3.5, first
        assert limits.refused == 1
        assert state.read(engine, SWEEP_NAME).issues_after is None  # nothing moved
        frozen[0] = None
        time.sleep(first.wait)
        second = sweeper.run_once()
        assert second.outcome == "swept", second
        assert len(_runs(kube_client, namespace)) == 15


def test_the_round_stops_at_the_budget_reserve_before_linear_refuses(control_plane, kube_client, crds, namespace,
                                                                   engine, pg_url):
    limits = RateLimits(requests=1000, complexity=2_000, period=3600.0)
    with _scene(control_plane, engine, pg_url, namespace, rate_limits=limits) as (linear, backend, alice):
        for n in range(30):
            linear.create_issue(TEAM, f"Endpoint number {n}", READY, labels=["foundry"], actor_id=alice)
        sweeper = _sweeper(linear, backend, reserve_requests=10, reserve_complexity=1_000)
        result = sweeper.run_once()
        # A page costs about 430 points: after two, less than the reserve and one more page is left.
        assert result.outcome == "rate_limited" and "reserve" in (result.detail or ""), result
        assert limits.refused == 0
        assert linear.faults.calls["issues"] == 2
        assert state.read(engine, SWEEP_NAME).issues_after is None  # the cursor waits for a complete round


# ---------------------------------------------------------------- several replicas


@pytest.mark.parametrize("shared_lease", [True, False], ids=["one-lease", "no-lease"])
def test_two_sweepers_at_once_do_not_double_apply(control_plane, kube_client, crds, namespace, engine, pg_url,
                                                  shared_lease):
    """With one lease they take turns; without it (two rows: as if the lease were broken) both read the
    same windows at the same moment, and the commands' own guards still make one of everything."""
    with _scene(control_plane, engine, pg_url, namespace) as (linear, backend, alice):
        issues = [linear.create_issue(TEAM, f"Endpoint number {n}", READY, labels=["foundry"], actor_id=alice)
                  for n in range(12)]
        # Two replicas, each with its own engine, client and backend: separate processes in all but name.
        other = RealBackend.from_settings(pg_url, str(control_plane.kubeconfig), namespace, 4)
        try:
            sweepers = [_sweeper(linear, backend, "replica-a"),
                        _sweeper(linear, other, "replica-b", name=SWEEP_NAME if shared_lease else "other")]
            outcomes: list[str] = []
            for round_ in range(4):
                if round_ == 2:  # the runs are active now: everyone approves
                    time.sleep(0.01)
                    for issue in issues:
                        linear.add_comment(issue, "/foundry approve", user_id=alice)
                barrier = threading.Barrier(2)
                results: list = [None, None]

                def go(i: int) -> None:
                    barrier.wait()
                    results[i] = sweepers[i].run_once()

                threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
                outcomes += [r.outcome for r in results]
            assert set(outcomes) <= {"swept", "skipped"}, outcomes
            if shared_lease:
                assert "skipped" in outcomes  # the lease kept them apart at least once
            else:
                assert outcomes == ["swept"] * 8  # nothing kept them apart
            names = sorted(r["metadata"]["name"] for r in _runs(kube_client, namespace))
            assert names == sorted(run_name("linear", i, 1) for i in issues)
            approvals = _approvals(kube_client, namespace)
            assert sorted(a["spec"]["run"] for a in approvals) == names  # one approval per run
        finally:
            other.close()


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_a_sweeper_whose_lease_ran_out_cannot_move_the_cursor(request, backend):
    from foundry.db.engine import make_engine

    engine = make_engine(request.getfixturevalue("pg_url" if backend == "postgres" else "sqlite_url"))
    request.addfinalizer(engine.dispose)
    create_schema(engine)
    now = datetime.now(timezone.utc)
    ttl = timedelta(seconds=60)
    a = state.acquire(engine, "t", "a", now, ttl)
    assert a is not None and state.acquire(engine, "t", "b", now, ttl) is None
    later = now + timedelta(seconds=61)  # a stalled past its lease
    b = state.acquire(engine, "t", "b", later, ttl)
    assert b is not None
    assert state.advance(engine, b, "b", later, issues_after=later, comments_after=None, covered_until=later)
    assert not state.advance(engine, a, "a", later, issues_after=now, comments_after=None, covered_until=now)
    assert state.read(engine, "t").issues_after == later


def test_lag_metric_reports_the_last_complete_round(control_plane, kube_client, crds, namespace, engine, pg_url):
    registry = CollectorRegistry()
    with _scene(control_plane, engine, pg_url, namespace) as (linear, backend, alice):
        sweeper = _sweeper(linear, backend, registry=registry)
        sweeper.run_once()
        lag = registry.get_sample_value("foundry_linear_sweep_lag_seconds")
        assert lag is not None and lag < 5
        assert registry.get_sample_value("foundry_linear_sweep_rounds_total", {"outcome": "swept"}) == 1
        time.sleep(1.0)
        assert registry.get_sample_value("foundry_linear_sweep_lag_seconds") >= 1.0
