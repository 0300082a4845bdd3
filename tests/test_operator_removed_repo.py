"""A repository removed from the configuration ends its runs Blocked with the
reason, once; the work queue is told the failure is permanent instead of
retrying it forever (real API server, PostgreSQL and kopf; the Linear and
GitHub stand-ins).
"""

from __future__ import annotations

import time

import pytest

from foundry.config import parse_config
from foundry.db import claims
from foundry.domain.phases import Phase
from foundry.operator.reconcile.loop import reconcile_run
from tests.support.operator_kit import operator_thread, wait_phase
from tests.support.operator_stack import OperatorStack, stack_config

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def _without_app() -> object:
    raw = stack_config()
    raw["repositories"] = [{"name": "web", "github": "acme/web", "keywords": ["frontend"]}]
    return parse_config(raw)


def test_a_run_whose_repository_was_removed_ends_blocked_and_the_queue_gets_a_permanent_error(
        kube_client, crds, namespace, engine):
    from foundry.operator.controller import RunController
    from foundry.operator.errors import CannotReconcile

    with OperatorStack.open(kube_client, engine, namespace) as stack:
        issue_id, run = stack.ticket()
        assert reconcile_run(stack.deps, namespace, run) == Phase.WAITING_APPROVAL
        stack.deps.config = _without_app()  # the operator restarted with a config that lost `app`
        stack.decide(run, "approve", "alice")

        with pytest.raises(CannotReconcile) as failed:  # what a worker gets: it does not retry the run
            RunController(stack.deps).process((namespace, run))
        assert "'app' is no longer in Foundry's configuration" in str(failed.value)

        status = stack.run(run)["status"]
        assert (status["phase"], status["reason"]) == ("Blocked", "RepositoryRemoved")
        assert "configured: web" in status["message"]
        assert stack.comment_purposes(issue_id) == ["approval_request", "blocked"]
        [blocked] = [c for c in stack.linear.comments_json(issue_id) if "Foundry stopped" in c["body"]]
        assert "no longer in Foundry's configuration" in blocked["body"]
        assert stack.jobs(run) == []
        assert claims.get_run(engine, namespace, run).phase == "Blocked"  # the issue's slot is free again

        # Ended: a later reconcile finds a terminal run and does nothing.
        assert reconcile_run(stack.deps, namespace, run) == Phase.BLOCKED
        assert stack.comment_purposes(issue_id) == ["approval_request", "blocked"]


@pytest.mark.allow_operator_errors(r"failed permanently: repository 'app' is no longer")
def test_a_running_operator_stops_retrying_a_run_whose_repository_was_removed(
        kube_client, crds, namespace, engine):
    with OperatorStack.open(kube_client, engine, namespace) as stack, operator_thread(stack.deps, namespace):
        issue_id, run = stack.agent_running()
        stack.deps.config = _without_app()
        blocked = wait_phase(kube_client, namespace, run, "Blocked", timeout=30)
        assert blocked["status"]["reason"] == "RepositoryRemoved"
        # The agent that was at work on the removed repository is stopped.
        assert stack.jobs(run) == []
        assert [(j["attempt"], j["state"]) for j in blocked["status"]["agent"]["jobs"]] == [(1, "cancelled")]
        def errors(kind: str) -> float:
            return stack.deps.metrics.registry.get_sample_value("foundry_reconcile_errors_total", {"kind": kind})

        permanent = errors("permanent")
        time.sleep(3)  # three resync periods: nothing retries it
        assert errors("permanent") == permanent <= 2
        assert errors("unexpected") == 0
    assert stack.comment_purposes(issue_id) == ["approval_request", "blocked"]
