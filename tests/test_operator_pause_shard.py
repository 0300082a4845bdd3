"""The pause switch, shards, and runs left by the kopf-handler operator (real kopf watches,
the work queue, the real API server and PostgreSQL; the Linear and GitHub stand-ins).

- a `foundry.dev/paused=true` label makes the operator leave a run alone, with a
  Paused condition saying so: an approval meanwhile starts nothing; taking the
  label off resumes the run at once;
- the operator-wide pause does the same for every run, until the operator is
  started without it;
- two shards split one namespace's runs by a hash of the name: each operator
  acts on its own and never on the other's;
- a run as the previous operator left it (kopf's finalizer and annotations)
  still reconciles, and its deletion still runs the finalizer.
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from foundry.db import claims
from foundry.operator.kubeio import GROUP, RUNS, VERSION
from foundry.operator.reconcile.loop import reconcile_run
from foundry.operator.runview import FINALIZER, PAUSED_LABEL
from foundry.operator.sharding import shard_of
from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.operator_stack import OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def _patch(stack: OperatorStack, run: str, meta: dict) -> None:
    client.CustomObjectsApi(stack.api).patch_namespaced_custom_object(
        GROUP, VERSION, stack.namespace, RUNS, run, {"metadata": meta})


def _reopen_clients(stack: OperatorStack) -> None:
    """A stopped operator closes the Deps' service clients; the next one in this test gets new ones."""
    from foundry.connectors.github import GitHubClient
    from foundry.connectors.linear import LinearClient
    from foundry.connectors.retry import RetryPolicy

    retry = RetryPolicy(max_attempts=2, base_delay=0.05, max_delay=0.2)
    stack.deps.linear = LinearClient(stack.linear.api_key, url=stack.linear.graphql_url, retry=retry)
    stack.deps.github = GitHubClient(stack.github.token, base_url=stack.github.url, retry=retry)


def _paused(stack: OperatorStack, run: str) -> dict | None:
    for cond in (stack.run(run).get("status") or {}).get("conditions") or []:
        if cond["type"] == "Paused":
            return cond
    return None


def test_a_paused_run_is_left_alone_until_the_label_goes(kube_client, crds, namespace, engine):
    with OperatorStack.open(kube_client, engine, namespace) as stack, operator_thread(stack.deps, namespace):
        issue_id, run = stack.ticket()
        wait_phase(kube_client, namespace, run, "WaitingApproval")
        _patch(stack, run, {"labels": {PAUSED_LABEL: "true"}})
        cond = wait_for(lambda: (c := _paused(stack, run)) and c["status"] == "True" and c, timeout=10,
                        what="the Paused condition")
        assert cond["reason"] == "PausedByLabel" and PAUSED_LABEL in cond["message"]

        stack.decide(run, "approve", "alice")
        time.sleep(3)  # an approval would dispatch within a second; paused, nothing happens
        assert stack.phase(run) == "WaitingApproval"
        assert stack.jobs(run) == []

        resumed_at = time.monotonic()
        _patch(stack, run, {"labels": {PAUSED_LABEL: None}})
        wait_phase(kube_client, namespace, run, "AgentRunning", timeout=10)
        took = time.monotonic() - resumed_at
        assert took < 5, f"the run took {took:.1f}s to resume"
        cond = _paused(stack, run)
        assert (cond["status"], cond["reason"]) == ("False", "Resumed")
        assert stack.jobs(run) == [f"{run}-a1"]
    assert stack.comment_purposes(issue_id) == ["approval_request"]


def test_the_operator_wide_pause_holds_every_run_until_started_without_it(kube_client, crds, namespace, engine,
                                                                          monkeypatch):
    with OperatorStack.open(kube_client, engine, namespace) as stack:
        monkeypatch.setenv("FOUNDRY_OPERATOR_PAUSED", "true")
        with operator_thread(stack.deps, namespace):
            issue_id, run = stack.ticket()
            cond = wait_for(lambda: (c := _paused(stack, run)) and c["status"] == "True" and c, timeout=10,
                            what="the Paused condition")
            assert cond["reason"] == "PausedByOperator"
            time.sleep(2)
            body = stack.run(run)
            assert (body.get("status") or {}).get("phase") is None  # not even claimed
            assert set(body.get("status") or {}) == {"conditions"}, body.get("status")  # only Paused written
            assert stack.comment_purposes(issue_id) == []
        monkeypatch.delenv("FOUNDRY_OPERATOR_PAUSED")
        _reopen_clients(stack)
        with operator_thread(stack.deps, namespace):
            wait_phase(kube_client, namespace, run, "WaitingApproval", timeout=20)
            cond = _paused(stack, run)
            assert (cond["status"], cond["reason"]) == ("False", "Resumed")
            assert stack.run(run)["metadata"]["finalizers"] == [FINALIZER]  # the one it was made with, not doubled
    assert stack.comment_purposes(issue_id) == ["approval_request"]


def test_two_shards_split_the_runs_of_one_namespace(kube_client, crds, namespace, engine, monkeypatch):
    with OperatorStack.open(kube_client, engine, namespace) as stack:
        runs: dict[int, list[str]] = {0: [], 1: []}
        while len(runs[0]) < 2 or len(runs[1]) < 2:
            _, run = stack.ticket()
            runs[shard_of(run, 2)].append(run)
        monkeypatch.setenv("FOUNDRY_SHARD_COUNT", "2")
        for index, other in ((1, 0), (0, 1)):
            monkeypatch.setenv("FOUNDRY_SHARD_INDEX", str(index))
            _reopen_clients(stack)
            with operator_thread(stack.deps, namespace):
                for run in runs[index]:
                    wait_phase(kube_client, namespace, run, "WaitingApproval", timeout=30)
                if index == 1:  # the first shard ran alone: the other's runs were not touched
                    time.sleep(1)
                    for run in runs[other]:
                        body = stack.run(run)
                        assert (body.get("status") or {}).get("phase") is None, run
                        assert stack.untouched(run), run
    for run in runs[0] + runs[1]:
        assert stack.phase(run) == "WaitingApproval"


def test_a_run_left_by_the_kopf_handler_operator_still_reconciles_and_finalizes(kube_client, crds, namespace,
                                                                                engine):
    with OperatorStack.open(kube_client, engine, namespace) as stack:
        issue_id, run = stack.ticket()
        reconcile_run(stack.deps, namespace, run)  # planned, as the old operator did it
        body = stack.run(run)
        assert body["status"]["phase"] == "WaitingApproval"
        # What kopf's handlers left on every run: the finalizer (same name), its marker, the diff
        # base, and the progress of the handlers it ran.
        _patch(stack, run, {"finalizers": [FINALIZER], "annotations": {
            "kopf.foundry.dev/kopf-managed": "yes",
            "kopf.foundry.dev/last-handled-configuration": '{"spec":{},"metadata":{"labels":{}}}',
            "kopf.foundry.dev/reconcile": '{"started":"2026-12-01T10:00:00.000000+00:00","success":true}',
        }})
        with operator_thread(stack.deps, namespace):
            stack.decide(run, "approve", "alice")
            wait_phase(kube_client, namespace, run, "AgentRunning", timeout=20)
            assert stack.jobs(run) == [f"{run}-a1"]
            client.CustomObjectsApi(stack.api).delete_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, run)

            def gone() -> bool:
                try:
                    stack.run(run)
                    return False
                except client.ApiException as err:
                    return err.status == 404

            wait_for(gone, timeout=20, what="the run deleted once its finalizer ran")
        row = claims.get_run(engine, namespace, run)
        assert row.phase == "Stopped"  # the finalizer closed the row: the issue's slot is free
    assert stack.comment_purposes(issue_id) == ["approval_request"]
