"""No event lost while the bridge is down: real processes end to end.

`foundry bridge` and the operator run as child processes (the production entry
points), against the real API server and PostgreSQL and the Linear stand-in,
whose webhooks retry on Linear's schedule (1 min, 1 h, 6 h) on a fast clock.
The bridge is stopped while a ticket is labelled and stays down through every
retry; it comes back, and its sweep creates the run. It is stopped again while
the approval comment is posted, through every retry; it comes back, and the
approval counts. Each recovery must take at most one sweep period (plus one
round's own time). At the end: exactly one run, one plan comment and one Job.
Then again with two bridges (the sweep's lease between them).
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
from kubernetes import client

from tests.support.bridge_kit import BridgeProcess
from foundry.db import claims
from foundry.domain.naming import run_name
from foundry.kube.crds import GROUP, VERSION
from tests.support.operator_kit import wait_for, wait_phase
from tests.support.operator_process import OperatorProcess, write_config
from tests.support.operator_stack import READY_DESCRIPTION, TEAM, OperatorStack, stack_config

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

SWEEP_SECONDS = 2
# Linear's 1 min / 1 h / 6 h at 1/5000: every retry is over within 6 s.
RETRY_SCALE = 0.0002
# One sweep round's own time on a loaded machine (2 cores, several test suites at once); idle it is
# well under a second.
ROUND_SLACK = 5.0
# The operator's own work after the sweep fed a command (a plan, a Job): bounded, never a resync.
OPERATOR_STEP = 20.0


def _config() -> dict[str, Any]:
    cfg = stack_config()
    # The operator's timer is out of reach: only the sweep (and watched objects) can move anything.
    cfg["timeouts"] = {**cfg["timeouts"], "resync_seconds": 300}
    cfg["linear"] = {**cfg["linear"], "sweep_seconds": SWEEP_SECONDS}
    return cfg


class _Bridges:
    """N `foundry bridge` processes; Linear's webhooks go to the first (a Service would spread them)."""

    def __init__(self, stack: OperatorStack, count: int, env: dict[str, str], workdir: Path) -> None:
        self.stack = stack
        self.processes = [BridgeProcess(env=env, log_path=workdir / f"bridge-{i}.log") for i in range(count)]

    def start(self) -> float:
        """Start them all; when the first answered (epoch seconds): the moment the bridge is back."""
        back = None
        for process in self.processes:
            process.start(timeout=120)  # returns once it listens (slow on a loaded machine)
            back = back or time.time()
        self.stack.linear.set_webhook_url(f"{self.processes[0].url}/webhooks/linear")
        assert back is not None
        return back

    def stop(self) -> None:
        for process in self.processes:
            assert process.stop() == 0, "a bridge did not stop cleanly"

    def logs(self) -> str:
        return "\n".join(p.log_path.read_text(errors="replace")[-3000:] for p in self.processes if p.log_path.exists())


@contextlib.contextmanager
def _stand(control_plane, engine, pg_url: str, namespace: str, tmp_path: Path, bridges_n: int, operators_n: int,
           ) -> Iterator[tuple[OperatorStack, _Bridges]]:
    cfg = _config()
    with OperatorStack.open(control_plane.api_client(), engine, namespace, cfg) as stack:
        assert stack.linear.webhooks is not None
        stack.linear.webhooks.retry_scale = RETRY_SCALE
        config_path = write_config(stack, tmp_path / "foundry.yaml", cfg)
        env = {"KUBECONFIG": str(control_plane.kubeconfig), "FOUNDRY_NAMESPACE": namespace,
               "FOUNDRY_DATABASE_URL": pg_url, "FOUNDRY_CONFIG": str(config_path),
               "FOUNDRY_LINEAR_WEBHOOK_SECRET": stack.linear.webhook_secret,
               "FOUNDRY_GITHUB_WEBHOOK_SECRET": stack.github.webhook_secret,
               "FOUNDRY_LINEAR_API_KEY": stack.linear.api_key, "FOUNDRY_LINEAR_URL": stack.linear.graphql_url}
        bridges = _Bridges(stack, bridges_n, env, tmp_path)
        with contextlib.ExitStack() as operators:
            for i in range(operators_n):
                op = operators.enter_context(OperatorProcess.open(stack, control_plane.kubeconfig, pg_url,
                                                                  tmp_path / f"operator-{i}", cfg))
                op.start()
            try:
                yield stack, bridges
            finally:
                for process in bridges.processes:
                    process.stop()


def _all_retries_failed(stack: OperatorStack, event: str, match: Any) -> Any:
    """The delivery of `event` that `match` picks, once Linear gave up on it (every attempt failed)."""
    def finished() -> Any:
        found = [d for d in stack.linear.deliveries if d.event == event and match(d.payload)]
        return found[0] if found and found[0].finished else None

    delivery = wait_for(finished, timeout=30, what=f"Linear to give up on the {event} delivery")
    assert len(delivery.attempts) == 4 and not delivery.delivered, delivery.attempts  # first try + 3 retries
    return delivery


def _created_at(obj: dict[str, Any]) -> float:
    """An object's creationTimestamp (whole seconds, as the API server keeps it) in epoch seconds, rounded up."""
    return datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00")).timestamp() + 1


def _items(api, namespace: str, plural: str) -> list[dict[str, Any]]:
    return client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]


def _exists(api, namespace: str, name: str) -> bool:
    return any(r["metadata"]["name"] == name for r in _items(api, namespace, "foundryruns"))


@pytest.mark.parametrize("bridges_n,operators_n", [
    (1, 1),
    (2, 1),
    # Two operator processes both reconcile every run (standalone, no leader election):
    # what keeps them from posting a comment twice is the per-run-and-purpose lock
    # around post_once's search-then-post (foundry.db.serial); without it about one run
    # in two got two plan comments here.
    (2, 2),
], ids=["one-bridge-one-operator", "two-bridges-one-operator", "two-bridges-two-operators"])
def test_a_ticket_and_an_approval_made_while_the_bridge_was_down_are_acted_on_within_one_sweep(
        control_plane, kube_client, crds, namespace, engine, pg_url, tmp_path, bridges_n, operators_n):
    t0 = time.monotonic()
    marks: list[tuple[str, float]] = []

    def mark(what: str) -> None:
        marks.append((what, time.monotonic() - t0))

    with _stand(control_plane, engine, pg_url, namespace, tmp_path, bridges_n, operators_n) as (stack, bridges):
        mark("stand")
        bridges.start()
        bridges.stop()

        # 1. The ticket is labelled while no bridge runs, and Linear gives up on it.
        issue = stack.linear.create_issue(TEAM, "Add a health endpoint to the service", READY_DESCRIPTION,
                                          actor_id=stack.alice_id)
        stack.linear.update_issue(issue, labels=["foundry"], actor_id=stack.alice_id)
        _all_retries_failed(stack, "Issue", lambda p: p["data"]["id"] == issue and p["data"]["labels"])
        mark("linear gave up on the label")
        run = run_name("linear", issue, 1)
        assert not _exists(kube_client, namespace, run)

        back = bridges.start()
        wait_for(lambda: _exists(kube_client, namespace, run), timeout=SWEEP_SECONDS + ROUND_SLACK,
                 what=f"the sweep to create {run}\n{bridges.logs()}")
        # When the run was claimed (the database row: the first thing the intake writes).
        intake_took = claims.get_run(engine, namespace, run).created_at.timestamp() - back
        mark("run created")
        waiting = wait_phase(kube_client, namespace, run, "WaitingApproval", timeout=OPERATOR_STEP)
        mark("WaitingApproval")
        assert waiting["spec"]["trigger"]["deliveryId"].startswith("linear-sweep/")

        # 2. The approval is posted while no bridge runs, and Linear gives up on it too.
        bridges.stop()
        comment = stack.linear.add_comment(issue, "/foundry approve", user_id=stack.alice_id)
        _all_retries_failed(stack, "Comment", lambda p: p["data"]["id"] == comment)
        assert _items(kube_client, namespace, "foundryapprovals") == []
        mark("linear gave up on the approval")

        back = bridges.start()
        wait_for(lambda: _items(kube_client, namespace, "foundryapprovals"), timeout=SWEEP_SECONDS + ROUND_SLACK,
                 what=f"the sweep to record the approval\n{bridges.logs()}")
        decision_took = _created_at(_items(kube_client, namespace, "foundryapprovals")[0]) - back
        print(f"\n{bridges_n} bridge(s), {operators_n} operator(s): run created {intake_took:.2f}s and approval "
              f"recorded {decision_took:.2f}s after the bridge came back (sweep period {SWEEP_SECONDS}s)")
        mark("approval recorded")
        wait_phase(kube_client, namespace, run, "AgentRunning", timeout=OPERATOR_STEP)
        mark("AgentRunning")

        # Exactly one of each, whatever the replicas did.
        time.sleep(2 * SWEEP_SECONDS)  # more sweep rounds, by every replica, change nothing
        assert [r["metadata"]["name"] for r in _items(kube_client, namespace, "foundryruns")] == [run]
        approvals = _items(kube_client, namespace, "foundryapprovals")
        assert [(a["spec"]["approver"], a["spec"]["commentId"]) for a in approvals] == [("alice@example.com", comment)]
        assert stack.comment_purposes(issue) == ["approval_request"]
        assert stack.jobs() == [f"{run}-a1"]

    print("timeline: " + ", ".join(f"{what} {at:.1f}s" for what, at in marks))
    assert intake_took <= SWEEP_SECONDS + ROUND_SLACK and decision_took <= SWEEP_SECONDS + ROUND_SLACK
