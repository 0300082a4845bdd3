"""A storm under leader election: 64 tickets and their approvals through two bridges and two
operator processes, with the leader killed (kill -9) in the middle of it.

Everything is a real process: two `foundry bridge` (Linear's webhooks alternate between them
and both sweep Linear) and two operators (the production Deps, leader election on with
client-go's defaults) on the real API server and PostgreSQL. The Linear stand-in plays the
people: each ticket is labelled, then approved with a `/foundry approve` comment. At the end,
for every ticket: exactly one run, one plan comment, one approval and one Job.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from foundry.domain.naming import run_name
from foundry.kube.crds import GROUP, VERSION
from tests.support.bridge_kit import BridgeProcess
from tests.support.operator_kit import wait_for
from tests.support.operator_pair import LEASE_DURATION, RETRY_PERIOD, OperatorPair, election_config
from tests.support.operator_process import write_config
from tests.support.operator_stack import READY_DESCRIPTION, TEAM, OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

TICKETS = 64
SWEEP_SECONDS = 2
# 64 runs through two child operators on a machine shared with other suites.
STORM = 240.0


def _items(api: Any, namespace: str, plural: str) -> list[dict[str, Any]]:
    return client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]


def _phases(api: Any, namespace: str) -> dict[str, str | None]:
    return {r["metadata"]["name"]: (r.get("status") or {}).get("phase") for r in _items(api, namespace, "foundryruns")}


def test_64_tickets_and_approvals_through_two_bridges_and_two_operators_with_a_leader_killed(
        control_plane, kube_client, crds, namespace, engine, pg_url, tmp_path):
    cfg = election_config()
    cfg["linear"] = {**cfg["linear"], "sweep_seconds": SWEEP_SECONDS}
    with OperatorStack.open(control_plane.api_client(), engine, namespace, cfg) as stack, \
            OperatorPair.open(stack, control_plane.kubeconfig, pg_url, tmp_path, cfg) as pair:
        config_path = write_config(stack, tmp_path / "bridge.yaml", cfg)
        env = {"KUBECONFIG": str(control_plane.kubeconfig), "FOUNDRY_NAMESPACE": namespace,
               "FOUNDRY_DATABASE_URL": pg_url, "FOUNDRY_CONFIG": str(config_path),
               "FOUNDRY_LINEAR_WEBHOOK_SECRET": stack.linear.webhook_secret,
               "FOUNDRY_GITHUB_WEBHOOK_SECRET": stack.github.webhook_secret,
               "FOUNDRY_LINEAR_API_KEY": stack.linear.api_key, "FOUNDRY_LINEAR_URL": stack.linear.graphql_url}
        bridges = [BridgeProcess(env=env, log_path=tmp_path / f"bridge-{i}.log") for i in range(2)]
        try:
            for bridge in bridges:
                bridge.start(timeout=120)
            leader = pair.start_leader_then_standby()

            # The intakes: each label change goes to the bridge after the last one.
            issues = []
            for i in range(TICKETS):
                stack.linear.set_webhook_url(f"{bridges[i % 2].url}/webhooks/linear")
                issue = stack.linear.create_issue(TEAM, f"Add a health endpoint, part {i}", READY_DESCRIPTION,
                                                  actor_id=stack.alice_id)
                stack.linear.update_issue(issue, labels=["foundry"], actor_id=stack.alice_id)
                issues.append(issue)
                if i == TICKETS // 2:
                    killed_at = pair.kill(leader)  # the leader dies in the middle of the storm
            runs = {issue: run_name("linear", issue, 1) for issue in issues}

            def waiting() -> bool:
                phases = _phases(kube_client, namespace)
                return all(phases.get(run) == "WaitingApproval" for run in runs.values())

            wait_for(waiting, timeout=STORM, interval=1.0, what="every run to wait for approval")
            took = pair.wait_holder(pair.other(leader), after=killed_at - 1) - killed_at
            assert took <= LEASE_DURATION + RETRY_PERIOD + 1.5, f"takeover took {took:.1f}s"
            leader.start()  # back, as the standby

            # The approvals, by Linear comment, alternating between the bridges too.
            for i, issue in enumerate(issues):
                stack.linear.set_webhook_url(f"{bridges[i % 2].url}/webhooks/linear")
                stack.linear.add_comment(issue, "/foundry approve", user_id=stack.alice_id)

            def running() -> bool:
                phases = _phases(kube_client, namespace)
                return all(phases.get(run) == "AgentRunning" for run in runs.values())

            wait_for(running, timeout=STORM, interval=1.0, what="every run to start its agent")
            time.sleep(2 * SWEEP_SECONDS)  # more sweep rounds and resyncs change nothing

            assert sorted(_phases(kube_client, namespace)) == sorted(runs.values())
            approvals = _items(kube_client, namespace, "foundryapprovals")
            assert sorted(a["spec"]["run"] for a in approvals) == sorted(runs.values())
            assert stack.jobs() == sorted(f"{run}-a1" for run in runs.values())
            twice = {issue: stack.comment_purposes(issue) for issue in issues
                     if stack.comment_purposes(issue) != ["approval_request"]}
            assert not twice, twice
            print(f"\n{TICKETS} tickets, 2 bridges, 2 operators, leader killed mid-storm: takeover {took:.2f}s")
        finally:
            for bridge in bridges:
                bridge.stop()
